"""CT-RATE reader (chest CT volumes with English reports).

Layout: `{train,valid}/<case>/<case>_<recon>/<volume>.nii.gz` (e.g.
`train/train_1/train_1_a/train_1_a_1.nii.gz`) and a reports CSV (anywhere up to two folders
deep) with `VolumeName`, `Findings_EN`, `Impressions_EN`. One scan session (`<case>_<recon>`)
is a study whose volumes are its reconstructions; the case is the subject. The folders are the
official split: `train` stays train and `valid` (the set CT-CLIP reports on) becomes test; val
subjects are drawn from train (see `workbench.data.splits.assign_splits`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pandas as pd

from workbench.data.readers.bimcv import volume_stem
from workbench.data.readers.common import check_volume, keep_reported, rows_to_frame, study_row
from workbench.data.readers.registry import READERS
from workbench.data.reports import read_csv_text
from workbench.data.skips import SkipCounter

FOLDER_SPLITS = {"train": "train", "valid": "test", "validation": "test", "test": "test"}
REPORT_COLUMNS = ("VolumeName", "Findings_EN", "Impressions_EN")


def _report_tables(root: Path) -> List[Path]:
    found = []
    for pattern in ("*.csv", "*/*.csv", "*/*/*.csv"):
        for path in sorted(root.glob(pattern)):
            with open(path, "rb") as fh:
                header = fh.readline().decode("utf-8", "replace")
            if "VolumeName" in header and "Findings_EN" in header:
                found.append(path)
    return found


@READERS.register("ctrate")
def read_ctrate(root: str | Path, *, skips: SkipCounter, dataset_name: str = "ctrate", check_images: bool = True,
                **_: object) -> pd.DataFrame:
    """Studies of a CT-RATE tree; see the module docstring for the layout."""
    root = Path(root)
    tables = _report_tables(root)
    if not tables:
        raise FileNotFoundError(f"No CT-RATE reports CSV (columns {', '.join(REPORT_COLUMNS)}) under {root}.")
    reports: Dict[str, dict] = {}
    for table_path in tables:
        for rec in read_csv_text(table_path, skips).to_dict("records"):
            reports[volume_stem(rec["VolumeName"])] = {**rec, "_source": f"{table_path} (VolumeName {rec['VolumeName']})"}
    sessions: Dict[tuple, List[Path]] = {}
    for folder, split in FOLDER_SPLITS.items():
        for vol in sorted((root / folder).glob("*/*/*.nii*")):
            sessions.setdefault((split, vol.parent.parent.name, vol.parent.name), []).append(vol)
    if not sessions:
        raise FileNotFoundError(f"No volumes under {root}/{{train,valid}}/<case>/<case>_<recon>/*.nii.gz.")
    rows = []
    for (split, case, session), volumes in sorted(sessions.items()):
        volumes = [v for v in volumes if not check_images or check_volume(v, skips)]
        if not volumes:
            continue
        rec = next((reports[volume_stem(v)] for v in volumes if volume_stem(v) in reports), None)
        if rec is None:
            skips.skip("missing_report", volumes[0], "no VolumeName row in the reports CSV")
            continue
        rows.append(study_row(subject_id=case, study_id=session, dataset=dataset_name, modality="ct",
                              image_paths=[str(v) for v in volumes], view="axial", findings=rec.get("Findings_EN"),
                              impression=rec.get("Impressions_EN"), official_split=split,
                              report_source=rec["_source"]))
    return rows_to_frame(keep_reported(rows, skips), skips)
