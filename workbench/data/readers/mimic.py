"""MIMIC-CXR(-JPG) reader.

Layout (as released): `files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg` with the report beside the
study folder as `files/pXX/pNNNNNNNN/sNNNNNNNN.txt`; `files/` may be left out, and images and
reports may live under two roots (MedTrim's README layout: `report_root`). The official CSVs,
when present beside `files/`: `mimic-cxr-2.0.0-split.csv` (wins over the drawn split),
`-metadata.csv` (ViewPosition per dicom_id: the frontal image becomes `image_path`), and
`-chexpert.csv` / `-negbio.csv` (labels merged as `label_<Name>` with `label_source`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from workbench.data.readers.common import (IMAGE_SUFFIXES, check_image, find_file, keep_reported,
                                           order_by_view, rows_to_frame, study_row)
from workbench.data.readers.registry import READERS
from workbench.data.reports import read_csv_text, read_text_file
from workbench.data.skips import SkipCounter
from workbench.data.labels import label_column

_STUDY_RE = re.compile(r"^s\d+$")
_SUBJECT_RE = re.compile(r"^p\d+$")
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
LABEL_CSVS = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv", "negbio": "mimic-cxr-2.0.0-negbio.csv"}


def subject_key(value: object) -> str:
    """10000032 / 'p10000032' -> 'p10000032'."""
    text = str(value).strip()
    return text if text.startswith("p") else f"p{int(float(text)):08d}"


def study_key(value: object) -> str:
    """50414267 / 's50414267' -> 's50414267'."""
    text = str(value).strip()
    return text if text.startswith("s") else f"s{int(float(text)):08d}"


def _tree_base(root: Path) -> Path:
    return root / "files" if (root / "files").is_dir() else root


def _scan_images(base: Path) -> Dict[tuple, List[str]]:
    studies: Dict[tuple, List[str]] = {}
    for study_dir in base.glob("p*/p*/s*"):
        if not study_dir.is_dir() or not _STUDY_RE.match(study_dir.name) or not _SUBJECT_RE.match(study_dir.parent.name):
            continue
        images = sorted(str(p) for p in study_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        studies[(study_dir.parent.name, study_dir.name)] = images
    return studies


def _scan_reports(base: Path) -> Dict[tuple, Path]:
    reports: Dict[tuple, Path] = {}
    for path in base.glob("p*/p*/s*.txt"):
        if _STUDY_RE.match(path.stem) and _SUBJECT_RE.match(path.parent.name):
            reports[(path.parent.name, path.stem)] = path
    return reports


def read_label_csv(path: Path, skips: SkipCounter) -> pd.DataFrame:
    """CheXpert/NegBio label CSV -> study_id + label_<Name> columns (1, 0, -1, NaN)."""
    labels = read_csv_text(path, skips, required=("study_id",), table="a CheXpert/NegBio label table")
    names = [c for c in labels.columns if c not in ("subject_id", "study_id")]
    out = pd.DataFrame({"study_id": labels["study_id"].map(study_key)})
    for name in names:
        out[label_column(name)] = pd.to_numeric(labels[name], errors="coerce").astype("float64")
    return out.drop_duplicates("study_id")


@READERS.register("mimic")
def read_mimic(root: str | Path, *, skips: SkipCounter, report_root: str | Path = "", csv_root: str | Path = "",
               label_source: str = "auto", dataset_name: str = "mimic", check_images: bool = True,
               **_: object) -> pd.DataFrame:
    """Studies of a MIMIC-CXR tree; see the module docstring for the accepted layouts.

    `label_source`: 'auto' (CheXpert, else NegBio, when present), 'chexpert', 'negbio' or 'none'.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MIMIC root {root} does not exist; pass the folder holding files/ (or pXX/).")
    report_root_path = Path(report_root) if report_root else root
    image_base, report_base = _tree_base(root), _tree_base(report_root_path)
    images = _scan_images(image_base)
    reports = _scan_reports(report_base)
    if not images and not reports:
        raise FileNotFoundError(
            f"No MIMIC studies under {image_base} (expected pXX/pNNNNNNNN/sNNNNNNNN/*.jpg and sNNNNNNNN.txt); "
            "check data_root (and report_root when reports live elsewhere).")
    csv_roots = [Path(csv_root) if csv_root else None, root, report_root_path, root.parent]

    views: Dict[str, str] = {}
    meta_path = find_file(csv_roots, [METADATA_CSV])
    if meta_path is not None:
        meta = read_csv_text(meta_path, skips, dtype=str, required=("dicom_id", "ViewPosition"),
                             table="MIMIC-CXR-JPG's metadata table")
        views = dict(zip(meta["dicom_id"].astype(str), meta["ViewPosition"].fillna("").astype(str)))

    official: Dict[str, str] = {}
    split_path = find_file(csv_roots, [SPLIT_CSV])
    if split_path is not None:
        split = read_csv_text(split_path, skips, dtype=str, required=("study_id", "split"),
                              table="MIMIC-CXR-JPG's split table")
        official = dict(zip(split["study_id"].map(study_key), split["split"].astype(str)))

    rows = []
    for key in sorted(set(images) | set(reports)):
        subject, study = key
        if key not in reports:
            skips.skip("missing_report", report_base / subject[:3] / subject / f"{study}.txt", "no report file")
            continue
        paths = [p for p in images.get(key, []) if not check_images or check_image(p, skips)]
        if not paths:
            if key not in images or not images[key]:
                skips.skip("missing_image", image_base / subject[:3] / subject / study, "no image in the study folder")
            continue
        by_name = {p: views.get(Path(p).stem, "") for p in paths}
        ordered = order_by_view(paths, by_name)
        rows.append(study_row(subject_id=subject, study_id=study, dataset=dataset_name, modality="cxr",
                              image_paths=ordered, view=by_name[ordered[0]],
                              text=read_text_file(reports[key], skips), report_source=str(reports[key]),
                              official_split=official.get(study)))
    df = rows_to_frame(keep_reported(rows, skips), skips)

    label_paths = {name: find_file(csv_roots, [fname]) for name, fname in LABEL_CSVS.items()}
    chosen: Optional[str] = None
    if label_source == "auto":
        chosen = next((n for n in ("chexpert", "negbio") if label_paths[n] is not None), None)
    elif label_source != "none":
        if label_source not in LABEL_CSVS:
            raise ValueError(f"label_source must be auto, none or one of {sorted(LABEL_CSVS)}; got {label_source!r}.")
        if label_paths[label_source] is None:
            raise FileNotFoundError(f"No {LABEL_CSVS[label_source]} beside {root}; use label_source='auto' or 'none'.")
        chosen = label_source
    if chosen is not None and not df.empty:
        labels = read_label_csv(label_paths[chosen], skips)  # type: ignore[arg-type]
        df = df.merge(labels, on="study_id", how="left")
        df["label_source"] = chosen
    return df
