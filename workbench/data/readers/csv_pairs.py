"""Generic CSV reader: one row per (image, text) pair with a column mapping.

For any local collection of pairs, e.g. `../shared/data/covid_cxr_notes/metadata.csv`
(`filename`, `clinical_notes`, subject `patientid`). `data_root` is the CSV file or a folder
holding one CSV (or `metadata.csv`). Relative image paths are looked up under `image_root`,
the CSV's folder, and its `images/` subfolder. Rows with an empty text are dropped and counted.
"""

from __future__ import annotations

from pathlib import Path
import pandas as pd

from workbench.data.readers.common import check_image, check_volume, is_volume_path, keep_reported, rows_to_frame, \
    study_row
from workbench.data.readers.registry import READERS
from workbench.data.reports import read_csv_text
from workbench.data.skips import SkipCounter


def _csv_file(root: Path, csv_path: str | Path) -> Path:
    if csv_path:
        return Path(csv_path)
    if root.is_file():
        return root
    if (root / "metadata.csv").is_file():
        return root / "metadata.csv"
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise FileNotFoundError(f"Cannot tell which CSV in {root} holds the pairs ({[p.name for p in found]}); "
                                "pass csv_path=... (or data_root pointing at the file).")
    return found[0]


def _resolve(name: str, bases: list) -> Path:
    path = Path(name)
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return base / path
    return bases[0] / path


@READERS.register("csv")
def read_csv_pairs(root: str | Path, *, skips: SkipCounter, csv_path: str | Path = "", image_column: str = "filename",
                   text_column: str = "clinical_notes", subject_column: str = "patientid",
                   study_column: str = "", findings_column: str = "", impression_column: str = "",
                   split_column: str = "", view_column: str = "view", image_root: str | Path = "",
                   modality: str = "cxr", dataset_name: str = "csv", check_images: bool = True,
                   **_: object) -> pd.DataFrame:
    """Pairs from a CSV; column names are options (defaults fit covid_cxr_notes)."""
    path = _csv_file(Path(root), csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"Pairs CSV {path} does not exist.")
    needed = [c for c in (image_column, subject_column, study_column, split_column) if c]
    if not findings_column and not impression_column:
        needed.append(text_column)
    table = read_csv_text(path, skips, required=needed + [c for c in (findings_column, impression_column) if c],
                          table="the pairs reader (map columns with data.csv_*_column in the config)")
    bases = [Path(image_root)] if image_root else []
    bases += [path.parent, path.parent / "images"]
    rows = []
    for number, rec in enumerate(table.to_dict("records")):
        image = _resolve(str(rec[image_column]), bases)
        if check_images:
            check = check_volume if (modality == "ct" or is_volume_path(image)) else check_image
            if not check(image, skips):
                continue
        study = str(rec[study_column]) if study_column else str(Path(str(rec[image_column])).with_suffix(""))
        view = rec.get(view_column) if view_column in table.columns else ""
        rows.append(study_row(subject_id=rec[subject_column], study_id=study, dataset=dataset_name, modality=modality,
                              image_paths=[str(image)], view="" if pd.isna(view) else str(view),
                              text=rec.get(text_column), findings=rec.get(findings_column) if findings_column else None,
                              impression=rec.get(impression_column) if impression_column else None,
                              official_split=rec.get(split_column) if split_column else None,
                              report_source=f"{path} (row {number + 2})"))
    return rows_to_frame(keep_reported(rows, skips), skips)
