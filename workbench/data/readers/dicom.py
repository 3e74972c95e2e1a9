"""DICOM reader: radiographs (MIMIC-CXR's DICOM release) and CT series stored as slice folders.

Layout: any tree of `*.dcm` files; the folder holding them is the study. A folder of CT (or MR)
slices is one 3D study whose `image_path` is the folder (read later through MONAI's
`LoadImage` with the pydicom reader); a folder of radiographs is a 2D study whose images are
ordered frontal-first by the `ViewPosition` tag. The report is `<folder>.txt` beside the folder
(MIMIC's layout) or a `.txt` inside it. Subject: the `PatientID` tag, else the parent folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pandas as pd

from workbench.data.readers.common import keep_reported, order_by_view, rows_to_frame, study_row
from workbench.data.readers.registry import READERS
from workbench.data.reports import read_text_file
from workbench.data.skips import SkipCounter

VOLUME_MODALITIES = {"CT", "MR", "PT"}


def _report_for(folder: Path) -> Path | None:
    beside = folder.parent / f"{folder.name}.txt"
    if beside.is_file():
        return beside
    inside = sorted(folder.glob("*.txt"))
    return inside[0] if inside else None


@READERS.register("dicom")
def read_dicom(root: str | Path, *, skips: SkipCounter, dataset_name: str = "dicom", require_report: bool = True,
               **_: object) -> pd.DataFrame:
    """Studies of a DICOM tree; see the module docstring."""
    import pydicom

    root = Path(root)
    files = sorted(root.rglob("*.dcm"))
    if not files:
        raise FileNotFoundError(f"No .dcm files under {root}; check data_root.")
    folders: Dict[Path, List[tuple]] = {}
    for path in files:
        if path.stat().st_size == 0:
            skips.skip("empty_image_file", path, "zero bytes")
            continue
        try:
            header = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001
            skips.skip("unreadable_dicom", path, f"{type(exc).__name__}: {exc}")
            continue
        folders.setdefault(path.parent, []).append((path, header))
    names = [f.name for f in folders]
    rows = []
    for folder, members in sorted(folders.items()):
        study_id = folder.name if names.count(folder.name) == 1 else str(folder.relative_to(root))
        first = members[0][1]
        subject = str(getattr(first, "PatientID", "") or folder.parent.name)
        report_path = _report_for(folder)
        if report_path is None and require_report:
            skips.skip("missing_report", folder, f"no {folder.name}.txt beside it and no .txt inside")
            continue
        text = read_text_file(report_path, skips) if report_path is not None else ""
        modality = str(getattr(first, "Modality", "")).upper()
        if modality in VOLUME_MODALITIES and len(members) > 1:
            row = study_row(subject_id=subject, study_id=study_id, dataset=dataset_name, modality="ct",
                            image_paths=[str(folder)], view="axial", text=text, report_source=str(report_path))
        else:
            views = {str(p): str(getattr(h, "ViewPosition", "") or "") for p, h in members}
            ordered = order_by_view(list(views), views)
            row = study_row(subject_id=subject, study_id=study_id, dataset=dataset_name, modality="cxr",
                            image_paths=ordered, view=views[ordered[0]], text=text, report_source=str(report_path))
        rows.append(row)
    return rows_to_frame(keep_reported(rows, skips) if require_report else
                         [{k: v for k, v in r.items() if k != "report_source"} for r in rows], skips)
