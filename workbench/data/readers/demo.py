"""The embedded demo dataset: phantom radiographs in the MIMIC layout, phantom CTs in the
BIMCV-R layout, and the generator's ground truth.

Layout (written by `workbench.data.phantom.generate_demo`): `root/mimic/` (read by the MIMIC
reader), `root/bimcv/` (read by the BIMCV-R reader) and `root/ground_truth.parquet` (study_id,
gt, finding_boxes, regions, mask_path relative to root). The ground truth joins by study id and
becomes `label_<Name>` columns over `DEMO_LABELS` (present 1, absent 0, uncertain -1, not in the
ground truth NaN), so every later layer has labels on the demo data without the labeler.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.labels import DEMO_LABELS, label_column
from workbench.data.readers.bimcv import read_bimcv
from workbench.data.readers.mimic import read_mimic
from workbench.data.readers.registry import READERS
from workbench.data.skips import SkipCounter

GT_FILE = "ground_truth.parquet"
GT_COLUMNS = ("gt", "finding_boxes", "regions", "mask_path")
ASSERTION_VALUES = {"present": 1.0, "positive": 1.0, "absent": 0.0, "negative": 0.0, "uncertain": -1.0}


def assertion_value(entry: Any) -> float:
    """A gt entry ({'assertion': 'present', ...}, a bare string or a number) -> 1 / 0 / -1 / NaN."""
    if isinstance(entry, dict):
        entry = entry.get("assertion", entry.get("status"))
    if isinstance(entry, bool):
        return float(entry)
    if isinstance(entry, (int, float)) and not (isinstance(entry, float) and np.isnan(entry)):
        return float(entry)
    if isinstance(entry, str):
        return ASSERTION_VALUES.get(entry.strip().lower(), np.nan)
    return np.nan


def demo_labels(gt_json: Any) -> dict:
    """label_<Name> -> value over DEMO_LABELS from one study's gt JSON string."""
    gt = json.loads(gt_json) if isinstance(gt_json, str) and gt_json else {}
    return {label_column(name): assertion_value(gt.get(name, gt.get(name.replace("_", " ")))) for name in DEMO_LABELS}


@READERS.register("demo")
def read_demo(root: str | Path, *, skips: SkipCounter, check_images: bool = True, **_: object) -> pd.DataFrame:
    """The phantom dataset: MIMIC-layout radiographs + BIMCV-layout CTs + ground truth."""
    root = Path(root)
    gt_path = root / GT_FILE
    if not (root / "mimic").is_dir() or not gt_path.is_file():
        raise FileNotFoundError(f"{root} is not a demo dataset (needs mimic/, bimcv/ and {GT_FILE}); generate one "
                                "with workbench.data.phantom.generate_demo(root) or leave data_root empty.")
    parts = [read_mimic(root / "mimic", skips=skips, dataset_name="demo", check_images=check_images)]
    if any((root / "bimcv").glob("CT*/ct/*.nii*")):  # a 2D-only demo (n_ct_studies=0) has none
        parts.append(read_bimcv(root / "bimcv", skips=skips, dataset_name="demo", check_images=check_images))
    df = pd.concat(parts, ignore_index=True)
    gt = pd.read_parquet(gt_path)
    gt = gt.assign(study_id=gt["study_id"].astype(str))
    keep = ["study_id"] + [c for c in GT_COLUMNS if c in gt.columns]
    gt = gt[keep].drop_duplicates("study_id")
    if "mask_path" in gt.columns:
        gt["mask_path"] = [str((root / p).resolve()) if isinstance(p, str) and p else "" for p in gt["mask_path"]]
    labels = pd.DataFrame([demo_labels(v) for v in gt.get("gt", pd.Series([""] * len(gt)))], index=gt.index)
    gt = pd.concat([gt, labels], axis=1)
    df = df.merge(gt, on="study_id", how="left")
    for col in GT_COLUMNS:
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    return df
