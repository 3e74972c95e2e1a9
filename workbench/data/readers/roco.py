"""ROCO reader (radiology figures from PubMed Central with their captions).

Layout: `radiology{train,val,test}data.csv` (columns `id, name, caption`) anywhere under
`data_root` (as released: `data/<split>/radiology/`), images in an `images/` folder beside each
CSV (or beside the CSV itself). The file a CSV is named after is the official split. Missing and
zero-byte images are dropped and counted. ROCO has no patient ids: figures of one article
(the `PMCnnnn` prefix of the image name) are treated as one subject, so an article never
straddles two splits.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from workbench.data.readers.common import check_image, keep_reported, rows_to_frame, study_row
from workbench.data.readers.registry import READERS
from workbench.data.reports import read_csv_text
from workbench.data.skips import SkipCounter

_CSV_RE = re.compile(r"^radiology(train|val|validation|test)data\.csv$", re.IGNORECASE)
_ARTICLE_RE = re.compile(r"^(PMC\d+)_")


@READERS.register("roco")
def read_roco(root: str | Path, *, skips: SkipCounter, dataset_name: str = "roco", check_images: bool = True,
              **_: object) -> pd.DataFrame:
    """Image-caption pairs of a ROCO tree; see the module docstring for the layout."""
    root = Path(root)
    tables = sorted(p for p in root.rglob("radiology*data.csv") if _CSV_RE.match(p.name))
    if not tables:
        raise FileNotFoundError(f"No radiology{{train,val,test}}data.csv under {root}; check data_root (ROCO layout).")
    rows = []
    for table_path in tables:
        split = _CSV_RE.match(table_path.name).group(1).lower()  # type: ignore[union-attr]
        table = read_csv_text(table_path, skips, dtype=str, required=("id", "name", "caption"),
                              table="a ROCO split table")
        image_dir = table_path.parent / "images" if (table_path.parent / "images").is_dir() else table_path.parent
        for rid, name, caption in zip(table["id"], table["name"], table["caption"]):
            path = image_dir / str(name)
            if check_images and not check_image(path, skips):
                continue
            article = _ARTICLE_RE.match(str(name))
            rows.append(study_row(subject_id=article.group(1) if article else rid, study_id=rid, dataset=dataset_name,
                                  modality="cxr", image_paths=[str(path)], text=caption, official_split=split,
                                  report_source=f"{table_path} (id {rid})"))
    return rows_to_frame(keep_reported(rows, skips, "caption"), skips)
