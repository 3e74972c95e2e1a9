"""Small trees in the EXACT layouts MIMIC-CXR-JPG, BIMCV-R and CT-RATE are released in, with
real-style report text and the broken entries real exports hold.

Each writer returns a `TreeFacts`: the study ids a correct reader keeps and the skips (per
reason) it must count, derived from what was written, so tests assert exact counts.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

CXR_REPORTS = [
    "FINDINGS: There is a small left pleural effusion with adjacent atelectasis. No pneumothorax. "
    "Heart size is normal.\nIMPRESSION: Small left pleural effusion.",
    "FINDINGS: The lungs are clear. The cardiomediastinal silhouette is within normal limits. No acute osseous "
    "abnormality.\nIMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: The heart is moderately enlarged. Mild pulmonary vascular congestion without frank edema.\n"
    "IMPRESSION: Cardiomegaly with mild vascular congestion.",
    "FINDINGS: Right lower lobe consolidation concerning for pneumonia. No effusion.\n"
    "IMPRESSION: Right lower lobe pneumonia.",
    "FINDINGS: Endotracheal tube terminates 4 cm above the carina. Nasogastric tube courses below the diaphragm. "
    "Lungs are clear.\nIMPRESSION: Lines and tubes as described.",
    "FINDINGS: Small right apical pneumothorax. No mediastinal shift.\nIMPRESSION: Small right pneumothorax.",
]
CT_REPORTS = [
    ("Trachea and both main bronchi are open. Mediastinal main vascular structures and heart contour are normal. "
     "There is a 6 mm nodule in the right upper lobe. No pleural effusion.", "Right upper lobe nodule."),
    ("Heart size is enlarged. Pericardial effusion is not observed. Bilateral pleural effusion is seen, larger on "
     "the right, with adjacent atelectasis.", "Bilateral pleural effusion and atelectasis."),
    ("Centriacinar emphysema is seen in both lungs. Calcific atherosclerotic changes in the aorta and coronary "
     "arteries. No mass.", "Emphysema. Arterial wall calcification."),
    ("Consolidation areas with air bronchograms are seen in the lower lobe of the left lung. Mediastinal "
     "lymphadenopathy is present.", "Left lower lobe consolidation, pneumonia? Lymphadenopathy."),
    ("Ground glass opacities in both lungs with interlobular septal thickening. Mosaic attenuation pattern.",
     "Ground glass opacities and septal thickening."),
]
CTRATE_LABEL_NAMES = [
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion", "Mosaic attenuation pattern",
    "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
]


@dataclass
class TreeFacts:
    """What a correct reader keeps and skips on a written tree."""

    root: Path
    kept: List[str] = field(default_factory=list)
    skipped: Dict[str, int] = field(default_factory=dict)
    kept_reasons: Dict[str, int] = field(default_factory=dict)
    extra: Dict[str, object] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def repaired(self, reason: str) -> None:
        self.kept_reasons[reason] = self.kept_reasons.get(reason, 0) + 1


def radiograph(path: Path, seed: int, size=(96, 80)) -> Path:
    """A grayscale JPEG with some structure (a bright 'mediastinum' and two darker 'lungs')."""
    rng = np.random.default_rng(seed)
    arr = np.full(size[::-1], 40, dtype=np.uint8)
    arr[10:-10, 8:-8] = 90 + rng.integers(0, 40)
    arr[:, size[0] // 2 - 6:size[0] // 2 + 6] = 200
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


def write_gzip_csv(frame: pd.DataFrame, path: Path) -> Path:
    """A .csv.gz exactly as MIMIC ships its tables (gzip of a plain UTF-8 CSV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(frame.to_csv(index=False).encode("utf-8")))
    return path


def write_mimic_cxr_jpg(base: Path, n_good: int = 12) -> TreeFacts:
    """MIMIC-CXR-JPG 2.0.0 (`mimic-cxr-jpg/2.0.0/files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg` and
    the four `mimic-cxr-2.0.0-*.csv.gz` tables beside `files/`) plus the reports as
    `mimic-cxr-reports.zip` extracts (`files/pXX/pNNNNNNNN/sNNNNNNNN.txt`) under a second root.

    Broken entries: a corrupt JPEG (no JPEG header), a truncated JPEG (header intact), a
    zero-byte JPEG, a study without a report, an empty report, a study folder without images,
    a report without images; one report holds a cp1252 byte (kept, counted).
    """
    jpg_root, report_root = base / "mimic-cxr-jpg" / "2.0.0", base / "mimic-cxr-reports"
    facts = TreeFacts(jpg_root, extra={"report_root": report_root})
    meta, split, chexpert = [], [], []
    split_of = (["train"] * 8 + ["validate"] * 2 + ["test"] * 2)

    def study(k: int, report: bytes | None, images: int = 2, subject: int | None = None) -> tuple:
        subject = subject or 10000000 + k
        sid = 50000000 + k
        folder = jpg_root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{sid}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for v, view in enumerate(("PA", "LATERAL")[:images]):
            dicom_id = f"{k:04d}{v}a1b2c3-d4e5f6a7-b8c9d0e1-f2a3b4c5"
            paths.append(radiograph(folder / f"{dicom_id}.jpg", seed=k * 10 + v))
            meta.append({"dicom_id": dicom_id, "subject_id": subject, "study_id": sid, "PerformedProcedureStepDescription":
                         "CHEST (PA AND LAT)", "ViewPosition": view, "Rows": 80, "Columns": 96})
            split.append({"dicom_id": dicom_id, "study_id": sid, "subject_id": subject,
                          "split": split_of[k % len(split_of)]})
        if report is not None:
            rdir = report_root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
            rdir.mkdir(parents=True, exist_ok=True)
            (rdir / f"s{sid}.txt").write_bytes(report)
        return f"s{sid}", paths

    for k in range(n_good):
        text = ("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n"
                " INDICATION:  ___ with cough.\n " + CXR_REPORTS[k % len(CXR_REPORTS)])
        raw = text.encode()
        if k == 0:
            raw = raw.replace(b"No pneumothorax", b"No pneumothorax \x96 stable")  # cp1252 en dash
            facts.repaired("non_utf8_text")
        sid, _ = study(k, raw)
        facts.kept.append(sid)
        present = k % len(CXR_REPORTS)
        chexpert.append({"subject_id": 10000000 + k, "study_id": 50000000 + k,
                         "Pleural Effusion": 1.0 if present == 0 else np.nan, "Cardiomegaly": 1.0 if present == 2 else
                         np.nan, "Pneumonia": 1.0 if present == 3 else np.nan, "Support Devices":
                         1.0 if present == 4 else np.nan, "Pneumothorax": 1.0 if present == 5 else np.nan,
                         "No Finding": 1.0 if present == 1 else np.nan})
    good_report = ("FINAL REPORT\n" + CXR_REPORTS[1]).encode()
    k = n_good
    _, paths = study(k, good_report, images=1)  # corrupt JPEG: the header check fails
    paths[0].write_bytes(b"this is not a JPEG file" * 20)
    facts.skip("unreadable_image")
    _, paths = study(k + 1, good_report, images=1)  # truncated JPEG: fails when the cache decodes it
    paths[0].write_bytes(paths[0].read_bytes()[:300])
    facts.skip("unreadable_image")
    _, paths = study(k + 2, good_report, images=1)  # zero-byte JPEG
    paths[0].write_bytes(b"")
    facts.skip("empty_image_file")
    study(k + 3, None)  # no report file
    facts.skip("missing_report")
    study(k + 4, b"   \n\n  ")  # empty report
    facts.skip("empty_report")
    sid, paths = study(k + 5, good_report, images=1)  # a study folder whose image is gone
    paths[0].unlink()
    facts.skip("missing_image")
    rdir = report_root / "files" / "p19" / "p19999999"  # a report without any image folder
    rdir.mkdir(parents=True)
    (rdir / "s59999999.txt").write_bytes(good_report)
    facts.skip("missing_image")
    write_gzip_csv(pd.DataFrame(meta), jpg_root / "mimic-cxr-2.0.0-metadata.csv.gz")
    write_gzip_csv(pd.DataFrame(split), jpg_root / "mimic-cxr-2.0.0-split.csv.gz")
    write_gzip_csv(pd.DataFrame(chexpert), jpg_root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    write_gzip_csv(pd.DataFrame(chexpert).assign(**{"Pleural Effusion": np.nan}), jpg_root / "mimic-cxr-2.0.0-negbio.csv.gz")
    return facts


def ct_volume(shape=(40, 40, 24), hu_block: float = 40.0, raw_offset: float = 0.0, seed: int = 0,
              dtype=np.int16) -> np.ndarray:
    """A chest-like volume in HU (air outside, soft tissue body, darker lungs, a dense block),
    stored as `HU - raw_offset` (CT-RATE's raw values: offset -1024 -> raw = HU + 1024)."""
    rng = np.random.default_rng(seed)
    hu = np.full(shape, -1000.0)
    x, y, z = shape
    hu[4:x - 4, 4:y - 4, 2:z - 2] = 40.0  # body
    hu[8:x // 2 - 2, 8:y - 8, 4:z - 4] = -850.0  # right lung
    hu[x // 2 + 2:x - 8, 8:y - 8, 4:z - 4] = -850.0  # left lung
    hu[x // 2 - 4:x // 2 + 4, y // 2 - 4:y // 2 + 4, z // 2 - 4:z // 2 + 4] = hu_block  # a known block
    hu += rng.normal(0, 3, shape) * (hu > -900)
    return np.round(hu - raw_offset).astype(dtype)


def write_nifti(path: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), str(path))
    return path


def write_bimcv_r(root: Path, n_good: int = 10) -> TreeFacts:
    """BIMCV-R: `CT*/ct/sub-S<n>_ses-E<n>_run-1_bp-chest_ct.nii.gz` (HU-valued NIfTI with
    spacing in the header) and `meta/curated_ct_report_path_En.csv` (`path`, `Report_en`).

    Broken entries: a corrupt NIfTI (not gzip), a truncated NIfTI (header intact), an all-NaN
    volume, a volume with a few NaN voxels (repaired, counted), a report row whose volume is
    missing, a volume without a report row, an empty report, and one basename in two folders.
    """
    facts = TreeFacts(root)
    rows = []

    def volume(k: int, folder: int, data: np.ndarray | None = None) -> Path:
        name = f"sub-S{k:05d}_ses-E{k:05d}_run-1_bp-chest_ct"
        path = root / f"CT{folder:04d}" / "ct" / f"{name}.nii.gz"
        write_nifti(path, ct_volume(seed=k).astype(np.float32) if data is None else data, zooms=(1.5, 1.5, 2.5))
        return path

    for k in range(n_good):
        path = volume(k, folder=1 + k // 4)
        findings, impression = CT_REPORTS[k % len(CT_REPORTS)]
        rows.append({"path": path.relative_to(root).as_posix(), "Report_en": f"{findings} {impression}"})
        facts.kept.append(path.name[:-len(".nii.gz")])
    nan_vol = ct_volume(seed=99).astype(np.float32)
    nan_vol[:3, :3, :3] = np.nan
    path = volume(100, folder=9, data=nan_vol)  # a few NaN voxels: repaired and counted
    rows.append({"path": path.relative_to(root).as_posix(), "Report_en": CT_REPORTS[0][0]})
    facts.kept.append(path.name[:-len(".nii.gz")])
    facts.repaired("nan_voxels_repaired")
    path = volume(101, folder=9)  # corrupt: not a gzip stream at all
    path.write_bytes(b"corrupt" * 100)
    rows.append({"path": path.relative_to(root).as_posix(), "Report_en": CT_REPORTS[1][0]})
    facts.skip("unreadable_volume")
    path = volume(102, folder=9)  # truncated: the header reads, the data does not
    path.write_bytes(path.read_bytes()[:600])
    rows.append({"path": path.relative_to(root).as_posix(), "Report_en": CT_REPORTS[2][0]})
    facts.skip("unreadable_volume")
    path = volume(103, folder=9, data=np.full((40, 40, 24), np.nan, dtype=np.float32))  # all NaN
    rows.append({"path": path.relative_to(root).as_posix(), "Report_en": CT_REPORTS[3][0]})
    facts.skip("unreadable_volume")
    rows.append({"path": "CT0009/ct/sub-S00104_ses-E00104_run-1_bp-chest_ct.nii.gz", "Report_en": CT_REPORTS[4][0]})
    facts.skip("missing_image")  # a report whose volume was never exported
    volume(105, folder=9)  # a volume without a report row
    facts.skip("missing_report")
    path = volume(106, folder=9)
    rows.append({"path": path.relative_to(root).as_posix(), "Report_en": "   "})
    facts.skip("empty_report")
    first = root / rows[0]["path"]  # the same basename copied into another CT folder
    (root / "CT0008" / "ct").mkdir(parents=True, exist_ok=True)
    (root / "CT0008" / "ct" / first.name).write_bytes(first.read_bytes())
    facts.skip("duplicate_volume")
    (root / "meta").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "meta" / "curated_ct_report_path_En.csv", index=False)
    return facts


def write_ct_rate(root: Path, n_train: int = 8, n_valid: int = 3) -> TreeFacts:
    """CT-RATE as its dataset page lays it out: `dataset/{train,valid}/<case>/<case>_<recon>/
    <case>_<recon>_<k>.nii.gz` holding RAW values (HU = raw + intercept -1024) with a
    uninformative 1 mm header, `radiology_text_reports/{train,validation}_reports.csv`,
    `metadata/{train,valid}_metadata.csv` (slope, intercept, XYSpacing "[x, y]", ZSpacing) and
    `multi_abnormality_labels/{train,valid}_predicted_labels.csv`.

    Each session has two reconstructions (`_1`, `_2`). Broken entries: a session whose
    volumes lack metadata rows, a corrupt volume, a truncated volume, a session with an empty
    report (NaN findings and impression), a session without report rows.
    """
    facts = TreeFacts(root)
    reports = {"train": [], "valid": []}
    metadata = {"train": [], "valid": []}
    labels = {"train": [], "valid": []}
    rng = np.random.default_rng(0)

    def session(split: str, c: int, recon: str = "a", report: tuple | None = ("", ""), meta: bool = True,
                label: bool = True) -> List[Path]:
        case = f"{split}_{c}"
        paths = []
        for k in (1, 2):
            name = f"{case}_{recon}_{k}"
            path = write_nifti(root / "dataset" / split / case / f"{case}_{recon}" / f"{name}.nii.gz",
                               ct_volume(seed=c * 3 + k, raw_offset=-1024.0))
            paths.append(path)
            if report is not None:
                findings, impression = report
                reports[split].append({"VolumeName": f"{name}.nii.gz", "ClinicalInformation_EN": "Cough.",
                                       "Technique_EN": "Non-contrast chest CT.", "Findings_EN": findings,
                                       "Impressions_EN": impression})
            if meta:
                metadata[split].append({"VolumeName": f"{name}.nii.gz", "Manufacturer": "SIEMENS", "RescaleSlope": 1.0,
                                        "RescaleIntercept": -1024.0, "XYSpacing": "[0.75, 0.75]", "ZSpacing": 1.5,
                                        "Rows": 40, "Columns": 40})
            if label:
                values = rng.integers(0, 2, len(CTRATE_LABEL_NAMES))
                labels[split].append({"VolumeName": f"{name}.nii.gz", **dict(zip(CTRATE_LABEL_NAMES, values.tolist()))})
        return paths

    for split, n in (("train", n_train), ("valid", n_valid)):
        for c in range(1, n + 1):
            session(split, c, report=CT_REPORTS[c % len(CT_REPORTS)])
            facts.kept.append(f"{split}_{c}_a")
    session("train", 90, report=CT_REPORTS[0], meta=False)  # no metadata rows: both volumes skipped
    facts.skip("missing_metadata")
    facts.skip("missing_metadata")
    paths = session("train", 91, report=CT_REPORTS[1])  # both reconstructions corrupt
    paths[0].write_bytes(b"not a nifti" * 50)
    paths[1].write_bytes(paths[1].read_bytes()[:500])
    facts.skip("unreadable_volume")  # at the header check
    facts.skip("unreadable_volume")  # truncated: at the header check too (gzip stream ends early)
    session("train", 92, report=(np.nan, np.nan))  # empty report
    facts.skip("empty_report")
    session("train", 93, report=None)  # no report rows
    facts.skip("missing_report")
    names = {"train": "train", "valid": "validation"}
    for split in ("train", "valid"):
        for folder, table, stem in (("radiology_text_reports", reports, f"{names[split]}_reports"),
                                    ("metadata", metadata, f"{split}_metadata"),
                                    ("multi_abnormality_labels", labels, f"{split}_predicted_labels")):
            (root / folder).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(table[split]).to_csv(root / folder / f"{stem}.csv", index=False)
    facts.extra["labels"] = {row["VolumeName"]: row for split in labels for row in labels[split]}
    return facts
