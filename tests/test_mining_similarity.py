"""MedTrim's meta-entity similarity: hand-computed scores, symmetry, and agreement of the dense,
slot-based (hot path) and pure-Python reference implementations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.mining.encode import FindingsFormatError, encode_findings, pack_slots
from workbench.mining.reference import reference_score, reference_study
from workbench.mining.similarity import ScoreWeights, pairwise_scores, score_tables, slot_pair_scores
from workbench.mining.synthetic import synthetic_findings


def finding(assertion="present", severity=(), location=()):
    return {"assertion": assertion, "severity": list(severity), "location": list(location), "source": "test"}


EFFUSION_MILD_LEFT = {"Effusion": finding(severity=["mild"], location=["left"])}
EFFUSION_AND_EDEMA = {"Effusion": finding(severity=["mild"], location=["left"]), "Edema": finding()}


def scores_of(studies, scoring="union", uncertain_weight=0.5, weights=ScoreWeights()):
    """Dense pairwise scores of hand-built studies (dicts), as a numpy matrix."""
    enc = encode_findings([json.dumps(s) for s in studies], uncertain_weight=uncertain_weight)
    return pairwise_scores(enc, scoring=scoring, weights=weights).numpy()


@pytest.mark.parametrize("scoring", ["union", "seed"])
def test_two_studies_without_findings_score_one(scoring):
    s = scores_of([{}, {"Effusion": finding("absent")}, EFFUSION_MILD_LEFT], scoring)
    assert s[0, 1] == pytest.approx(1.0)  # an absent finding does not count
    assert s[0, 2] == pytest.approx(0.0) and s[2, 0] == pytest.approx(0.0)


def test_iou_of_two_empty_attribute_sets_is_one():
    # Same finding, neither study gives severity or location: both agreements are 1.
    s = scores_of([{"Edema": finding()}, {"Edema": finding()}])
    assert s[0, 1] == pytest.approx(1.0)


def test_union_score_is_symmetric_and_seed_score_is_anchor_normalised():
    # J = 1/2; the shared Effusion agrees fully on severity and location.
    union = scores_of([EFFUSION_MILD_LEFT, EFFUSION_AND_EDEMA], "union")
    assert union[0, 1] == pytest.approx(0.85 * 0.5 + 0.10 * 1 / 2 + 0.05 * 1 / 2)  # 0.5
    assert union[1, 0] == pytest.approx(union[0, 1])
    seed = scores_of([EFFUSION_MILD_LEFT, EFFUSION_AND_EDEMA], "seed")
    assert seed[0, 1] == pytest.approx(0.85 * 0.5 + 0.10 * 1 / 1 + 0.05 * 1 / 1)  # 0.575: divided by |anchor| = 1
    assert seed[1, 0] == pytest.approx(0.5)  # divided by |anchor| = 2


def test_union_score_is_one_only_for_identical_entity_sets():
    a = EFFUSION_MILD_LEFT
    other_severity = {"Effusion": finding(severity=["severe"], location=["left"])}
    s = scores_of([a, a, other_severity, EFFUSION_AND_EDEMA])
    assert s[0, 1] == pytest.approx(1.0)
    assert s[0, 2] < 1.0 and s[0, 3] < 1.0


def test_severity_and_location_agreement_are_set_ious():
    a = {"Effusion": finding(severity=["mild", "moderate"], location=["left", "lower"])}
    b = {"Effusion": finding(severity=["moderate"], location=["left", "upper"])}
    assert scores_of([a, b])[0, 1] == pytest.approx(0.85 + 0.10 * 1 / 2 + 0.05 * 1 / 3)


def test_uncertain_findings_count_with_their_weight():
    present, uncertain = {"Effusion": finding()}, {"Effusion": finding("uncertain")}
    # Weighted Jaccard min/max = 0.5 / 1; the shared finding's attributes agree.
    assert scores_of([present, uncertain])[0, 1] == pytest.approx(0.85 * 0.5 + 0.10 + 0.05)
    assert scores_of([present, uncertain], uncertain_weight=1.0)[0, 1] == pytest.approx(1.0)


def test_term_weights_are_parameters():
    a = {"Effusion": finding(severity=["mild"]), "Edema": finding()}
    b = {"Effusion": finding(severity=["severe"])}
    only_findings = scores_of([a, b], weights=ScoreWeights(1.0, 0.0, 0.0))
    only_severity = scores_of([a, b], weights=ScoreWeights(0.0, 1.0, 0.0))
    assert only_findings[0, 1] == pytest.approx(0.5)
    assert only_severity[0, 1] == pytest.approx(0.0)


@pytest.mark.parametrize("scoring,uncertain_weight", [("union", 0.5), ("seed", 0.5), ("union", 0.3), ("seed", 1.0)])
def test_dense_slot_and_reference_scores_agree_on_random_studies(scoring, uncertain_weight):
    findings = synthetic_findings(70, seed=3)
    enc = encode_findings(findings, uncertain_weight=uncertain_weight)
    dense = pairwise_scores(enc, scoring=scoring).numpy()
    studies = [reference_study(f, uncertain_weight) for f in findings]
    reference = np.array([[reference_score(a, b, scoring) for b in studies] for a in studies])
    np.testing.assert_allclose(dense, reference, rtol=0, atol=1e-12)

    codes = pack_slots(enc)
    members = torch.arange(len(findings)).view(7, 10)
    for max_sets in (2048, 0):  # location IoU from the table, then from bitmasks
        tables = score_tables(codes, uncertain_weight, max_location_sets=max_sets)
        assert (tables.location_iou is None) == (max_sets == 0)
        slot = slot_pair_scores(codes, tables, members, members, scoring)  # every member as anchor
        expected = np.stack([reference[np.ix_(row, row)] for row in members.numpy()])
        np.testing.assert_allclose(slot.numpy(), expected, rtol=0, atol=1e-12)
    assert np.abs(dense - dense.T).max() < 1e-12 if scoring == "union" else np.abs(dense - dense.T).max() > 0.01


def test_bad_findings_value_names_the_study_and_the_fix():
    with pytest.raises(FindingsFormatError, match=r"s2.*Effusion.*object"):
        encode_findings(['{}', '{"Effusion": "yes"}'], study_ids=["s1", "s2"])
    with pytest.raises(FindingsFormatError, match=r"s1.*assertion 'maybe'"):
        encode_findings(['{"Effusion": {"assertion": "maybe"}}'], study_ids=["s1"])
    with pytest.raises(FindingsFormatError, match="JSON"):
        encode_findings(["{not json"], study_ids=["s1"])
