"""Report writer of the phantom generator, with its PRIVATE phrase bank.

The phrase bank below is for the generator alone: the report labeler (OBER) must never import
this module, or its score on the demo data would be circular (it would recognise the very
phrases it is graded on). Only the ground truth leaves this module, as data.

A report is assembled from sentences, each knowing which demo labels it asserts (present,
absent or uncertain, with severity and location) and which anatomical regions it describes,
so the ground truth and the region-sentence pairs (for ASG) are exact by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from workbench.data.phantom.sampling import FindingSpec

# ============================================================================ phrase bank (private)
# Severity words per finding ("sev" adjective, "sevly" adverb).
_SEV_ADJ: Dict[str, Dict[str, List[str]]] = {
    "default": {"mild": ["mild"], "moderate": ["moderate"], "severe": ["severe"]},
    "Cardiomegaly": {"mild": ["mild"], "moderate": ["moderate"], "severe": ["severe", "marked"]},
    "Effusion": {"mild": ["small", "trace", "tiny"], "moderate": ["moderate", "moderate-sized"], "severe": ["large"]},
    "Pneumothorax": {"mild": ["small", "tiny"], "moderate": ["moderate", "moderate-sized"], "severe": ["large"]},
    "Consolidation": {"mild": ["mild", "small", "minimal"], "moderate": ["moderate"], "severe": ["extensive", "large"]},
    "Lung_Opacity": {"mild": ["mild", "faint", "subtle"], "moderate": ["moderate"], "severe": ["extensive", "dense"]},
    "Atelectasis": {"mild": ["mild", "minimal", "minor"], "moderate": ["moderate"], "severe": ["severe", "extensive"]},
    "Edema": {"mild": ["mild"], "moderate": ["moderate"], "severe": ["severe", "marked"]},
    "Emphysema": {"mild": ["mild"], "moderate": ["moderate"], "severe": ["severe", "advanced"]},
}
_SEV_ADV = {"mild": ["mildly"], "moderate": ["moderately"], "severe": ["severely", "markedly"]}

_SIDE_WORDS = {"right": ["right", "right-sided"], "left": ["left", "left-sided"], "bilateral": ["bilateral"]}

# Location phrases of a lung zone (nouns: "in the {loc}") and their adjectival forms.
_ZONE_LOC: Dict[Tuple[str, str], List[str]] = {
    ("right", "upper"): ["right upper lobe", "right upper zone", "right upper lung"],
    ("right", "middle"): ["right middle lobe", "right mid lung", "right mid zone", "right perihilar region"],
    ("right", "lower"): ["right lower lobe", "right lung base", "right base", "right lower zone"],
    ("left", "upper"): ["left upper lobe", "left upper zone", "left upper lung"],
    ("left", "middle"): ["lingula", "left mid lung", "left mid zone", "left perihilar region"],
    ("left", "lower"): ["left lower lobe", "left lung base", "left base", "left lower zone"],
    ("bilateral", "upper"): ["upper lobes bilaterally", "bilateral upper lobes", "both upper zones"],
    ("bilateral", "middle"): ["bilateral mid lungs", "both mid zones", "bilateral perihilar regions"],
    ("bilateral", "lower"): ["lung bases bilaterally", "bilateral lower lobes", "both lung bases"],
}
_ZONE_ADJ: Dict[Tuple[str, str], List[str]] = {
    ("right", "upper"): ["right upper lobe", "right upper zone"],
    ("right", "middle"): ["right middle lobe", "right mid lung"],
    ("right", "lower"): ["right lower lobe", "right basilar", "right base"],
    ("left", "upper"): ["left upper lobe", "left upper zone"],
    ("left", "middle"): ["lingular", "left mid lung"],
    ("left", "lower"): ["left lower lobe", "left basilar", "left base"],
    ("bilateral", "upper"): ["bilateral upper lobe"],
    ("bilateral", "middle"): ["bilateral perihilar"],
    ("bilateral", "lower"): ["bibasilar", "bilateral lower lobe"],
}
_BASE_LOC = {"right": ["right lung base", "right base", "right basilar region", "right lower lung"],
             "left": ["left lung base", "left base", "left basilar region", "left lower lung"],
             "bilateral": ["lung bases", "both lung bases", "bilateral bases"]}
_LOBE = {("right", "upper"): "right upper lobe", ("right", "middle"): "right middle lobe",
         ("right", "lower"): "right lower lobe", ("left", "upper"): "left upper lobe",
         ("left", "middle"): "lingula", ("left", "lower"): "left lower lobe"}

# Sentences stating a finding that IS drawn. Placeholders: {sev} {sevly} {side} {loc} {locadj}
# {size} {a} ("a " or "" by number) {s} (plural ending) {is} ("is"/"are").
_PRESENT: Dict[str, List[str]] = {
    "Cardiomegaly": [
        "The heart is {sevly} enlarged.",
        "{sev} cardiomegaly.",
        "There is {sev} enlargement of the cardiac silhouette.",
        "{sev} cardiomegaly is again noted.",
        "The cardiac silhouette is {sevly} enlarged, consistent with cardiomegaly.",
        "Heart size is {sevly} enlarged.",
    ],
    "Effusion": [
        "{sev} {side} pleural effusion{s}.",
        "There {is} {a}{sev} {side} pleural effusion{s}.",
        "{sev} {side} pleural effusion{s} {is} present.",
        "Blunting of the {side} costophrenic angle{s} consistent with {a}{sev} pleural effusion{s}.",
        "Layering {sev} {side} pleural effusion{s}.",
        "Interval development of {a}{sev} {side} pleural effusion{s}.",
    ],
    "Pneumothorax": [
        "{sev} {side} apical pneumothorax.",
        "There is a {sev} {side} pneumothorax.",
        "A {sev} {side} apical pneumothorax is identified, with a visible pleural line.",
        "A {sev} pneumothorax is seen at the {side} apex.",
        "Interval development of a {sev} {side} pneumothorax.",
    ],
    "Consolidation": [
        "{sev} consolidation in the {loc}.",
        "There is {sev} consolidation in the {loc}.",
        "{sev} {locadj} consolidation.",
        "Airspace consolidation is present in the {loc}, {sev} in extent.",
        "Focal {sev} consolidation in the {loc} with air bronchograms.",
        "New {sev} consolidation involving the {loc}.",
    ],
    "Lung_Opacity": [
        "{sev} opacity in the {loc}.",
        "There is {a}{sev} opacity in the {loc}.",
        "{sev} hazy opacification of the {loc}.",
        "Ill-defined {sev} opacity projects over the {loc}.",
        "{sev} airspace opacity at the {loc}.",
        "Patchy {sev} opacities in the {loc}.",
    ],
    "Nodule": [
        "A {size} nodule is seen in the {loc}.",
        "There is a {size} rounded nodule in the {loc}.",
        "{size} pulmonary nodule in the {loc}.",
        "A well-circumscribed {size} nodule projects over the {loc}.",
        "Small nodule in the {loc}, measuring {size}.",
    ],
    "Mass": [
        "A {size} mass is seen in the {loc}.",
        "There is a {size} mass in the {loc}.",
        "A lobulated {size} mass projects over the {loc}.",
        "{size} mass in the {loc}, for which chest CT is recommended.",
        "A {locadj} mass measuring {size} is present.",
    ],
    "Atelectasis": [
        "{sev} atelectasis at the {loc}.",
        "{sev} plate-like atelectasis at the {loc}.",
        "There is {sev} atelectasis in the {loc}.",
        "Linear {sev} atelectasis at the {loc}.",
        "{sev} atelectasis of the {loc}.",
        "Streaky {sev} atelectasis at the {loc}.",
    ],
    "Edema": [
        "{sev} pulmonary edema.",
        "There is {sev} pulmonary edema.",
        "{sev} interstitial pulmonary edema with Kerley B lines.",
        "Findings are consistent with {sev} pulmonary edema.",
        "{sev} perihilar edema bilaterally.",
        "Pulmonary vascular congestion with {sev} interstitial edema.",
    ],
    "Emphysema": [
        "The lungs are hyperinflated with {sev} emphysema.",
        "{sev} emphysema.",
        "{sev} emphysematous changes are present bilaterally.",
        "Hyperinflation and flattening of the diaphragms consistent with {sev} emphysema.",
        "There is {sev} emphysema with upper lobe predominance.",
    ],
}

# Hedged sentences for findings drawn faintly (assertion "uncertain").
_UNCERTAIN: Dict[str, List[str]] = {
    "Cardiomegaly": [
        "Possible {sev} cardiomegaly.",
        "The cardiac silhouette may be {sevly} enlarged.",
        "{sev} cardiomegaly cannot be excluded.",
        "Questionable {sev} enlargement of the cardiac silhouette.",
        "Heart size is borderline, possibly {sevly} enlarged.",
    ],
    "Effusion": [
        "Possible {sev} {side} pleural effusion{s}.",
        "{sev} {side} pleural effusion{s} cannot be excluded.",
        "Blunting of the {side} costophrenic angle{s} may reflect {a}{sev} effusion{s}.",
        "There may be {a}{sev} {side} pleural effusion{s}.",
        "Questionable {sev} {side} pleural effusion{s}.",
    ],
    "Pneumothorax": [
        "Possible {sev} {side} apical pneumothorax.",
        "A {sev} {side} apical pneumothorax cannot be excluded.",
        "Questionable {sev} {side} apical pneumothorax.",
        "There may be a {sev} {side} pneumothorax.",
        "Lucency at the {side} apex could represent a {sev} pneumothorax.",
    ],
    "Consolidation": [
        "Possible {sev} consolidation in the {loc}.",
        "{sev} consolidation in the {loc} cannot be excluded.",
        "There may be {sev} consolidation in the {loc}, which may represent early pneumonia.",
        "Questionable {sev} consolidation at the {loc}.",
        "Equivocal {sev} consolidation in the {loc}.",
    ],
    "Lung_Opacity": [
        "Possible {sev} opacity in the {loc}.",
        "There may be {a}{sev} opacity in the {loc}, which may represent early pneumonia.",
        "Questionable {sev} opacity in the {loc}.",
        "{sev} opacity in the {loc} cannot be excluded.",
        "Possible {sev} airspace opacity at the {loc}.",
    ],
    "Nodule": [
        "Possible {size} nodule in the {loc}.",
        "A {size} nodule in the {loc} cannot be excluded; this may represent a nipple shadow.",
        "Questionable {size} nodule projecting over the {loc}.",
        "There may be a {size} nodule in the {loc}.",
        "A {size} focus in the {loc} may represent a pulmonary nodule.",
    ],
    "Mass": [
        "Possible {size} mass in the {loc}.",
        "A mass in the {loc} cannot be excluded.",
        "There may be a {size} mass in the {loc}.",
        "Questionable {size} mass in the {loc}; recommend CT for further evaluation.",
        "Fullness in the {loc} may represent a mass.",
    ],
    "Atelectasis": [
        "Possible {sev} atelectasis at the {loc}.",
        "{sev} atelectasis at the {loc} cannot be excluded.",
        "Streaky changes at the {loc} may reflect {sev} atelectasis.",
        "Questionable {sev} atelectasis in the {loc}.",
        "There may be {sev} atelectasis at the {loc}.",
    ],
    "Edema": [
        "Possible {sev} pulmonary edema.",
        "{sev} pulmonary edema cannot be excluded.",
        "There may be {sev} interstitial edema.",
        "Questionable {sev} pulmonary edema.",
        "Perihilar prominence may reflect {sev} pulmonary edema.",
    ],
    "Emphysema": [
        "Possible {sev} emphysema.",
        "Hyperinflation may reflect {sev} emphysema.",
        "{sev} emphysema cannot be excluded.",
        "Questionable {sev} emphysematous changes.",
        "Possible {sev} emphysematous change at the apices.",
    ],
}

_DEVICE_SENTENCES: Dict[str, List[str]] = {
    "ett": [
        "Endotracheal tube terminates {n} cm above the carina.",
        "An endotracheal tube is in place with its tip {n} cm above the carina.",
        "ET tube in standard position.",
        "The endotracheal tube tip lies {n} cm from the carina.",
        "Endotracheal tube is in appropriate position.",
    ],
    "cvc": [
        "Right internal jugular central venous catheter terminates in the mid SVC.",
        "A right IJ line ends in the lower SVC.",
        "Right-sided central venous catheter with tip at the cavoatrial junction.",
        "Right internal jugular catheter tip projects over the SVC.",
        "A central venous line is in place, tip in the SVC.",
    ],
    "pacemaker": [
        "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
        "A dual-chamber pacemaker is in place.",
        "Left-sided pacer device with leads terminating in the right heart.",
        "Cardiac pacemaker with intact leads.",
        "Left pectoral pacemaker generator with two leads.",
    ],
    "ngt": [
        "Nasogastric tube courses below the diaphragm with tip in the stomach.",
        "An enteric tube terminates in the stomach.",
        "NG tube tip is in the stomach.",
        "Orogastric tube tip projects over the gastric body.",
        "A feeding tube extends below the diaphragm.",
    ],
}
_DEVICE_REGIONS = {"ett": ["trachea"], "cvc": ["mediastinum"], "pacemaker": ["heart"], "ngt": []}
_DEVICE_IMPRESSION = ["Support devices in standard position.", "Lines and tubes in appropriate position.",
                      "Tubes and lines as described above."]

_LUNGS = ["right lung", "left lung"]
_ALL_ZONES = [f"{s} {z} zone" for s in ("right", "left") for z in ("upper", "mid", "lower", "apical")]
_ANGLES = ["right costophrenic angle", "left costophrenic angle"]
_APICES = ["right apical zone", "left apical zone"]
_PARENCHYMA = ("Consolidation", "Lung_Opacity", "Edema", "Nodule", "Mass", "Atelectasis")


@dataclass(frozen=True)
class _Normal:
    """A normal (negated) statement: the labels it makes absent, the labels whose presence
    forbids it, and the regions it describes."""

    text: str
    negates: Tuple[str, ...]
    forbids: Tuple[str, ...] = ()
    regions: Tuple[str, ...] = ()


def _n(text, negates, forbids=(), regions=()):
    return _Normal(text, tuple(negates), tuple(forbids) or tuple(negates), tuple(regions))


_NORMALS: List[_Normal] = [
    # Cardiomegaly
    _n("Heart size is normal.", ["Cardiomegaly"], regions=["heart"]),
    _n("The heart is normal in size.", ["Cardiomegaly"], regions=["heart"]),
    _n("The cardiac silhouette is within normal limits.", ["Cardiomegaly"], regions=["heart"]),
    _n("No cardiomegaly.", ["Cardiomegaly"], regions=["heart"]),
    _n("Normal heart size.", ["Cardiomegaly"], regions=["heart"]),
    _n("The cardiomediastinal silhouette is normal.", ["Cardiomegaly"], regions=["heart", "mediastinum"]),
    _n("Heart size and mediastinal contours are normal.", ["Cardiomegaly"], regions=["heart", "mediastinum"]),
    # Effusion / Pneumothorax
    _n("No pleural effusion.", ["Effusion"], regions=_ANGLES),
    _n("There is no pleural effusion.", ["Effusion"], regions=_ANGLES),
    _n("The costophrenic angles are sharp.", ["Effusion"], regions=_ANGLES),
    _n("No effusion is seen.", ["Effusion"], regions=_ANGLES),
    _n("No pleural effusion or pneumothorax.", ["Effusion", "Pneumothorax"], regions=_ANGLES + _APICES),
    _n("There is no pleural effusion or pneumothorax.", ["Effusion", "Pneumothorax"], regions=_ANGLES + _APICES),
    _n("No focal consolidation, pleural effusion or pneumothorax.", ["Consolidation", "Effusion", "Pneumothorax"],
       regions=_LUNGS + _ANGLES + _APICES),
    _n("No pneumothorax.", ["Pneumothorax"], regions=_APICES),
    _n("There is no pneumothorax.", ["Pneumothorax"], regions=_APICES),
    _n("No evidence of pneumothorax.", ["Pneumothorax"], regions=_APICES),
    # Consolidation / Lung_Opacity
    _n("No focal consolidation.", ["Consolidation"], regions=_LUNGS),
    _n("There is no focal consolidation.", ["Consolidation"], regions=_LUNGS),
    _n("No consolidation to suggest pneumonia.", ["Consolidation"], regions=_LUNGS),
    _n("No focal airspace consolidation.", ["Consolidation"], regions=_LUNGS),
    _n("The lungs are clear.", ["Consolidation", "Lung_Opacity"], _PARENCHYMA, regions=_LUNGS + _ALL_ZONES),
    _n("Lungs are clear without focal opacity.", ["Lung_Opacity"], _PARENCHYMA, regions=_LUNGS + _ALL_ZONES),
    _n("No focal opacity.", ["Lung_Opacity"], regions=_LUNGS),
    _n("No focal airspace opacity.", ["Lung_Opacity"], regions=_LUNGS),
    _n("No airspace opacity is seen.", ["Lung_Opacity"], regions=_LUNGS),
    _n("There is no focal opacity to suggest pneumonia.", ["Lung_Opacity"], regions=_LUNGS),
    # Edema
    _n("No pulmonary edema.", ["Edema"], regions=_LUNGS),
    _n("There is no pulmonary edema.", ["Edema"], regions=_LUNGS),
    _n("No evidence of pulmonary edema.", ["Edema"], regions=_LUNGS),
    _n("No pulmonary vascular congestion or edema.", ["Edema"], regions=_LUNGS),
    _n("No signs of pulmonary edema.", ["Edema"], regions=_LUNGS),
    # Nodule / Mass
    _n("No pulmonary nodules.", ["Nodule"], regions=_LUNGS),
    _n("No suspicious pulmonary nodule.", ["Nodule"], regions=_LUNGS),
    _n("There is no pulmonary nodule.", ["Nodule"], regions=_LUNGS),
    _n("No pulmonary nodules or masses.", ["Nodule", "Mass"], regions=_LUNGS),
    _n("No nodule or mass is seen.", ["Nodule", "Mass"], regions=_LUNGS),
    _n("No pulmonary mass.", ["Mass"], regions=_LUNGS),
    _n("No mass is identified.", ["Mass"], regions=_LUNGS),
    _n("There is no lung mass.", ["Mass"], regions=_LUNGS),
    # Atelectasis
    _n("No atelectasis.", ["Atelectasis"], regions=_LUNGS),
    _n("No evidence of atelectasis.", ["Atelectasis"], regions=_LUNGS),
    _n("There is no atelectasis.", ["Atelectasis"], regions=_LUNGS),
    _n("No focal atelectasis.", ["Atelectasis"], regions=_LUNGS),
    _n("No volume loss or atelectasis.", ["Atelectasis"], regions=_LUNGS),
    # Emphysema
    _n("No emphysema.", ["Emphysema"], regions=_LUNGS),
    _n("There is no emphysema.", ["Emphysema"], regions=_LUNGS),
    _n("No evidence of emphysema.", ["Emphysema"], regions=_LUNGS),
    _n("No hyperinflation or emphysema.", ["Emphysema"], regions=_LUNGS),
    _n("No emphysematous changes.", ["Emphysema"], regions=_LUNGS),
    # Support devices
    _n("No lines or tubes are seen.", ["Support_Devices"]),
    _n("No support devices are present.", ["Support_Devices"]),
    _n("There are no indwelling lines or tubes.", ["Support_Devices"]),
    _n("No medical devices are identified.", ["Support_Devices"]),
    _n("No tubes or catheters are present.", ["Support_Devices"]),
]

# Statements that assert no demo label (anatomy the reader may still pair with a region).
_FILLERS: List[Tuple[str, Tuple[str, ...], Tuple[str, ...]]] = [
    ("The mediastinal contours are normal.", ("mediastinum",), ()),
    ("Mediastinal and hilar contours are unremarkable.", ("mediastinum",), ()),
    ("Hilar contours are normal.", ("mediastinum",), ()),
    ("The trachea is midline.", ("trachea",), ()),
    ("The hemidiaphragms are well defined.", ("right hemidiaphragm", "left hemidiaphragm"),
     ("Effusion", "Emphysema", "Atelectasis")),
    ("No acute osseous abnormality.", (), ()),
    ("The visualized osseous structures are unremarkable.", (), ()),
    ("Mild degenerative changes of the thoracic spine.", (), ()),
]
_TECHNIQUE = {
    "PA": ["PA and lateral views of the chest provided.", "Frontal and lateral radiographs of the chest were obtained.",
           "PA and lateral chest radiographs."],
    "PA1": ["PA view of the chest.", "Single frontal view of the chest."],
    "AP": ["Portable AP upright view of the chest.", "Single portable AP chest radiograph.",
           "AP semi-upright view of the chest."],
}
_NORMAL_IMPRESSION = ["No acute cardiopulmonary process.", "No acute intrathoracic abnormality.",
                      "Normal chest radiograph.", "No acute cardiopulmonary abnormality.",
                      "No evidence of acute disease."]
_INDICATIONS = ["___-year-old man with cough and fever, evaluate for pneumonia.",
                "___-year-old woman with shortness of breath.", "___ year old woman with chest pain.",
                "History: ___M with dyspnea.", "Preoperative evaluation.", "___F with fatigue and weight loss.",
                "Fever and leukocytosis.", "Follow-up.", "___-year-old man with hypoxia."]
_ICU_INDICATIONS = ["Intubated patient, evaluate tube position.", "___-year-old man status post line placement.",
                    "ICU patient with hypoxia."]
_COMPARISONS = ["___", "Chest radiograph from ___.", "None.", "Prior study of ___.", "___ chest radiograph."]

# ---------------------------------------------------------------------------- CT phrase bank
_CT_PRESENT: Dict[str, List[str]] = {
    "Nodule": [
        "A {size} solid nodule is seen in the {lobe}.",
        "Solid pulmonary nodule of {size} in the {lobe}.",
        "{size} nodule in the {lobe} with well-defined margins.",
        "There is a {size} solid nodule in the {lobe}.",
        "In the {lobe} there is a solid nodule measuring {size}.",
    ],
    "Effusion": [
        "{sev} {side} pleural effusion{s}.",
        "{sev} {side} pleural effusion{s} with dependent distribution.",
        "There {is} {a}{sev} {side} pleural effusion{s}.",
        "Pleural effusion{s}, {side} and {sev}.",
        "{sev} {side} pleural fluid collection{s} in the posterior costophrenic recess{es}.",
    ],
    "Consolidation": [
        "{sev} consolidation with air bronchogram in the {lobe}.",
        "Area of {sev} consolidation in the {lobe}.",
        "Consolidation in the {lobe}, {sev} in extent, with air bronchogram.",
        "{sev} parenchymal consolidation involving the {lobe}.",
        "There is {sev} consolidation of the {lobe}.",
    ],
    "Emphysema": [
        "{sev} centrilobular emphysema predominantly in the upper lobes.",
        "Centrilobular emphysema, {sev}, with upper lobe predominance.",
        "Signs of {sev} centrilobular and paraseptal emphysema.",
        "{sev} emphysematous changes in both upper lobes.",
        "{sev} centrilobular emphysema.",
    ],
}
_CT_UNCERTAIN: Dict[str, List[str]] = {
    "Nodule": ["Possible {size} nodule in the {lobe}, to be confirmed on follow-up.",
               "A {size} focus in the {lobe} may correspond to a nodule.",
               "Questionable {size} nodule in the {lobe}."],
    "Effusion": ["Possible {sev} {side} pleural effusion{s}.", "{sev} {side} pleural effusion{s} cannot be ruled out.",
                 "There may be {a}{sev} {side} pleural effusion{s}."],
    "Consolidation": ["Possible {sev} consolidation in the {lobe}.",
                      "{sev} consolidation in the {lobe} cannot be ruled out.",
                      "Findings in the {lobe} may correspond to {sev} consolidation."],
    "Emphysema": ["Possible {sev} centrilobular emphysema.", "Findings may correspond to {sev} centrilobular emphysema.",
                  "Questionable {sev} emphysematous changes in the upper lobes."],
}
_CT_SEV = {
    "Effusion": {"mild": ["small", "minimal"], "moderate": ["moderate"], "severe": ["large", "abundant"]},
    "Consolidation": {"mild": ["small", "mild"], "moderate": ["moderate"], "severe": ["extensive"]},
    "Emphysema": {"mild": ["mild"], "moderate": ["moderate"], "severe": ["severe", "advanced"]},
}
_CT_LUNGS = ("right lung", "left lung")
_CT_NORMALS: List[_Normal] = [
    _n("No pleural effusion.", ["Effusion"], regions=_CT_LUNGS),
    _n("No pleural or pericardial effusion.", ["Effusion"], regions=_CT_LUNGS + ("heart",)),
    _n("There is no pleural effusion.", ["Effusion"], regions=_CT_LUNGS),
    _n("No pulmonary nodules.", ["Nodule"], regions=_CT_LUNGS),
    _n("No significant pulmonary nodules are identified.", ["Nodule"], regions=_CT_LUNGS),
    _n("No consolidations.", ["Consolidation"], regions=_CT_LUNGS),
    _n("No parenchymal consolidation.", ["Consolidation"], regions=_CT_LUNGS),
    _n("No emphysema.", ["Emphysema"], regions=_CT_LUNGS),
    _n("No signs of emphysema.", ["Emphysema"], regions=_CT_LUNGS),
    _n("Normal heart size.", ["Cardiomegaly"], regions=("heart",)),
    _n("Heart of normal size.", ["Cardiomegaly"], regions=("heart",)),
    _n("Lung parenchyma without nodules or consolidations.", ["Nodule", "Consolidation"], regions=_CT_LUNGS),
]
_CT_FILLERS = [("Mediastinum without significant lymphadenopathy.", ("mediastinum",)),
               ("No mediastinal or hilar adenopathies.", ("mediastinum",)),
               ("Normal caliber of the thoracic aorta.", ("mediastinum",)),
               ("Degenerative changes of the dorsal spine.", ("spine",))]
_CT_HEADINGS = ["Chest CT without intravenous contrast.", "Thoracic CT with intravenous contrast.",
                "High-resolution chest CT.", "Chest CT study."]


# ============================================================================ writer
@dataclass
class Sentence:
    text: str
    labels: Dict[str, dict] = field(default_factory=dict)  # label -> gt entry
    regions: Tuple[str, ...] = ()


@dataclass
class WrittenReport:
    """A report and its exact ground truth."""

    text: str
    gt: Dict[str, dict]
    region_sentences: Dict[str, str]
    findings: str
    impression: str


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _finish(text: str) -> str:
    """Capitalise the sentence, fix a/an and collapse spaces left by empty placeholders."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", lambda m: m.group(1) + "n ", text)
    return text[0].upper() + text[1:]


def _size_text(spec: FindingSpec, rng: np.random.Generator, ct: bool = False) -> str:
    mm = spec.size_mm or 15.0
    if spec.name == "Mass" or (mm >= 10 and not ct and rng.random() < 0.5):
        return f"{mm / 10:.1f} cm"
    return f"{int(round(mm))} mm"


def _gt_entry(spec: FindingSpec) -> dict:
    return {"assertion": spec.assertion, "severity": spec.severity, "location": spec.location()}


def _zone_region(zone: Optional[str]) -> str:
    return {"upper": "upper zone", "middle": "mid zone", "lower": "lower zone", "apical": "apical zone",
            "basilar": "lower zone"}.get(zone or "lower", "lower zone")


def finding_regions(spec: FindingSpec) -> Tuple[str, ...]:
    """Anatomical regions a sentence about this finding describes (most specific first)."""
    sides = spec.sides()
    n = spec.name
    if n == "Cardiomegaly":
        return ("heart",)
    if n == "Effusion":
        return tuple(r for s in sides for r in (f"{s} costophrenic angle", f"{s} hemidiaphragm", f"{s} lower zone"))
    if n == "Pneumothorax":
        return tuple(r for s in sides for r in (f"{s} apical zone", f"{s} upper zone", f"{s} lung"))
    if n in ("Consolidation", "Lung_Opacity", "Nodule", "Mass", "Atelectasis"):
        return tuple(r for s in sides for r in (f"{s} {_zone_region(spec.zone)}", f"{s} lung"))
    if n == "Edema":
        return ("right lung", "left lung", "right mid zone", "left mid zone")
    if n == "Emphysema":
        return ("right lung", "left lung", "right upper zone", "left upper zone", "right hemidiaphragm",
                "left hemidiaphragm")
    return ()


def _fill_vars(spec: FindingSpec, rng: np.random.Generator, sev_table: Dict[str, Dict[str, List[str]]]) -> dict:
    sev = spec.severity or "moderate"
    table = sev_table.get(spec.name, sev_table.get("default", _SEV_ADJ["default"]))
    side = spec.side or "right"
    plural = side == "bilateral"
    zone = spec.zone if spec.zone in ("upper", "middle", "lower") else "lower"
    if spec.name == "Atelectasis":
        loc, locadj = _pick(rng, _BASE_LOC[side]), _pick(rng, _BASE_LOC[side])
    else:
        loc = _pick(rng, _ZONE_LOC.get((side, zone), ["lungs"]))
        locadj = _pick(rng, _ZONE_ADJ.get((side, zone), [side]))
    return {
        "sev": _pick(rng, table[sev]) if spec.severity else "",
        "sevly": _pick(rng, _SEV_ADV[sev]) if spec.severity else "",
        "side": _pick(rng, _SIDE_WORDS[side]) if spec.name != "Pneumothorax" else side,
        "loc": loc, "locadj": locadj,
        "lobe": _LOBE.get((side if side != "bilateral" else "right", zone), "right lower lobe"),
        "size": "", "a": "" if plural else "a ", "s": "s" if plural else "", "es": "es" if plural else "",
        "is": "are" if plural else "is",
    }


def finding_sentence(spec: FindingSpec, rng: np.random.Generator) -> Sentence:
    """One sentence stating a drawn finding, in a randomly chosen phrasing of the bank."""
    if spec.name == "Support_Devices":
        raise ValueError("devices are described by device_sentences")
    bank = _UNCERTAIN if spec.assertion == "uncertain" else _PRESENT
    v = _fill_vars(spec, rng, _SEV_ADJ)
    if spec.name in ("Nodule", "Mass"):
        v["size"] = _size_text(spec, rng)
    text = _finish(_pick(rng, bank[spec.name]).format(**v))
    return Sentence(text, {spec.name: _gt_entry(spec)}, finding_regions(spec))


def device_sentences(spec: FindingSpec, rng: np.random.Generator) -> List[Sentence]:
    out = []
    for dev in spec.devices:
        text = _pick(rng, _DEVICE_SENTENCES[dev]).format(n=int(rng.integers(2, 6)))
        out.append(Sentence(_finish(text), {"Support_Devices": _gt_entry(spec)}, tuple(_DEVICE_REGIONS[dev])))
    return out


# How often a report volunteers a normal statement about a finding it does not show.
_P_MENTION_ABSENT = {"Cardiomegaly": 0.6, "Effusion": 0.65, "Pneumothorax": 0.6, "Consolidation": 0.55,
                     "Lung_Opacity": 0.3, "Edema": 0.3, "Nodule": 0.12, "Mass": 0.08, "Atelectasis": 0.08,
                     "Emphysema": 0.08, "Support_Devices": 0.05}


def _normal_sentences(drawn: Dict[str, FindingSpec], rng: np.random.Generator, bank: Sequence[_Normal],
                      p_mention: Dict[str, float]) -> List[Sentence]:
    """Negated normals for a random subset of the findings the image does not show."""
    wanted = {n for n, p in p_mention.items() if n not in drawn and rng.random() < p}
    out: List[Sentence] = []
    covered: set = set()
    order = rng.permutation(len(bank))
    # Prefer combined statements ("No pleural effusion or pneumothorax.") half of the time.
    if rng.random() < 0.5:
        order = sorted(order, key=lambda i: -len(bank[i].negates))
    for i in order:
        nm = bank[int(i)]
        neg = set(nm.negates)
        if not neg <= wanted or neg & covered or set(nm.forbids) & set(drawn):
            continue
        covered |= neg
        entry = {"assertion": "absent", "severity": None, "location": []}
        out.append(Sentence(nm.text, {n: dict(entry) for n in nm.negates}, nm.regions))
    return out


def _region_sentences(sentences: Sequence[Sentence], names: Sequence[str]) -> Dict[str, str]:
    out = {n: "" for n in names}
    for s in sentences:
        for r in s.regions:
            if r in out and not out[r]:
                out[r] = s.text
    return out


def _merge_gt(sentences: Sequence[Sentence]) -> Dict[str, dict]:
    gt: Dict[str, dict] = {}
    for s in sentences:
        for k, v in s.labels.items():
            gt.setdefault(k, v)
    return dict(sorted(gt.items()))


_IMPORTANCE = ["Pneumothorax", "Mass", "Consolidation", "Edema", "Effusion", "Cardiomegaly", "Lung_Opacity",
               "Nodule", "Atelectasis", "Emphysema", "Support_Devices"]


def write_cxr_report(findings: Dict[str, FindingSpec], view: str, has_lateral: bool, rng: np.random.Generator,
                     region_names: Sequence[str]) -> WrittenReport:
    """A MIMIC-style free-text report for a radiograph showing exactly `findings`."""
    body: List[Sentence] = []
    for name in sorted(findings, key=_IMPORTANCE.index):
        spec = findings[name]
        body.extend(device_sentences(spec, rng) if name == "Support_Devices" else [finding_sentence(spec, rng)])
    normals = _normal_sentences(findings, rng, _NORMALS, _P_MENTION_ABSENT)
    fillers = [Sentence(t, {}, r) for t, r, forbid in _FILLERS
               if rng.random() < 0.25 and not set(forbid) & set(findings)]
    technique = []
    if rng.random() < 0.5:
        key = "AP" if view == "AP" else ("PA" if has_lateral else "PA1")
        technique = [Sentence(_pick(rng, _TECHNIQUE[key]))]
    # Devices usually lead a portable report; otherwise findings, then normal statements.
    ordered = technique + body + [s for s in normals + fillers]
    if rng.random() < 0.3 and len(normals) > 1:
        ordered = technique + normals[:1] + body + normals[1:] + fillers

    # Impression: restate up to three findings in fresh words, or a normal summary.
    imp: List[Sentence] = []
    for name in sorted(findings, key=_IMPORTANCE.index)[:3]:
        spec = findings[name]
        if name == "Support_Devices":
            if len(findings) == 1 or rng.random() < 0.4:
                imp.append(Sentence(_pick(rng, _DEVICE_IMPRESSION), {"Support_Devices": _gt_entry(spec)}))
        else:
            imp.append(finding_sentence(spec, rng))
    if not findings:
        imp = [Sentence(_pick(rng, _NORMAL_IMPRESSION))]
    if len(imp) > 1 and rng.random() < 0.5:
        impression = "  ".join(f"{i + 1}. {s.text}" for i, s in enumerate(imp))
    else:
        impression = " ".join(s.text for s in imp)
    if rng.random() < 0.06:
        impression += " Findings were discussed with Dr. ___ by telephone at ___."

    only_impression = rng.random() < 0.06
    if only_impression:  # a few reports carry everything in the impression
        impression = " ".join(s.text for s in ordered) + (" " + impression if findings else "")
        findings_text = ""
        described = ordered + imp
    else:
        findings_text = " ".join(s.text for s in ordered)
        described = ordered + imp
    lower = rng.random() < 0.06
    h_find, h_imp = ("findings:", "impression:") if lower else ("FINDINGS:", "IMPRESSION:")
    lines: List[str] = []
    if rng.random() < 0.8:
        lines += ["                                 FINAL REPORT", ""]
    if rng.random() < 0.7:
        exam = "CHEST (PORTABLE AP)" if view == "AP" else ("CHEST (PA AND LAT)" if has_lateral else "CHEST (PA)")
        lines += [f" EXAMINATION:  {exam}", ""]
    if rng.random() < 0.6:
        pool = _ICU_INDICATIONS if "Support_Devices" in findings and rng.random() < 0.6 else _INDICATIONS
        lines += [f" {'indication:' if lower else 'INDICATION:'}  {_pick(rng, pool)}", ""]
    if rng.random() < 0.5:
        lines += [f" {'comparison:' if lower else 'COMPARISON:'}  {_pick(rng, _COMPARISONS)}", ""]
    if findings_text:
        lines += [f" {h_find}", "", f" {findings_text}", ""]
    lines += [f" {h_imp}", "", f" {impression}", ""]
    text = "\n".join(lines)
    regions = _region_sentences([s for s in ordered if s.text in text] + imp, region_names)
    return WrittenReport(text=text, gt=_merge_gt(described), region_sentences=regions,
                         findings=findings_text, impression=impression)


def write_ct_report(findings: Dict[str, FindingSpec], rng: np.random.Generator,
                    region_names: Sequence[str]) -> WrittenReport:
    """A BIMCV-R-style English chest CT report for a volume showing exactly `findings`."""
    body: List[Sentence] = []
    for name in sorted(findings, key=_IMPORTANCE.index):
        spec = findings[name]
        bank = _CT_UNCERTAIN if spec.assertion == "uncertain" else _CT_PRESENT
        v = _fill_vars(spec, rng, _CT_SEV)
        v["side"] = spec.side or "right"
        if name == "Nodule":
            v["size"] = _size_text(spec, rng, ct=True)
        text = _finish(_pick(rng, bank[name]).format(**v))
        regions = tuple(r for s in spec.sides() for r in (f"{s} {_zone_region(spec.zone)}", f"{s} lung"))
        body.append(Sentence(text, {name: _gt_entry(spec)}, regions))
    p = {"Effusion": 0.6, "Nodule": 0.5, "Consolidation": 0.5, "Emphysema": 0.3, "Cardiomegaly": 0.4}
    normals = _normal_sentences(findings, rng, _CT_NORMALS, p)
    fillers = [Sentence(t, {}, r) for t, r in _CT_FILLERS if rng.random() < 0.35]
    ordered = [Sentence(_pick(rng, _CT_HEADINGS))] + fillers[:1] + body + normals + fillers[1:]
    text = " ".join(s.text for s in ordered)
    if body:
        main = body[0].text.rstrip(".")
        conclusion = f"Conclusion: {main[0].lower() + main[1:] if not main[:2].isupper() else main}."
    else:
        conclusion = "Conclusion: No significant findings."
    text = f"{text} {conclusion}"
    return WrittenReport(text=text, gt=_merge_gt(ordered), region_sentences=_region_sentences(ordered, region_names),
                         findings=" ".join(s.text for s in ordered), impression=conclusion)


def finding_keywords(name: str) -> Tuple[str, ...]:
    """Words one of which every sentence about finding `name` contains (for self-checks)."""
    return {
        "Cardiomegaly": ("cardiomegaly", "enlarge"),
        "Effusion": ("effusion", "pleural fluid"),
        "Pneumothorax": ("pneumothorax",),
        "Consolidation": ("consolidation",),
        "Lung_Opacity": ("opacit",),
        "Nodule": ("nodule",),
        "Mass": ("mass",),
        "Atelectasis": ("atelectasis",),
        "Edema": ("edema",),
        "Emphysema": ("emphysema", "emphysematous"),
        "Support_Devices": ("tube", "catheter", "line", "pacemaker", "pacer", "devices"),
    }[name]
