"""What a dataset implies for the later steps: its modalities and the label set its reports use.

Notebooks take `label_set="auto"` / `modality="auto"` and resolve them here from the run's
manifest, so a CT-only run (BIMCV-R, CT-RATE) labels with CT-RATE's 18 abnormalities and mines
CT studies without the user knowing the names.
"""

from __future__ import annotations

from typing import Dict, Tuple

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


def default_label_set(manifest: pd.DataFrame) -> str:
    """The label set for a manifest's reports: by its dataset; a CT-only run of an unknown
    source uses `ctrate18`, anything else `chexpert14`."""
    datasets = sorted(set(manifest["dataset"].astype(str)))
    if len(datasets) == 1 and datasets[0] in DATASET_LABEL_SETS:
        return DATASET_LABEL_SETS[datasets[0]]
    return "ctrate18" if manifest_modalities(manifest) == ("ct",) else "chexpert14"


def default_mining_modality(manifest: pd.DataFrame) -> str:
    """Mine radiographs when there are any (MedTrim is a 2D method), else CT."""
    modalities = manifest_modalities(manifest)
    return "cxr" if "cxr" in modalities else modalities[0]
