"""MedTrim seed tables: `data.img_df` + `data.text_df`, joined on a study key `path_base`.

Layout (as the MedTrim seed's `project_run/data.py` reads it):
  img_df   CSV with `path_base` (the study key) and `full_path` (image file; a relative path is
           resolved against the CSV's folder); several rows of one key are the study's images
  text_df  CSV with `path_base` and `text` (the report; FINDINGS / IMPRESSION are split out
           when the headers exist, else the whole text is the report)
The study id is `path_base` itself, so the seed's triplet CSV (anchor, positive, negative
holding path_base keys) works unchanged as `data.triplet_csv` for the `medtrim` method. The
subject id is the MIMIC `pNNNNNNNN` folder in `full_path` (or `path_base`) when there is one,
else the study id. A key with no image row, no image file or no text is skipped and counted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd

from workbench.data.readers.common import (check_image, check_volume, is_volume_path, keep_reported, rows_to_frame,
                                           study_row)
from workbench.data.readers.registry import READERS
from workbench.data.reports import clean_text, read_csv_text
from workbench.data.skips import SkipCounter

KEY = "path_base"
_SUBJECT_RE = re.compile(r"^p\d{8}$")
MISSING_TABLES = ("dataset 'medtrim' reads the MedTrim seed's tables: set data.img_df (a CSV with path_base, "
                  "full_path) and data.text_df (a CSV with path_base, text), e.g. "
                  "overrides=\"data.img_df=/data/img_df.csv data.text_df=/data/text_df.csv\"")


def medtrim_tables(img_df: str | Path, text_df: str | Path, root: str | Path = "") -> Tuple[Path, Path]:
    """The two CSV paths (relative ones tried as given, then under `root`); raises naming both
    config keys when either is unset, and the file when one does not exist."""
    if not str(img_df or "") or not str(text_df or ""):
        raise ValueError(MISSING_TABLES + f" (got data.img_df={str(img_df or '')!r}, "
                         f"data.text_df={str(text_df or '')!r}).")
    paths = []
    for key, value in (("data.img_df", img_df), ("data.text_df", text_df)):
        path = Path(value)
        if not path.is_file() and not path.is_absolute() and str(root) and (Path(root) / path).is_file():
            path = Path(root) / path
        if not path.is_file():
            raise FileNotFoundError(f"{key}={str(value)!r}: no such CSV file.")
        paths.append(path)
    return paths[0], paths[1]


def subject_of(*paths: str) -> str:
    """The first MIMIC subject folder (`p` + 8 digits) among the paths' components, or ''."""
    for path in paths:
        for part in re.split(r"[\\/]", str(path)):
            if _SUBJECT_RE.match(part):
                return part
    return ""


def _table(path: Path, columns: Tuple[str, str], skips: SkipCounter) -> pd.DataFrame:
    table = read_csv_text(path, skips, dtype=str, keep_default_na=False, required=columns,
                          table="MedTrim's tables (img_df: path_base, full_path; text_df: path_base, text)")
    table[KEY] = table[KEY].str.strip()
    return table[table[KEY] != ""]


@READERS.register("medtrim")
def read_medtrim(root: str | Path, *, skips: SkipCounter, img_df: str | Path = "", text_df: str | Path = "",
                 dataset_name: str = "medtrim", check_images: bool = True, **_: object) -> pd.DataFrame:
    """Studies of the MedTrim seed's two tables; see the module docstring."""
    img_path, text_path = medtrim_tables(img_df, text_df, root)
    images = _table(img_path, (KEY, "full_path"), skips)
    texts = _table(text_path, (KEY, "text"), skips).drop_duplicates(KEY)  # first report of a key
    text_of: Dict[str, str] = dict(zip(texts[KEY], texts["text"]))
    files: Dict[str, List[str]] = {}
    for key, name in zip(images[KEY], images["full_path"]):
        if clean_text(name):
            path = Path(name.strip())
            files.setdefault(key, []).append(str(path if path.is_absolute() else img_path.parent / path))
    rows = []
    for key in files:
        if key not in text_of:
            skips.skip("missing_report", f"{text_path} ({KEY} {key})", "no text row for this key")
            continue
        paths = files[key]
        ct = is_volume_path(paths[0])
        if check_images:
            paths = [p for p in paths if (check_volume if ct else check_image)(p, skips)]
        if not paths:
            continue
        rows.append(study_row(subject_id=subject_of(paths[0], key) or key, study_id=key, dataset=dataset_name,
                              modality="ct" if ct else "cxr", image_paths=paths, text=text_of[key],
                              report_source=f"{text_path} ({KEY} {key})"))
    for key in sorted(text_of.keys() - files.keys()):
        skips.skip("missing_image", f"{img_path} ({KEY} {key})", "no image row for this key")
    return rows_to_frame(keep_reported(rows, skips), skips)
