"""What a dataset implies for the later steps: its modalities and the label set its reports use.

Notebooks take `label_set="auto"` / `modality="auto"` and resolve them here from the run's
manifest, so a CT-only run (BIMCV-R, CT-RATE) labels with CT-RATE's 18 abnormalities and mines
CT studies without the user knowing the names.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import pandas as pd

from workbench.data.manifest import MODALITIES

# The modalities a reader can produce (dicom: either, decided by the files).
DATASET_MODALITIES: Dict[str, Tuple[str, ...]] = {
    "demo": ("cxr", "ct"), "mimic": ("cxr",), "iu": ("cxr",), "roco": ("cxr",), "folders": ("cxr",),
    "csv": ("cxr",), "medtrim": ("cxr",), "bimcv": ("ct",), "ctrate": ("ct",), "dicom": ("cxr", "ct"),
}
# The OBER label set whose findings a dataset's reports (and gold tables) are written in.
DATASET_LABEL_SETS: Dict[str, str] = {
    "demo": "demo", "mimic": "chexpert14", "iu": "chestxray14", "roco": "chexpert14", "folders": "chestxray14",
    "csv": "chestxray14", "medtrim": "chexpert14", "dicom": "chexpert14", "bimcv": "ctrate18", "ctrate": "ctrate18",
}


def manifest_modalities(manifest: pd.DataFrame) -> Tuple[str, ...]:
    """The modalities a manifest holds, in the canonical order (cxr, ct)."""
    present = set(manifest["modality"].astype(str))
    return tuple(m for m in MODALITIES if m in present)


def label_set_for(datasets: Sequence[str], modalities: Sequence[str]) -> str:
    """The label set for reports of `datasets`: by the dataset when there is one; a CT-only
    mix of sources uses `ctrate18`, anything else `chexpert14`."""
    names = sorted(set(datasets))
    if len(names) == 1 and names[0] in DATASET_LABEL_SETS:
        return DATASET_LABEL_SETS[names[0]]
    return "ctrate18" if tuple(modalities) == ("ct",) else "chexpert14"


def mining_modality_for(modalities: Sequence[str]) -> str:
    """Mine radiographs when there are any (MedTrim is a 2D method), else CT."""
    return "cxr" if "cxr" in modalities else modalities[0]


def default_label_set(manifest: pd.DataFrame) -> str:
    """`label_set_for` the manifest's datasets and modalities (notebook 01's `auto`)."""
    return label_set_for(manifest["dataset"].astype(str), manifest_modalities(manifest))


def default_mining_modality(manifest: pd.DataFrame) -> str:
    """`mining_modality_for` the manifest's modalities (notebook 02's `auto`)."""
    return mining_modality_for(manifest_modalities(manifest))
