"""OBER's extraction rules: negation / uncertainty patterns and scopes, normal-anatomy
statements, meta-entity normalisation, text handling."""

from __future__ import annotations

import math

import pytest

from workbench.ober import extract, highlight_html, label_reports
from workbench.ober.text import lower_text, sections, split_sentences


def assertions(text: str) -> dict:
    """concept -> assertion of its first mention."""
    out: dict = {}
    for e in extract(text):
        out.setdefault(e.concept, e.assertion)
    return out


@pytest.mark.parametrize("text", [
    "No pneumothorax.",
    "There is no pneumothorax.",
    "Without pneumothorax.",
    "The lungs are free of pneumothorax.",
    "Negative for pneumothorax.",
    "No evidence of pneumothorax.",
    "Pneumothorax has resolved.",
    "Pneumothorax is not seen.",
    "Pneumothorax was not detected.",
    "The previously seen pneumothorax, which was small, has disappeared.",
])
def test_negated_finding_is_absent(text):
    assert assertions(text)["pneumothorax"] == "absent"


@pytest.mark.parametrize("text, hedge", [
    ("Findings may represent pneumonia.", "possible"),
    ("Possible pneumonia.", "possible"),
    ("Pneumonia cannot be excluded.", "possible"),
    ("Opacity suggestive of pneumonia.", "possible"),
    ("Atelectasis versus pneumonia.", "alternative"),
    ("Right basilar opacity, probably pneumonia.", "probable"),
    ("Nodular opacity (pneumonia?)", "possible"),
])
def test_hedged_finding_is_uncertain_with_its_hedge_kind(text, hedge):
    ents = [e for e in extract(text) if e.concept == "pneumonia"]
    assert ents and ents[0].assertion == "uncertain"
    assert ents[0].hedge == hedge


def test_versus_makes_both_alternatives_uncertain():
    a = assertions("Left basilar atelectasis versus pneumonia.")
    assert a["atelectasis"] == "uncertain" and a["pneumonia"] == "uncertain"


def test_negation_covers_coordinated_findings():
    a = assertions("No focal consolidation, pleural effusion, or pneumothorax.")
    assert a == {"consolidation": "absent", "pleural_effusion": "absent", "pneumothorax": "absent"}


@pytest.mark.parametrize("text", [
    "No pneumothorax but there is a small effusion.",
    "No pneumothorax; small effusion.",
    "No pneumothorax. Small effusion.",
    "No pneumothorax, however a small effusion is present.",
    "No pneumothorax although small effusion persists.",
])
def test_negation_scope_ends_at_terminators_and_sentence_ends(text):
    a = assertions(text)
    assert a["pneumothorax"] == "absent"
    assert a["effusion"] == "present"


def test_pseudo_trigger_does_not_negate():
    assert assertions("No change in the moderate cardiomegaly.")["cardiomegaly"] == "present"


@pytest.mark.parametrize("text", [
    "A 3 mm nodule, which was not observed in the previous examination, is seen in the left lung.",
    "A 3 mm nodule is seen in the left lung and was not detected in the prior examination.",
])
def test_finding_not_seen_on_the_previous_study_is_new_not_absent(text):
    assert assertions(text)["nodule"] == "present"


@pytest.mark.parametrize("text", [
    "As far as can be observed: the heart is larger than normal.",
    "The mediastinum could not be evaluated optimally due to the lack of contrast, and the CTR increased.",
])
def test_ct_reading_limits_do_not_hedge_or_negate_findings(text):
    assert assertions(text)["cardiomegaly"] == "present"


def test_uncertainty_before_a_finding_does_not_reach_back():
    a = assertions("Minimal patchy airspace disease within the lingula, may reflect atelectasis.")
    assert a["lung_opacity"] == "present" and a["atelectasis"] == "uncertain"


@pytest.mark.parametrize("text", [
    "Heart size is normal.",
    "Normal cardiomediastinal silhouette.",
    "The heart is normal in size.",
    "The cardiac silhouette is within normal limits.",
    "The heart is not enlarged.",
])
def test_normal_anatomy_statement_is_not_a_finding(text):
    labels = label_reports([text], "chestxray14")
    assert labels.loc[0, "Cardiomegaly"] == 0
    assert labels.loc[0, "normal"] == 1


@pytest.mark.parametrize("text", ["The heart is enlarged.", "Enlarged cardiac silhouette.",
                                  "The cardiac silhouette is mildly enlarged.", "Cardiomegaly."])
def test_enlarged_heart_statement_is_cardiomegaly(text):
    labels = label_reports([text], "chestxray14")
    assert labels.loc[0, "Cardiomegaly"] == 1
    assert labels.loc[0, "normal"] == 0


@pytest.mark.parametrize("text, concepts", [
    ("Dilatation of the aorta, atheroma plaques in the coronary arteries.", {"aorta_abnormal", "coronary_calcification"}),
    ("Calcific plaques are observed in the aortic arch and coronary arteries.",
     {"arterial_wall_calcification", "coronary_calcification"}),
    ("Atherosclerotic changes.", {"calcification_unspecified"}),
])
def test_qualifier_tied_by_a_preposition_goes_to_the_anatomy_after_it(text, concepts):
    assert {e.concept for e in extract(text)} == concepts


@pytest.mark.parametrize("text, severity", [
    ("Trace pleural effusion.", "mild"), ("Small pleural effusion.", "mild"), ("Mild cardiomegaly.", "mild"),
    ("Moderate pleural effusion.", "moderate"), ("Large pleural effusion.", "severe"),
    ("Severe cardiomegaly.", "severe"),
])
def test_severity_is_normalised(text, severity):
    assert extract(text)[0].severity == severity


@pytest.mark.parametrize("text, laterality, zone, lobe", [
    ("Right lower lobe pneumonia.", "right", ["lower"], ["right lower lobe"]),
    ("Bibasilar atelectasis.", "bilateral", ["basilar"], []),
    ("Atelectasis in the lingula.", "left", ["middle"], ["lingula"]),
    ("Small effusions on the right and on the left.", "bilateral", [], []),
    ("Biapical pleural thickening.", "bilateral", ["apical"], []),
])
def test_location_is_normalised(text, laterality, zone, lobe):
    e = extract(text)[0]
    assert (e.laterality, e.zone, e.lobe) == (laterality, zone, lobe)


@pytest.mark.parametrize("text, change", [
    ("New right pleural effusion.", "new"), ("Increased left pleural effusion.", "increased"),
    ("Decreased left pleural effusion.", "decreased"), ("Stable cardiomegaly.", "stable"),
    ("Cardiomegaly, unchanged.", "stable"),
])
def test_change_is_normalised(text, change):
    e = [e for e in extract(text) if e.concept in ("pleural_effusion", "cardiomegaly")][0]
    assert e.change == change


def test_modifier_goes_to_the_finding_it_precedes():
    ents = {e.concept: e for e in extract("Small right effusion and left basilar atelectasis.")}
    assert ents["effusion"].laterality == "right"
    assert ents["atelectasis"].laterality == "left" and ents["atelectasis"].zone == ["basilar"]


def test_matching_ignores_case_whitespace_and_hyphens():
    a = {e.concept for e in extract("PLEURAL\n   EFFUSION. Air-space disease. AIRSPACE disease.")}
    assert a == {"pleural_effusion", "lung_opacity"}


@pytest.mark.parametrize("text", ["Plate-like atelectasis.", "Plate like atelectasis.", "Platelike atelectasis."])
def test_a_phrase_listed_joined_and_spaced_matches_every_spelling(text):
    # "{platelike,plate like} atelectasis" share one entry; "plate" alone is a device.
    assert [(e.concept, e.text) for e in extract(text)] == [("atelectasis", text[:-1])]


def test_deid_tokens_do_not_break_sentences_or_spans():
    text = "XXXX basilar atelectasis. The XXXX are normal. Normal chest x-XXXX."
    ents = extract(text)
    assert [(e.concept, e.assertion, text[e.start:e.end]) for e in ents] == [
        ("atelectasis", "present", "atelectasis")]


def test_history_sections_are_not_read():
    text = "INDICATION: history of pneumonia.\nFINDINGS: No pneumothorax.\nIMPRESSION: Normal."
    assert {e.concept for e in extract(text)} == {"pneumothorax"}
    assert [name for name, _, _ in sections(text)] == ["indication", "findings", "impression"]


def test_history_header_without_findings_header_covers_its_sentence_only():
    text = "Comparison: CT dated 25.12.2019. Trachea is open. Suture materials in the sternum."
    assert [e.concept for e in extract(text)] == ["surgical_material"]
    assert [e.concept for e in extract("History: pneumonia.\nNo effusion.")] == ["effusion"]


def test_sentence_split_keeps_decimals_and_needs_no_download():
    text = "Nodule measures 1.5 cm. No effusion!  Stable"
    assert [text[s:e] for s, e in split_sentences(text)] == ["Nodule measures 1.5 cm.", "No effusion!", "Stable"]


def test_lower_text_keeps_spans_for_unicode():
    text = "İ pleural effusion"  # 'İ'.lower() is two characters long
    assert len(lower_text(text)) == len(text)
    e = extract(text)[0]
    assert text[e.start:e.end] == "pleural effusion"


def test_non_text_gives_no_entities_and_nan_labels():
    assert extract(float("nan")) == [] and extract(None) == [] and extract("") == []
    labels = label_reports([float("nan")], "chestxray14")
    assert math.isnan(labels.loc[0, "Effusion"])


def test_highlight_html_colours_by_assertion_and_escapes_text():
    text = "No effusion. Mild <b>cardiomegaly</b>."
    html = highlight_html(text, extract(text))
    assert 'class="ober-absent"' in html and 'class="ober-present"' in html
    assert "&lt;b&gt;" in html and "severity: mild" in html


def test_unknown_label_set_names_the_known_ones():
    with pytest.raises(KeyError, match="chestxray14"):
        label_reports(["No effusion."], "no_such_set")


# One clause (no sentence end, no terminator) with triggers before and after, anatomy +
# qualifier statements, a tied qualifier, modifiers and a relocated site.
_LONG_CLAUSE_UNIT = ("no pleural effusion heart size is normal small left effusion possible pneumonia stable 6 mm "
                     "nodule in the left upper lobe calcified plaques in the coronary arteries pneumothorax has resolved ")


def _ober_lines(text: str) -> tuple:
    """(Python lines executed inside workbench/ober, mentions) for one report: a measure of
    work that, unlike a clock, does not depend on the machine or its load."""
    import sys
    from pathlib import Path

    import workbench.ober
    from workbench.ober.extractor import analyse

    ober_dir = str(Path(workbench.ober.__file__).parent)
    count = 0

    def line(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return line

    def call(frame, event, arg):
        return line if frame.f_code.co_filename.startswith(ober_dir) else None

    analyse("warm up")  # the ontology loads outside the count
    previous = sys.gettrace()
    sys.settrace(call)
    try:
        mentions = analyse(text)
    finally:
        sys.settrace(previous)
    return count, len(mentions)


@pytest.mark.parametrize("unit", [_LONG_CLAUSE_UNIT, "pneumonia "])
def test_work_grows_linearly_with_a_clause_length(unit):
    reps = 1400 // len(unit.split())
    single, mentions = _ober_lines(unit * reps)
    double, mentions_double = _ober_lines(unit * (2 * reps))
    assert mentions_double == 2 * mentions > 0
    assert double <= 2.2 * single, (single, double)  # quadratic work (issue 14) gave ~3.8x
