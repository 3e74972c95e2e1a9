"""Helpers every reader shares: cheap file checks and turning rows into a manifest-shaped frame.

Checks here are cheap (existence, size, a header read). Full decoding happens once, when the
image cache is built (`workbench.data.cache`), which counts what fails to decode there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pandas as pd

from workbench.data.manifest import REQUIRED_COLUMNS
from workbench.data.reports import parse_report
from workbench.data.skips import SkipCounter

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
FRONTAL_ORDER = ("PA", "AP", "FRONTAL", "PA LLD", "AP AXIAL", "AP LLD", "AP RLD", "PA RLD")


def is_volume_path(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(VOLUME_SUFFIXES) or Path(path).is_dir()


def _file_with_bytes(path: Path, skips: SkipCounter) -> bool:
    """True when `path` is a file with content; a missing or zero-byte file is skipped and counted."""
    if not path.is_file():
        skips.skip("missing_image", path, "file not found")
        return False
    if path.stat().st_size == 0:
        skips.skip("empty_image_file", path, "zero bytes")
        return False
    return True


def check_image(path: str | Path, skips: SkipCounter) -> bool:
    """True when a 2D image file exists, is non-empty and its header opens; else skip + count."""
    path = Path(path)
    if not _file_with_bytes(path, skips):
        return False
    try:
        if path.suffix.lower() == ".dcm":
            import pydicom

            pydicom.dcmread(str(path), stop_before_pixels=True)
        else:
            from PIL import Image

            with Image.open(path) as img:
                img.size  # noqa: B018 - reading the header is the check
    except Exception as exc:  # noqa: BLE001 - any other decoder error means the same to the user
        if type(exc).__name__ == "DecompressionBombError":  # a valid file, only too large: not "corrupt"
            skips.skip("oversized_image", path, str(exc))
            return False
        skips.skip("unreadable_image", path, f"{type(exc).__name__}: {exc}")
        return False
    return True


def check_volume(path: str | Path, skips: SkipCounter) -> bool:
    """True when a NIfTI file's header reads (or a DICOM series folder holds slices); else skip."""
    path = Path(path)
    if path.is_dir():
        if not any(p.is_file() for p in path.iterdir()):
            skips.skip("missing_image", path, "empty DICOM series folder")
            return False
        return True
    if not _file_with_bytes(path, skips):
        return False
    try:
        import nibabel as nib

        img = nib.load(str(path))
        if len(img.shape) < 3:
            raise ValueError(f"expected a 3D volume, got shape {img.shape}")
    except Exception as exc:  # noqa: BLE001
        skips.skip("unreadable_volume", path, f"{type(exc).__name__}: {exc}")
        return False
    return True


def order_by_view(images: Sequence[str], views: Dict[str, str]) -> List[str]:
    """Frontal first (PA, then AP), then the rest; stable by name within a view."""
    def rank(p: str) -> tuple:
        view = views.get(p, "").upper()
        return (FRONTAL_ORDER.index(view) if view in FRONTAL_ORDER else len(FRONTAL_ORDER), p)

    return sorted(images, key=rank)


def study_row(*, subject_id: Any, study_id: Any, dataset: str, modality: str, image_paths: Sequence[str],
              text: Any = None, findings: Any = None, impression: Any = None, view: str = "",
              **extra: Any) -> Dict[str, Any]:
    """One manifest row; sections parsed from `text` unless given."""
    sections = parse_report(text, findings, impression)
    paths = [str(p) for p in image_paths]
    return {
        "subject_id": str(subject_id), "study_id": str(study_id), "dataset": dataset, "modality": modality,
        "view": view or "", "image_path": paths[0] if paths else "", "image_paths": paths,
        "findings": sections.findings, "impression": sections.impression, "report": sections.report, **extra,
    }


def keep_reported(rows: Iterable[Dict[str, Any]], skips: SkipCounter, where: str = "report") -> List[Dict[str, Any]]:
    """Drop rows whose report is empty (counted as `empty_report`, naming `report_source`)."""
    kept = []
    for row in rows:
        source = row.pop("report_source", None)
        if not row["report"]:
            skips.skip("empty_report", source or row["study_id"], f"no {where} text")
            continue
        kept.append(row)
    return kept


def rows_to_frame(rows: List[Dict[str, Any]], skips: SkipCounter) -> pd.DataFrame:
    """Rows -> DataFrame with the required columns first; duplicate study ids are skipped."""
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=[c for c in REQUIRED_COLUMNS if c != "split"])
    dup = df["study_id"].duplicated()
    for study in df.loc[dup, "study_id"]:
        skips.skip("duplicate_study", study, "study id seen twice")
    df = df.loc[~dup].reset_index(drop=True)
    first = [c for c in REQUIRED_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def find_file(roots: Iterable[Optional[Path]], names: Sequence[str]) -> Optional[Path]:
    """The first of `names` (also with .gz) found directly in one of `roots`."""
    for root in roots:
        if root is None:
            continue
        for name in names:
            for candidate in (Path(root) / name, Path(root) / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None
