"""Label-set names shared by the data generator, the report labeler and the evaluation suite.

Only names live here (no phrases): the demo generator's phrase bank stays private to the
generator so that scoring the labeler on demo reports is not circular.
"""

from __future__ import annotations

from typing import List

# The `demo` label set: the findings the phantom generator draws in pixels and describes.
DEMO_LABELS: List[str] = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Lung_Opacity",
    "Mass",
    "Nodule",
    "Pneumothorax",
    "Support_Devices",
]

# Findings of the 3D CT phantoms (a subset of DEMO_LABELS).
DEMO_CT_LABELS: List[str] = ["Consolidation", "Effusion", "Emphysema", "Nodule"]

LABEL_PREFIX = "label_"


def label_column(name: str) -> str:
    """Manifest column holding label `name` (1 present, 0 absent, -1 uncertain, NaN unmentioned).

    Spaces become underscores ("Pleural Effusion" -> `label_Pleural_Effusion`), so a label set
    that names a finding with spaces (chexpert14, ctrate18) and a table that spells it with
    underscores meet in one column."""
    return f"{LABEL_PREFIX}{str(name).replace(' ', '_')}"


# Columns that share the prefix but describe the labels rather than hold one (which table
# filled them: 'chexpert', 'ctrate_predicted', ...).
LABEL_METADATA_COLUMNS = ("label_source",)


def label_columns(columns) -> List[str]:
    """The label columns of a manifest, in order (`label_source` is not a finding)."""
    return [c for c in columns if str(c).startswith(LABEL_PREFIX) and str(c) not in LABEL_METADATA_COLUMNS]
