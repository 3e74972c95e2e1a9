"""IU X-ray / Open-i reader.

Layout: `indiana_reports.csv` + `indiana_projections.csv` (the Kaggle naming) or `reports.csv` +
`projections.csv` (the naming of `../shared/data/iu_xray/`). Reports have `uid, findings,
impression, ...`; projections map `uid -> filename, projection` (Frontal / Lateral). Images
are optional: looked for in `image_root`, `images/images_normalized/`, `images/` or the root
itself. When no image folder exists the reports are kept without images (counted as
`image_absent_kept`), so the text side (labeler, text retrieval) still has the real reports.
`labels_chestxray14.csv` (NegBio's manual gold labels), when present, is merged as label
columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from workbench.data.labels import label_column
from workbench.data.readers.common import check_image, keep_reported, order_by_view, rows_to_frame, study_row
from workbench.data.readers.registry import READERS
from workbench.data.reports import read_csv_text
from workbench.data.skips import SkipCounter

NAMINGS = (("indiana_reports.csv", "indiana_projections.csv"), ("reports.csv", "projections.csv"))
GOLD_LABELS = "labels_chestxray14.csv"


def _image_dir(root: Path, image_root: str | Path, filenames: List[str]) -> Optional[Path]:
    if image_root:
        path = Path(image_root)
        if not path.is_dir():
            raise FileNotFoundError(f"IU image_root {path} does not exist; leave it empty to read reports only.")
        return path
    for candidate in (root / "images" / "images_normalized", root / "images"):
        if candidate.is_dir():
            return candidate
    if any((root / name).is_file() for name in filenames[:50]):
        return root
    return None


@READERS.register("iu")
def read_iu(root: str | Path, *, skips: SkipCounter, image_root: str | Path = "", dataset_name: str = "iu",
            check_images: bool = True, **_: object) -> pd.DataFrame:
    """Reports (and images when present) of an IU X-ray folder; see the module docstring."""
    root = Path(root)
    naming = next(((r, p) for r, p in NAMINGS if (root / r).is_file()), None)
    if naming is None:
        raise FileNotFoundError(f"No IU report table in {root}: expected indiana_reports.csv or reports.csv "
                                "(with indiana_projections.csv / projections.csv).")
    reports = read_csv_text(root / naming[0], skips, required=("uid",), table="IU X-ray's report table")
    proj_path = root / naming[1]
    projections = read_csv_text(proj_path, skips, dtype=str, required=("uid", "filename", "projection"),
                                table="IU X-ray's projection table") if proj_path.is_file() else \
        pd.DataFrame(columns=["uid", "filename", "projection"])
    by_uid: Dict[str, List[tuple]] = {}
    for uid, filename, projection in zip(projections["uid"].astype(str), projections["filename"].astype(str),
                                         projections["projection"].fillna("").astype(str)):
        by_uid.setdefault(uid, []).append((filename, projection.upper()))
    image_dir = _image_dir(root, image_root, list(projections["filename"].astype(str)))

    rows = []
    for rec in reports.to_dict("records"):
        uid = str(rec["uid"])
        source = f"{root / naming[0]} (uid {uid})"
        paths: List[str] = []
        views: Dict[str, str] = {}
        if image_dir is not None:
            for filename, projection in by_uid.get(uid, []):
                path = image_dir / filename
                if not check_images or check_image(path, skips):
                    paths.append(str(path))
                    views[str(path)] = projection
            if not paths:
                skips.skip("missing_image", source, f"no readable image in {image_dir}")
                continue
            paths = order_by_view(paths, views)
        rows.append(study_row(subject_id=uid, study_id=uid, dataset=dataset_name, modality="cxr", image_paths=paths,
                              view=views.get(paths[0], "") if paths else "", findings=rec.get("findings"),
                              impression=rec.get("impression"), report_source=source))
    df = rows_to_frame(keep_reported(rows, skips), skips)
    if image_dir is None:
        for uid in df["study_id"]:
            skips.keep("image_absent_kept", f"{root / naming[0]} (uid {uid})")
    gold = root / GOLD_LABELS
    if gold.is_file() and not df.empty:
        labels = read_csv_text(gold, skips, required=("uid",), table="IU X-ray's gold label table")
        labels = labels.rename(columns={c: label_column(c) for c in labels.columns if c != "uid"})
        labels["study_id"] = labels.pop("uid").astype(str)
        for col in labels.columns:
            if col != "study_id":
                labels[col] = pd.to_numeric(labels[col], errors="coerce").astype("float64")
        df = df.merge(labels, on="study_id", how="left")
        df["label_source"] = "chestxray14_gold"
    return df
