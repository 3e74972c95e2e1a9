"""The one manifest schema every reader produces and every later layer consumes.

A manifest is a pandas DataFrame (stored as `manifest.parquet`), one row per study:

| column        | meaning                                                              |
|---------------|----------------------------------------------------------------------|
| subject_id    | patient id (str); splits never put one subject in two splits          |
| study_id      | study id (str), unique across the manifest                           |
| dataset       | reader name that produced the row (demo, mimic, bimcv, ...)          |
| modality      | 'cxr' (2D; also other 2D sources such as ROCO) or 'ct' (3D)          |
| view          | view position of `image_path` (PA, AP, LATERAL, axial, '' unknown)   |
| image_path    | the study's primary image / volume (absolute path, str)              |
| image_paths   | every image of the study (list of str; first == image_path)          |
| findings      | FINDINGS section ('' when absent)                                    |
| impression    | IMPRESSION section ('' when absent)                                  |
| report        | the text a model reads: findings + impression, or the whole text     |
| split         | 'train' | 'val' | 'test'                                             |

Optional columns: `label_<Name>` (1 present, 0 absent, -1 uncertain, NaN unmentioned; see
`workbench.data.labels`), and on the demo data the generator's ground truth as JSON strings:
`gt` (finding -> {assertion, severity, location}), `finding_boxes` (finding -> [x0, y0, x1, y1]
in pixels of the stored image), `regions` (list of {name, box, sentence}), and `mask_path`
(an .npz with one boolean mask per drawn finding).

Reader-specific optional columns: `label_source` (which label file filled the label_ columns:
'chexpert' / 'negbio' for MIMIC, 'chestxray14_gold' for IU) and `class_name` (class folders).
`image_path` is '' for report-only sources (IU without images). Skipped and repaired studies
are counted per reason in `df.attrs["skips"]` (see `workbench.data.skips`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import pandas as pd

from workbench.io import atomic_path

REQUIRED_COLUMNS: List[str] = [
    "subject_id", "study_id", "dataset", "modality", "view", "image_path", "image_paths",
    "findings", "impression", "report", "split",
]
SPLITS = ("train", "val", "test")
MODALITIES = ("cxr", "ct")


class ManifestError(ValueError):
    """A manifest that breaks the schema; the message says which column and how to fix it."""


def validate_manifest(df: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check the schema; return the frame unchanged. Raises ManifestError naming the problem."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{source} lacks columns {missing}; build it with workbench.data.build_manifest.")
    if df["study_id"].duplicated().any():
        dup = df.loc[df["study_id"].duplicated(), "study_id"].iloc[0]
        raise ManifestError(f"{source} has duplicate study_id {dup!r}; study ids must be unique.")
    bad_split = set(df["split"].dropna().unique()) - set(SPLITS)
    if bad_split:
        raise ManifestError(f"{source} has unknown splits {sorted(bad_split)}; use {SPLITS}.")
    bad_mod = set(df["modality"].dropna().unique()) - set(MODALITIES)
    if bad_mod:
        raise ManifestError(f"{source} has unknown modalities {sorted(bad_mod)}; use {MODALITIES}.")
    leaked = df.groupby("subject_id")["split"].nunique()
    if (leaked > 1).any():
        subj = leaked[leaked > 1].index[0]
        raise ManifestError(f"{source}: subject {subj!r} appears in more than one split (patient leakage).")
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write atomically as parquet."""
    validate_manifest(df, str(path))
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest parquet; a missing file names the notebook that writes it."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"No manifest at {path}; run notebooks/00_data_prep.ipynb (or build_manifest) first.")
    df = pd.read_parquet(path)
    if "image_paths" in df.columns:
        df["image_paths"] = df["image_paths"].map(lambda v: [str(x) for x in v] if v is not None else [])
    return validate_manifest(df, str(path))
