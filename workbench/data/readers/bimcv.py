"""BIMCV-R reader (3D chest CT with English reports).

Layout: `data_root/CT*/ct/*.nii.gz` and `data_root/meta/curated_ct_report_path_En.csv` with
columns `path` and `Report_en`; a report belongs to the volume with the same basename. Each volume is a
study (its basename without `.nii.gz`). The subject is the BIDS `sub-S<n>` prefix of the
basename (BIMCV's naming, e.g. `sub-S03936_ses-E08366_run-1_bp-chest_ct`), else the `CT*` folder.
Tables may be `.csv` or `.csv.gz`.

A basename found in several `CT*/ct/` folders (MedFinder's basename map silently kept the
last) is resolved by the report table's `path` when it names one of the folders; otherwise
the first folder in sorted order is kept and every other copy is counted as `duplicate_volume`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from typing import Dict, List

from workbench.data.readers.common import check_volume, find_file, keep_reported, rows_to_frame, study_row
from workbench.data.readers.registry import READERS
from workbench.data.reports import read_csv_text
from workbench.data.skips import SkipCounter

REPORT_CSV = Path("meta") / "curated_ct_report_path_En.csv"
_BIDS_SUBJECT_RE = re.compile(r"^(sub-[A-Za-z0-9]+)_")


def volume_stem(path: str | Path) -> str:
    """'.../CT0001_a.nii.gz' -> 'CT0001_a' (also .nii)."""
    name = Path(str(path)).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _pick_copy(stem: str, paths: List[Path], listed: str, root: Path, csv_path: Path, skips: SkipCounter) -> Path:
    """The copy of a volume the report table's `path` names (else the first); others are counted."""
    if len(paths) == 1:
        return paths[0]
    named = [p for p in paths if listed and p.relative_to(root).as_posix().endswith(listed.lstrip("./"))]
    keep = named[0] if len(named) == 1 else paths[0]
    for other in paths:
        if other != keep:
            skips.skip("duplicate_volume", other, f"{stem} also at {keep.relative_to(root)}; kept that one")
    return keep


@READERS.register("bimcv")
def read_bimcv(root: str | Path, *, skips: SkipCounter, report_csv: str | Path = "", dataset_name: str = "bimcv",
               check_images: bool = True, **_: object) -> pd.DataFrame:
    """Studies of a BIMCV-R tree (volumes matched to reports by basename)."""
    root = Path(root)
    csv_path = Path(report_csv) if report_csv else (find_file([root / REPORT_CSV.parent], [REPORT_CSV.name])
                                                    or root / REPORT_CSV)
    if not csv_path.is_file():
        raise FileNotFoundError(f"BIMCV-R report table {csv_path} is missing; expected columns path, Report_en "
                                f"(pass report_csv=... if it lives elsewhere).")
    table = read_csv_text(csv_path, skips, required=("path", "Report_en"), table="BIMCV-R's report table")
    reports = {volume_stem(p): text for p, text in zip(table["path"].astype(str), table["Report_en"])}
    listed = {volume_stem(p): str(p).replace("\\", "/") for p in table["path"].astype(str)}
    copies: Dict[str, List[Path]] = {}
    for path in sorted(root.glob("CT*/ct/*.nii*")):
        copies.setdefault(volume_stem(path), []).append(path)
    if not copies:
        raise FileNotFoundError(f"No volumes under {root}/CT*/ct/*.nii.gz; check data_root.")
    volumes = {stem: _pick_copy(stem, paths, listed.get(stem, ""), root, csv_path, skips)
               for stem, paths in copies.items()}
    rows = []
    for stem in sorted(set(volumes) | set(reports)):
        if stem not in volumes:
            skips.skip("missing_image", f"{csv_path} (path {stem})", "report without a volume")
            continue
        if stem not in reports:
            skips.skip("missing_report", volumes[stem], f"no row in {csv_path.name}")
            continue
        path = volumes[stem]
        if check_images and not check_volume(path, skips):
            continue
        bids = _BIDS_SUBJECT_RE.match(stem)
        rows.append(study_row(subject_id=bids.group(1) if bids else path.parent.parent.name, study_id=stem, dataset=dataset_name, modality="ct",
                              image_paths=[str(path)], view="axial", text=reports[stem],
                              report_source=f"{csv_path} (path {stem})"))
    return rows_to_frame(keep_reported(rows, skips), skips)
