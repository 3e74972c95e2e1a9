"""Each reader on a small tree in its documented layout, bad-input behaviour, and the real samples."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import shared_data
from workbench.data import BadInputError, build_manifest, list_readers, skip_summary
from workbench.data.reports import parse_report, read_text_file
from workbench.data.skips import SkipCounter
from workbench.registry import UnknownNameError

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 INDICATION:  Cough.
 FINDINGS:  There is a small left pleural effusion.  No pneumothorax.
 IMPRESSION:  Small left effusion.
"""


def write_jpeg(path: Path, value: int = 120, size: tuple = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full(size[::-1], value, dtype=np.uint8)
    arr[5:15, 5:20] = 255 - value
    Image.fromarray(arr).save(path, quality=95)
    return path


def write_nifti(path: Path, shape=(20, 20, 12), hu: float = 40.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    vol = np.full(shape, -1000, dtype=np.int16)
    vol[4:16, 4:16, 2:10] = hu
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    return path


def mimic_study(base: Path, subject: int, study: int, views=("PA", "LATERAL"), report: str | bytes = REPORT,
                report_base: Path | None = None) -> list:
    sdir = base / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
    rows = []
    for k, view in enumerate(views):
        dicom_id = f"d{study}{k}"
        write_jpeg(sdir / f"{dicom_id}.jpg", value=60 + 40 * k)
        rows.append({"dicom_id": dicom_id, "subject_id": subject, "study_id": study, "ViewPosition": view})
    rdir = (report_base or base) / f"p{str(subject)[:2]}" / f"p{subject}"
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / f"s{study}.txt").write_bytes(report if isinstance(report, bytes) else report.encode())
    return rows


def test_registry_names_every_source_and_rejects_unknown_ones(tmp_path):
    assert set(list_readers()) >= {"demo", "mimic", "bimcv", "ctrate", "roco", "iu", "folders", "csv", "dicom"}
    with pytest.raises(UnknownNameError, match="known readers"):
        build_manifest("mimik", tmp_path)


def test_mimic_files_layout_uses_official_split_views_and_chexpert_labels(tmp_path):
    meta = []
    meta += mimic_study(tmp_path / "files", 10000001, 50000001, views=("LATERAL", "PA"))
    meta += mimic_study(tmp_path / "files", 10000002, 50000002, views=("AP",))
    meta += mimic_study(tmp_path / "files", 10000003, 50000003, views=("PA",))
    pd.DataFrame(meta).to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv", index=False)
    split = pd.DataFrame([{"dicom_id": m["dicom_id"], "study_id": m["study_id"], "subject_id": m["subject_id"],
                           "split": {50000001: "test", 50000002: "validate", 50000003: "train"}[m["study_id"]]}
                          for m in meta])
    split.to_csv(tmp_path / "mimic-cxr-2.0.0-split.csv", index=False)
    pd.DataFrame({"subject_id": [10000001, 10000002], "study_id": [50000001, 50000002],
                  "Pleural Effusion": [1.0, np.nan], "Edema": [-1.0, 0.0]}).to_csv(
        tmp_path / "mimic-cxr-2.0.0-chexpert.csv", index=False)

    df = build_manifest("mimic", tmp_path, seed=0).set_index("study_id")
    assert list(df.index) == ["s50000001", "s50000002", "s50000003"]
    first = df.loc["s50000001"]
    assert first["subject_id"] == "p10000001"
    assert first["view"] == "PA" and first["image_path"].endswith("d500000011.jpg")
    assert len(first["image_paths"]) == 2 and first["image_paths"][0] == first["image_path"]
    assert first["findings"] == "There is a small left pleural effusion. No pneumothorax."
    assert first["impression"] == "Small left effusion."
    assert df["split"].to_dict() == {"s50000001": "test", "s50000002": "val", "s50000003": "train"}
    assert first["label_Pleural_Effusion"] == 1.0 and first["label_Edema"] == -1.0
    assert math.isnan(df.loc["s50000002", "label_Pleural_Effusion"]) and df.loc["s50000002", "label_Edema"] == 0.0
    assert math.isnan(df.loc["s50000003", "label_Edema"])
    assert set(df["label_source"]) == {"chexpert"}


def test_mimic_reports_under_a_separate_root_without_files_folder(tmp_path):
    images, reports = tmp_path / "jpg", tmp_path / "reports"
    for k in range(6):
        mimic_study(images, 10000010 + k, 50000010 + k, views=("PA",), report_base=reports / "files")
    df = build_manifest("mimic", images, report_root=reports, seed=1)
    assert len(df) == 6
    assert all(Path(p).is_relative_to(images) for p in df["image_path"])
    assert set(df["view"]) == {""}  # no metadata CSV: view unknown
    assert df["report"].str.contains("effusion").all()


def test_mimic_missing_report_is_skipped_and_counted_and_strict_names_the_study(tmp_path):
    mimic_study(tmp_path, 10000001, 50000001)
    mimic_study(tmp_path, 10000002, 50000002)
    mimic_study(tmp_path, 10000003, 50000003)
    (tmp_path / "p10" / "p10000002" / "s50000002.txt").unlink()
    df = build_manifest("mimic", tmp_path)
    assert "s50000002" not in set(df["study_id"])
    assert df.attrs["skips"] == {"missing_report": 1}
    assert skip_summary(df).to_dict("records")[0]["action"] == "skipped"
    with pytest.raises(BadInputError, match=r"s50000002\.txt.*missing report"):
        build_manifest("mimic", tmp_path, strict=True)


def test_empty_nan_and_non_utf8_reports(tmp_path):
    mimic_study(tmp_path, 10000001, 50000001, report="   \n  ")
    mimic_study(tmp_path, 10000002, 50000002, report="FINDINGS: Heart size normal. IMPRESSION: No acute\xe9 disease.".encode("cp1252"))
    mimic_study(tmp_path, 10000003, 50000003)
    df = build_manifest("mimic", tmp_path).set_index("study_id")
    assert "s50000001" not in df.index  # empty report dropped
    assert df.loc["s50000002", "impression"] == "No acute\u00e9 disease."  # decoded with the fallback, kept
    assert df.attrs["skips"] == {"empty_report": 1, "non_utf8_text": 1}
    with pytest.raises(BadInputError, match=r"s50000001\.txt: empty report"):
        build_manifest("mimic", tmp_path, strict=True)


def test_report_parsing_survives_lowercase_headers_missing_sections_and_nan():
    lower = parse_report("findings: lungs are clear.\nimpression: normal chest.")
    assert (lower.findings, lower.impression) == ("lungs are clear.", "normal chest.")
    only_impression = parse_report("INDICATION: fever\nIMPRESSION: Right lower lobe pneumonia.")
    assert only_impression.findings == "" and only_impression.report == "Right lower lobe pneumonia."
    no_headers = parse_report("Heart is enlarged. No effusion.")
    assert no_headers.report == "Heart is enlarged. No effusion." and no_headers.findings == ""
    assert parse_report(float("nan")).report == ""
    assert parse_report(None, findings=float("nan"), impression="Clear lungs.").report == "Clear lungs."


def test_read_text_file_counts_fallback_decoding(tmp_path):
    path = tmp_path / "r.txt"
    path.write_bytes(b"Opacity \x96 left base.")
    skips = SkipCounter()
    assert read_text_file(path, skips) == "Opacity \u2013 left base."
    assert skips.as_dict() == {"non_utf8_text": 1}


def test_corrupt_jpeg_is_skipped_by_default_and_strict_names_the_file(tmp_path):
    for k in range(3):
        mimic_study(tmp_path, 10000001 + k, 50000001 + k, views=("PA",))
    bad = next((tmp_path / "p10" / "p10000002" / "s50000002").glob("*.jpg"))
    bad.write_bytes(b"this is not a jpeg at all" * 10)
    df = build_manifest("mimic", tmp_path)
    assert len(df) == 2 and df.attrs["skips"] == {"unreadable_image": 1}
    with pytest.raises(BadInputError, match=str(bad.name)):
        build_manifest("mimic", tmp_path, strict=True)


def test_bimcv_matches_reports_by_basename(tmp_path):
    write_nifti(tmp_path / "CT0001" / "ct" / "CT0001_a.nii.gz")
    write_nifti(tmp_path / "CT0001" / "ct" / "CT0001_b.nii.gz")
    write_nifti(tmp_path / "CT0002" / "ct" / "CT0002_a.nii.gz")
    write_nifti(tmp_path / "CT0003" / "ct" / "CT0003_a.nii.gz")  # no report row
    (tmp_path / "meta").mkdir()
    pd.DataFrame({"path": ["CT0001/ct/CT0001_a.nii.gz", "x/CT0001_b.nii.gz", "CT0002_a.nii.gz"],
                  "Report_en": ["Nodule in the right upper lobe.", "Bilateral pleural effusion.", "Emphysema."]}).to_csv(
        tmp_path / "meta" / "curated_ct_report_path_En.csv", index=False)
    df = build_manifest("bimcv", tmp_path).set_index("study_id")
    assert sorted(df.index) == ["CT0001_a", "CT0001_b", "CT0002_a"]
    assert df.loc["CT0001_b", "report"] == "Bilateral pleural effusion."
    assert set(df["modality"]) == {"ct"} and df.loc["CT0001_a", "subject_id"] == "CT0001"
    assert df.loc["CT0001_a", "split"] == df.loc["CT0001_b", "split"]  # one subject, one split
    assert df.attrs["skips"] == {"missing_report": 1}


def test_bimcv_subject_comes_from_the_bids_name_across_folders(tmp_path):
    names = {"CT0001": "sub-S00007_ses-E00001_run-1_bp-chest_ct", "CT0002": "sub-S00007_ses-E00002_run-1_bp-chest_ct"}
    for folder, name in names.items():
        write_nifti(tmp_path / folder / "ct" / f"{name}.nii.gz")
    (tmp_path / "meta").mkdir()
    pd.DataFrame({"path": [f"{f}/ct/{n}.nii.gz" for f, n in names.items()], "Report_en": ["Nodule.", "Effusion."]}
                 ).to_csv(tmp_path / "meta" / "curated_ct_report_path_En.csv", index=False)
    df = build_manifest("bimcv", tmp_path)
    assert set(df["subject_id"]) == {"sub-S00007"} and df["split"].nunique() == 1


def test_roco_drops_missing_and_zero_byte_images_and_keeps_official_splits(tmp_path):
    for number, split in enumerate(("train", "validation", "test")):
        folder = tmp_path / "data" / split / "radiology"
        short = "val" if split == "validation" else split
        names = [f"PMC{100 * number + k}_{split}_{k}.jpg" for k in range(3)]
        for name in names:
            write_jpeg(folder / "images" / name)
        if split == "train":
            (folder / "images" / names[1]).unlink()  # missing
            (folder / "images" / names[2]).write_bytes(b"")  # zero bytes
        pd.DataFrame({"id": [f"ROCO_{split}_{k}" for k in range(3)], "name": names,
                      "caption": [f"CT of the chest, case {k}." for k in range(3)]}).to_csv(
            folder / f"radiology{short}data.csv", index=False)
    df = build_manifest("roco", tmp_path)
    assert len(df) == 7
    assert df.attrs["skips"] == {"missing_image": 1, "empty_image_file": 1}
    assert df.set_index("study_id").loc["ROCO_validation_0", "split"] == "val"
    assert (df.set_index("study_id").loc["ROCO_test_2", "subject_id"]) == "PMC202"


@pytest.mark.parametrize("naming", [("indiana_reports.csv", "indiana_projections.csv"),
                                    ("reports.csv", "projections.csv")])
def test_iu_reads_both_namings_with_images_frontal_first(tmp_path, naming):
    pd.DataFrame({"uid": [1, 2, 3], "findings": ["Lungs clear.", np.nan, "Cardiomegaly."],
                  "impression": ["Normal.", np.nan, "Enlarged heart."]}).to_csv(tmp_path / naming[0], index=False)
    proj = pd.DataFrame({"uid": [1, 1, 2, 3], "filename": ["1_lat.png", "1_front.png", "2_front.png", "3_front.png"],
                         "projection": ["Lateral", "Frontal", "Frontal", "Frontal"]})
    proj.to_csv(tmp_path / naming[1], index=False)
    for name in proj["filename"]:
        write_jpeg(tmp_path / "images" / "images_normalized" / name.replace(".png", ".png"))
    df = build_manifest("iu", tmp_path).set_index("study_id")
    assert sorted(df.index) == ["1", "3"]  # uid 2 has a NaN report
    assert df.loc["1", "image_path"].endswith("1_front.png") and df.loc["1", "view"] == "FRONTAL"
    assert df.loc["1", "report"] == "Lungs clear. Normal."
    assert df.attrs["skips"] == {"empty_report": 1}


def test_iu_without_an_image_folder_keeps_reports_and_counts_them(tmp_path):
    pd.DataFrame({"uid": [7, 8], "findings": ["Clear lungs.", ""], "impression": ["Normal.", np.nan]}).to_csv(
        tmp_path / "reports.csv", index=False)
    pd.DataFrame({"uid": [7], "filename": ["7_IM-1.dcm.png"], "projection": ["Frontal"]}).to_csv(
        tmp_path / "projections.csv", index=False)
    df = build_manifest("iu", tmp_path)
    assert list(df["study_id"]) == ["7"] and df["image_path"].iat[0] == "" and df["image_paths"].iat[0] == []
    assert df.attrs["skips"] == {"empty_report": 1, "image_absent_kept": 1}


def test_ctrate_sessions_folder_splits_and_reports(tmp_path):
    rows = []
    for folder, n in (("train", 5), ("valid", 2)):
        for c in range(1, n + 1):
            case = f"{folder}_{c}"
            for recon in ("a",):
                for k in (1, 2):
                    vol = f"{case}_{recon}_{k}"
                    write_nifti(tmp_path / folder / case / f"{case}_{recon}" / f"{vol}.nii.gz", shape=(12, 12, 8))
                    rows.append({"VolumeName": f"{vol}.nii.gz", "Findings_EN": f"Findings of {case}.",
                                 "Impressions_EN": "No acute finding."})
    (tmp_path / "radiology_text_reports").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "radiology_text_reports" / "reports.csv", index=False)
    df = build_manifest("ctrate", tmp_path, require_metadata=False).set_index("study_id")
    assert len(df) == 7 and len(df.loc["train_1_a", "image_paths"]) == 2
    assert df.loc["valid_1_a", "split"] == "test" and df.loc["valid_2_a", "split"] == "test"
    assert set(df.loc[[f"train_{c}_a" for c in range(1, 6)], "split"]) == {"train", "val"}
    assert df.loc["train_3_a", "report"] == "Findings of train_3. No acute finding."


def _dicom(path: Path, modality: str, pixels: np.ndarray, **tags) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 1, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def make_dicom_tree(root: Path) -> None:
    """A CXR study (PA + lateral DICOM, MIMIC-style report beside it) and a CT series folder."""
    cxr = np.zeros((32, 24), dtype=np.int16)
    cxr[8:24, 4:20] = 900
    _dicom(root / "p10" / "p10000001" / "s50000001" / "lat.dcm", "DX", cxr // 2, PatientID="p10000001",
           ViewPosition="LL")
    _dicom(root / "p10" / "p10000001" / "s50000001" / "front.dcm", "DX", cxr, PatientID="p10000001",
           ViewPosition="PA")
    (root / "p10" / "p10000001" / "s50000001.txt").write_text("FINDINGS: Clear lungs.\nIMPRESSION: Normal.")
    series = root / "ct" / "CT1"
    for k in range(6):
        sl = np.full((16, 16), 24, dtype=np.int16)
        sl[4:12, 4:12] = 1100
        _dicom(series / f"{k}.dcm", "CT", sl, PatientID="P7", ImagePositionPatient=[0, 0, 3.0 * k],
               ImageOrientationPatient=[1, 0, 0, 0, 1, 0], PixelSpacing=[2, 2], SliceThickness=3,
               InstanceNumber=k + 1, RescaleIntercept=-1024, RescaleSlope=1)
    (series / "report.txt").write_text("Findings: small nodule in the right lung.")


def test_dicom_reader_reads_radiographs_and_ct_series_folders(tmp_path):
    from workbench.data.cache import build_image_cache, build_volume_cache

    make_dicom_tree(tmp_path)
    df = build_manifest("dicom", tmp_path).set_index("study_id")
    assert df.loc["s50000001", "modality"] == "cxr" and df.loc["s50000001", "view"] == "PA"
    assert df.loc["s50000001", "image_path"].endswith("front.dcm")
    assert df.loc["CT1", "modality"] == "ct" and df.loc["CT1", "subject_id"] == "P7"
    assert Path(df.loc["CT1", "image_path"]).is_dir()
    df = df.reset_index()
    images = build_image_cache(df, tmp_path / "cache", 32, progress=False)
    front = images.get("s50000001")
    assert front.shape == (32, 32) and front.max() == 255 and front[0, 0] == 0  # letterboxed, scaled
    volumes = build_volume_cache(df, tmp_path / "cache", (8, 8, 8), progress=False)
    vol = volumes.get("CT1")
    assert vol.shape == (8, 8, 8) and vol.max() > 100  # soft tissue (+76 HU) inside the window


def test_class_folders_keep_a_patient_in_one_split(tmp_path):
    for k in range(30):
        cls = "PNEUMONIA" if k % 2 else "NORMAL"
        for j in range(2):
            name = f"person{k}_bacteria_{j}.jpeg" if cls == "PNEUMONIA" else f"IM-{k:04d}-000{j}.jpeg"
            write_jpeg(tmp_path / "train" / cls / name, size=(16, 16))
    write_jpeg(tmp_path / "train" / "NORMAL" / "odd_name.jpeg", size=(16, 16))
    from workbench.data.readers.folders import PNEUMONIA_SUBJECT_REGEX

    df = build_manifest("folders", tmp_path, subject_regex=PNEUMONIA_SUBJECT_REGEX, seed=3)
    assert len(df) == 61 and df.groupby("subject_id")["split"].nunique().max() == 1
    assert set(df["split"]) == {"train", "val", "test"}  # val and test drawn from the train folder
    assert df.groupby("subject_id").size().drop("odd_name").eq(2).all()
    row = df.set_index("study_id").loc["train/PNEUMONIA/person1_bacteria_0"]
    assert (row["label_PNEUMONIA"], row["label_NORMAL"], row["class_name"]) == (1.0, 0.0, "PNEUMONIA")
    assert df.attrs["skips"] == {"subject_from_filename": 1}


def test_generic_csv_with_a_column_mapping(tmp_path):
    for k in range(4):
        write_jpeg(tmp_path / "imgs" / f"x{k}.png")
    pd.DataFrame({"img": [f"imgs/x{k}.png" for k in range(4)], "note": ["Opacity.", "", "Clear.", "Effusion."],
                  "pid": ["a", "a", "b", "c"]}).to_csv(tmp_path / "pairs.csv", index=False)
    df = build_manifest("csv", tmp_path / "pairs.csv", image_column="img", text_column="note", subject_column="pid")
    assert sorted(df["report"]) == ["Clear.", "Effusion.", "Opacity."]
    assert df.attrs["skips"] == {"empty_report": 1}
    with pytest.raises(ValueError, match="lacks columns"):
        build_manifest("csv", tmp_path / "pairs.csv", image_column="path")


def test_real_iu_reports_are_read_without_images():
    root = shared_data("iu_xray")
    df = build_manifest("iu", root)
    assert len(df) > 2000 and (df["image_path"] == "").all()
    assert df["report"].str.len().gt(0).all()
    assert df.attrs["skips"]["image_absent_kept"] == len(df)
    assert "label_Cardiomegaly" in df.columns and df["label_Cardiomegaly"].isin([0.0, 1.0]).all()


def test_real_pneumonia_folders_split_by_patient():
    from workbench.data.readers.folders import PNEUMONIA_SUBJECT_REGEX

    root = shared_data("pneumonia_cxr")
    df = build_manifest("folders", root, subject_regex=PNEUMONIA_SUBJECT_REGEX, seed=0)
    assert len(df) == 5216 and set(df["split"]) == {"train", "val", "test"}
    assert df.groupby("subject_id")["split"].nunique().max() == 1
    assert df["subject_id"].nunique() < len(df)  # patients with several images were grouped
    assert df.attrs["skips"].get("subject_from_filename", 0) == 0  # the regex covers every naming


def test_real_covid_notes_pairs_through_the_csv_reader():
    root = shared_data("covid_cxr_notes")
    df = build_manifest("csv", root)
    assert 400 < len(df) < 575 and df["report"].str.len().gt(0).all()
    assert df["image_path"].map(lambda p: Path(p).is_file()).all()
    assert df.attrs["skips"]["empty_report"] > 50  # rows without clinical notes
    assert df.groupby("subject_id")["split"].nunique().max() == 1


def test_a_2d_only_demo_builds_a_manifest(tmp_path):
    from workbench.data import build_manifest
    from workbench.data.phantom import generate_demo

    generate_demo(tmp_path, n_studies=12, n_ct_studies=0, image_size=32, seed=1, progress=False)
    manifest = build_manifest("demo", tmp_path, seed=0)
    assert len(manifest) == 12 and set(manifest["modality"]) == {"cxr"}
