"""Readers on trees in the EXACT released layouts (gzip tables, raw-valued CT with metadata,
broken entries): the studies a correct reader keeps, every skip counted by reason, labels and
metadata carried, and CT intensities in the documented HU window."""

from __future__ import annotations

import numpy as np
import pytest

from released_layouts import CTRATE_LABEL_NAMES, ct_volume, write_bimcv_r, write_ct_rate, write_mimic_cxr_jpg, \
    write_nifti
from workbench.config import load_config
from workbench.data import build_manifest, prepare_run_data
from workbench.data.skips import SkipCounter


def prepare(tmp_path, dataset: str, root, *overrides: str):
    cfg = load_config("tiny", [f"data.dataset={dataset}", f"data.data_root={root}", "data.volume_size=[16,16,16]",
                               *overrides])
    return prepare_run_data(cfg, tmp_path / "run", progress=False)


def test_mimic_cxr_jpg_as_released_gzip_tables_and_reports_under_a_second_root(tmp_path):
    facts = write_mimic_cxr_jpg(tmp_path)
    df = prepare(tmp_path, "mimic", facts.root, f"data.report_root={facts.extra['report_root']}")
    assert sorted(df["study_id"]) == sorted(facts.kept)
    assert df.attrs["skips"] == {**facts.skipped, **facts.kept_reasons}
    by_id = df.set_index("study_id")
    # the official split (gzip) wins: 8 train, 2 validate -> val, 2 test among the kept studies
    assert by_id["split"].value_counts().to_dict() == {"train": 8, "val": 2, "test": 2}
    # the metadata table (gzip) puts the PA image first
    assert by_id.loc["s50000000", "view"] == "PA" and len(by_id.loc["s50000000", "image_paths"]) == 2
    # the CheXpert table (gzip) becomes label_ columns
    assert by_id.loc["s50000000", "label_Pleural_Effusion"] == 1.0 and set(by_id["label_source"]) == {"chexpert"}
    assert by_id.loc["s50000002", "label_Cardiomegaly"] == 1.0
    assert "Small left pleural effusion." in by_id.loc["s50000000", "report"]
    # ... which notebook 01 scores OBER against: chexpert14 names findings with spaces
    from workbench.ober import get_label_set
    from workbench.ober.report import gold_labels

    gold = gold_labels(df, list(get_label_set("chexpert14").labels))
    assert gold.loc["s50000000", "Pleural Effusion"] == 1.0 and gold.loc["s50000002", "Cardiomegaly"] == 1.0
    assert "FINAL REPORT" not in by_id.loc["s50000000", "report"]


def test_bimcv_r_as_released_keeps_the_right_volumes_and_counts_every_skip(tmp_path):
    facts = write_bimcv_r(tmp_path / "bimcv-r")
    df = prepare(tmp_path, "bimcv", facts.root)
    assert sorted(df["study_id"]) == sorted(facts.kept)
    assert df.attrs["skips"] == {**facts.skipped, **facts.kept_reasons}
    assert set(df["modality"]) == {"ct"} and df["subject_id"].str.startswith("sub-S").all()
    # the duplicated basename resolves to the copy the report table names
    dup = df.set_index("study_id").loc[facts.kept[0], "image_path"]
    assert "/CT0001/ct/" in dup
    assert df.attrs["preprocessing"]["ct"]["window_hu"] == [-1000.0, 1000.0]


def test_ct_rate_as_released_carries_metadata_and_its_18_labels(tmp_path):
    facts = write_ct_rate(tmp_path / "ct-rate")
    df = prepare(tmp_path, "ctrate", facts.root)
    assert sorted(df["study_id"]) == sorted(facts.kept)
    assert df.attrs["skips"] == {**facts.skipped, **facts.kept_reasons}
    by_id = df.set_index("study_id")
    assert (by_id.loc[[s for s in facts.kept if s.startswith("valid")], "split"] == "test").all()
    assert set(by_id.loc[[s for s in facts.kept if s.startswith("train")], "split"]) <= {"train", "val"}
    label_cols = [f"label_{n.replace(' ', '_')}" for n in CTRATE_LABEL_NAMES]
    assert set(label_cols) <= set(df.columns) and set(df["label_source"]) == {"ctrate_predicted"}
    truth = facts.extra["labels"]["train_2_a_1.nii.gz"]  # the session's primary volume
    assert [by_id.loc["train_2_a", c] for c in label_cols] == [float(truth[n]) for n in CTRATE_LABEL_NAMES]
    assert by_id.loc["train_2_a", "rescale_intercept"] == -1024.0 and by_id.loc["train_2_a", "spacing_x"] == 0.75
    assert by_id.loc["train_2_a", "spacing_z"] == 1.5 and len(by_id.loc["train_2_a", "image_paths"]) == 2
    assert df.attrs["preprocessing"]["ct"]["studies_with_dataset_metadata"] == len(df)
    from workbench.ober import get_label_set
    from workbench.ober.report import gold_labels

    gold = gold_labels(df, list(get_label_set("ctrate18").labels))  # notebook 01's gold: the 18 labels
    assert list(gold.columns) == CTRATE_LABEL_NAMES and gold.loc["train_2_a", "Lung nodule"] == float(truth["Lung nodule"])


def test_ct_rate_without_its_metadata_table_fails_naming_the_fix(tmp_path):
    facts = write_ct_rate(tmp_path / "ct-rate", n_train=2, n_valid=1)
    for path in (facts.root / "metadata").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match="metadata table.*RescaleSlope"):
        build_manifest("ctrate", facts.root)


def test_a_raw_valued_volume_reaches_the_model_in_the_documented_hu_window(tmp_path):
    from workbench.data.cache import build_volume_cache

    # raw = HU + 1024 (CT-RATE's int16 storage); a soft-tissue block of +40 HU in the middle
    path = write_nifti(tmp_path / "v.nii.gz", ct_volume(shape=(40, 40, 24), hu_block=300.0, raw_offset=-1024.0))
    row = {"study_id": "s", "modality": "ct", "image_path": str(path), "rescale_slope": 1.0,
           "rescale_intercept": -1024.0, "spacing_x": 0.75, "spacing_y": 0.75, "spacing_z": 1.5}
    import pandas as pd

    with_meta = build_volume_cache(pd.DataFrame([row]), tmp_path / "a", (32, 32, 32), progress=False,
                                   pixdim=None, window=(-1000.0, 1000.0))
    centre = with_meta.get("s")[14:18, 14:18, 14:18]
    expected = round((300.0 + 1000.0) / 2000.0 * 255.0)  # 166: the block's HU in the [-1000, 1000] window
    assert np.abs(centre.astype(int) - expected).max() <= 2
    # read as the header says (no rescale), the same block sits 1024 HU too bright
    bare = {k: v for k, v in row.items() if not k.startswith(("rescale", "spacing"))}
    without = build_volume_cache(pd.DataFrame([bare]), tmp_path / "b", (32, 32, 32), progress=False, pixdim=None)
    assert without.get("s")[14:18, 14:18, 14:18].min() == 255


def test_dataset_spacing_replaces_the_header_spacing_before_resampling():
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Compose, Spacingd

    from workbench.data.transforms import PrepareCTd

    image = MetaTensor(torch.zeros(1, 40, 40, 24), affine=torch.eye(4))  # the header says 1 mm
    resample = Compose([PrepareCTd(), Spacingd(["image"], pixdim=(1.5, 1.5, 3.0))])
    out = resample({"image": image.clone(), "spacing": (0.75, 0.75, 1.5)})["image"]
    assert tuple(out.shape[1:]) == (20, 20, 12)  # 30 x 30 x 36 mm at 1.5 x 1.5 x 3 mm
    header_only = resample({"image": image.clone()})["image"]  # 40 x 40 x 24 mm at 1.5 x 1.5 x 3 mm
    assert tuple(header_only.shape[1:3]) == (27, 27) and header_only.shape[3] in (8, 9)


def test_nan_voxels_and_4d_volumes_are_repaired_and_counted(tmp_path):
    import pandas as pd

    from workbench.data.cache import build_volume_cache

    vol = ct_volume(shape=(24, 24, 16)).astype(np.float32)
    vol[:2, :2, :2] = np.nan
    four_d = np.stack([ct_volume(shape=(24, 24, 16)), ct_volume(shape=(24, 24, 16), seed=1)], axis=-1)
    rows = [{"study_id": "nan", "modality": "ct", "image_path": str(write_nifti(tmp_path / "nan.nii.gz", vol))},
            {"study_id": "4d", "modality": "ct", "image_path": str(write_nifti(tmp_path / "4d.nii.gz", four_d))}]
    skips = SkipCounter()
    cache = build_volume_cache(pd.DataFrame(rows), tmp_path / "c", (16, 16, 16), skips=skips, progress=False)
    assert len(cache) == 2 and not np.isnan(cache.get("nan").astype(float)).any()
    assert skips.as_dict() == {"nan_voxels_repaired": 1, "volume_4d_first_kept": 1}
    again = SkipCounter()  # a reused cache counts the same repairs again
    build_volume_cache(pd.DataFrame(rows), tmp_path / "c", (16, 16, 16), skips=again, progress=False)
    assert again.as_dict() == skips.as_dict()
