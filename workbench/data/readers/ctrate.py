"""CT-RATE reader (chest CT volumes with English reports, metadata and 18 abnormality labels).

Layout as released on the dataset page (the `dataset/` level may be left out):

    dataset/{train,valid}/<case>/<case>_<recon>/<case>_<recon>_<k>.nii.gz
    radiology_text_reports/{train,validation}_reports.csv     VolumeName, Findings_EN, Impressions_EN
    metadata/{train,valid}_metadata.csv                        VolumeName, RescaleSlope, RescaleIntercept,
                                                               XYSpacing ("[0.75, 0.75]"), ZSpacing, ...
    multi_abnormality_labels/{train,valid}_predicted_labels.csv  VolumeName + the 18 abnormalities (0/1)

Tables may be `.csv` or `.csv.gz` anywhere up to two folders deep; each is recognised by its
header. One scan session (`<case>_<recon>`) is a study whose volumes are its reconstructions;
the case is the subject. The folders are the official split: `train` stays train and `valid`
(the set CT-CLIP reports on) becomes test; val subjects are drawn from train.

The volumes store raw values: Hounsfield units are `raw * RescaleSlope + RescaleIntercept`, and
the voxel spacing lives in the metadata, not in the NIfTI header. Both go into the manifest
(`rescale_slope`, `rescale_intercept`, `spacing_x/y/z` in mm, of the study's primary volume) and
the volume cache applies them (`workbench.data.transforms`). A volume without a metadata row is
skipped (`missing_metadata`): its intensities would be off by the intercept (~1024 HU). The
label table becomes `label_<Name>` columns (`workbench.data.labels.label_column`) with `label_source`
`ctrate_predicted`, as MIMIC's CheXpert table does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from workbench.data.labels import label_column
from workbench.data.readers.bimcv import volume_stem
from workbench.data.readers.common import check_volume, keep_reported, rows_to_frame, study_row
from workbench.data.readers.registry import READERS
from workbench.data.reports import read_csv_header, read_csv_text
from workbench.data.skips import SkipCounter

FOLDER_SPLITS = {"train": "train", "valid": "test", "validation": "test", "test": "test"}
REPORT_COLUMNS = ("VolumeName", "Findings_EN", "Impressions_EN")
METADATA_COLUMNS = ("VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing")
# CT-RATE's 18 abnormalities, as its label tables (and the `ctrate18` OBER label set) name them.
CTRATE_LABELS = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
)
LABEL_SOURCE = "ctrate_predicted"
_FLOAT_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _tables(root: Path) -> Dict[str, List[Path]]:
    """CSV / CSV.gz tables up to two folders deep, sorted into reports, metadata and labels."""
    found: Dict[str, List[Path]] = {"reports": [], "metadata": [], "labels": []}
    for pattern in ("*.csv*", "*/*.csv*", "*/*/*.csv*"):
        for path in sorted(root.glob(pattern)):
            if not path.name.lower().endswith((".csv", ".csv.gz")):
                continue
            header = set(read_csv_header(path))
            if "VolumeName" not in header:
                continue
            if "Findings_EN" in header:
                found["reports"].append(path)
            elif {"RescaleSlope", "RescaleIntercept"} <= header:
                found["metadata"].append(path)
            elif len(header & set(CTRATE_LABELS)) >= 3:
                found["labels"].append(path)
    return found


def parse_spacing(value: object) -> List[float]:
    """'[0.75, 0.75]', '[0.75 0.75]', '0.75' or 0.75 -> floats (empty when nothing parses)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [float(x) for x in _FLOAT_RE.findall(str(value))]


def _metadata(tables: List[Path], skips: SkipCounter) -> Dict[str, Dict[str, float]]:
    """volume stem -> rescale slope / intercept and spacing (mm); rows that do not parse are left out."""
    out: Dict[str, Dict[str, float]] = {}
    for path in tables:
        table = read_csv_text(path, skips, dtype=str, required=METADATA_COLUMNS, table="CT-RATE's metadata table")
        for rec in table.to_dict("records"):
            xy, z = parse_spacing(rec["XYSpacing"]), parse_spacing(rec["ZSpacing"])
            try:
                slope, intercept = float(rec["RescaleSlope"]), float(rec["RescaleIntercept"])
            except (TypeError, ValueError):
                continue
            if not xy or not z or not np.isfinite([slope, intercept, *xy, z[0]]).all():
                continue
            out[volume_stem(rec["VolumeName"])] = {
                "rescale_slope": slope, "rescale_intercept": intercept,
                "spacing_x": xy[0], "spacing_y": xy[1] if len(xy) > 1 else xy[0], "spacing_z": z[0]}
    return out


def _labels(tables: List[Path], skips: SkipCounter) -> Dict[str, Dict[str, float]]:
    """volume stem -> label_<Name> values (1 / 0; NaN where the cell is empty)."""
    out: Dict[str, Dict[str, float]] = {}
    for path in tables:
        table = read_csv_text(path, skips, required=("VolumeName",), table="CT-RATE's label table")
        names = [c for c in table.columns if c in CTRATE_LABELS]
        values = table[names].apply(pd.to_numeric, errors="coerce").astype("float64")
        for volume, row in zip(table["VolumeName"].astype(str), values.to_dict("records")):
            out[volume_stem(volume)] = {label_column(n): row[n] for n in names}
    return out


def _volume_folders(root: Path) -> List[Tuple[Path, str]]:
    """(folder, official split) for each split folder present, under `dataset/` or directly."""
    out = []
    for base in (root / "dataset", root):
        for folder, split in FOLDER_SPLITS.items():
            if (base / folder).is_dir():
                out.append((base / folder, split))
        if out:
            return out
    return out


@READERS.register("ctrate")
def read_ctrate(root: str | Path, *, skips: SkipCounter, dataset_name: str = "ctrate", check_images: bool = True,
                require_metadata: bool = True, **_: object) -> pd.DataFrame:
    """Studies of a CT-RATE tree; see the module docstring for the layout.

    `require_metadata=False` keeps volumes without a metadata row, read as their NIfTI header
    says (for trees whose volumes were already converted to HU).
    """
    root = Path(root)
    tables = _tables(root)
    if not tables["reports"]:
        raise FileNotFoundError(f"No CT-RATE reports table (columns {', '.join(REPORT_COLUMNS)}; .csv or .csv.gz, "
                                f"e.g. radiology_text_reports/train_reports.csv) under {root}.")
    reports: Dict[str, dict] = {}
    for table_path in tables["reports"]:
        for rec in read_csv_text(table_path, skips, required=("VolumeName",),
                                 table="CT-RATE's report table").to_dict("records"):
            reports[volume_stem(rec["VolumeName"])] = {**rec, "_source": f"{table_path} (VolumeName {rec['VolumeName']})"}
    metadata = _metadata(tables["metadata"], skips)
    labels = _labels(tables["labels"], skips)
    if require_metadata and not tables["metadata"]:
        raise FileNotFoundError(
            f"No CT-RATE metadata table (columns {', '.join(METADATA_COLUMNS)}, e.g. metadata/train_metadata.csv) "
            f"under {root}: without it every intensity is off by the rescale intercept. Add the table, or pass "
            "require_metadata=False for volumes already stored in HU with their spacing in the header.")
    sessions: Dict[tuple, List[Path]] = {}
    for folder, split in _volume_folders(root):
        for vol in sorted(folder.glob("*/*/*.nii*")):
            sessions.setdefault((split, vol.parent.parent.name, vol.parent.name), []).append(vol)
    if not sessions:
        raise FileNotFoundError(f"No volumes under {root}/[dataset/]{{train,valid}}/<case>/<case>_<recon>/*.nii.gz.")
    rows = []
    for (split, case, session), volumes in sorted(sessions.items()):
        volumes = [v for v in volumes if not check_images or check_volume(v, skips)]
        if require_metadata:
            for v in [v for v in volumes if volume_stem(v) not in metadata]:
                skips.skip("missing_metadata", v, "no usable VolumeName row in the metadata table")
            volumes = [v for v in volumes if volume_stem(v) in metadata]
        if not volumes:
            continue
        rec: Optional[dict] = next((reports[volume_stem(v)] for v in volumes if volume_stem(v) in reports), None)
        if rec is None:
            skips.skip("missing_report", volumes[0], "no VolumeName row in the reports table")
            continue
        primary = volume_stem(volumes[0])
        extra = dict(metadata.get(primary, {}))
        if labels:
            label_row = next((labels[volume_stem(v)] for v in volumes if volume_stem(v) in labels), None)
            if label_row is not None:
                extra.update(label_row, label_source=LABEL_SOURCE)
        rows.append(study_row(subject_id=case, study_id=session, dataset=dataset_name, modality="ct",
                              image_paths=[str(v) for v in volumes], view="axial", findings=rec.get("Findings_EN"),
                              impression=rec.get("Impressions_EN"), official_split=split,
                              report_source=rec["_source"], **extra))
    return rows_to_frame(keep_reported(rows, skips), skips)
