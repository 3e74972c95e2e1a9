"""The `medtrim` reader: the MedTrim seed's img_df + text_df tables joined on path_base, through
`build_manifest` and `prepare_run_data`, and the seed's triplet CSV working unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from workbench.config import load_config
from workbench.data import BadInputError, build_manifest, list_readers, prepare_run_data, read_manifest

SECTIONED = "FINAL REPORT\n FINDINGS: Small left pleural effusion.\n IMPRESSION: Left effusion.\n"
PLAIN = "Heart size normal. Lungs are clear."
SUBJECTS = [f"p1{k:07d}" for k in range(10)]


def key(subject: str, study: int) -> str:
    return f"{subject[:3]}/{subject}/s5{study:07d}"


def write_jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((40, 48), value, dtype=np.uint8)
    arr[5:15, 5:20] = 255 - value
    Image.fromarray(arr).save(path, quality=95)


@pytest.fixture
def seed_tables(tmp_path) -> dict:
    """Ten MIMIC-style subjects with two studies each, as the seed's two CSVs (relative
    full_path), plus one study whose image file is missing and one with no text row."""
    root = tmp_path / "mimic"
    img_rows, text_rows = [], []
    for i, subject in enumerate(SUBJECTS):
        for j in range(2):
            study = key(subject, 2 * i + j)
            rel = f"files/{study}/view{j}.jpg"
            write_jpeg(root / rel, 40 + 10 * i + j)
            img_rows.append({"path_base": study, "full_path": rel})
            text_rows.append({"path_base": study, "text": SECTIONED if j == 0 else PLAIN})
    img_rows.append({"path_base": "p19/p19999999/s59999998", "full_path": "files/p19/p19999999/s59999998/gone.jpg"})
    text_rows.append({"path_base": "p19/p19999999/s59999998", "text": PLAIN})
    write_jpeg(root / "files/untexted/x.jpg", 90)
    img_rows.append({"path_base": "untexted", "full_path": "files/untexted/x.jpg"})
    pd.DataFrame(img_rows).to_csv(root / "img_df.csv", index=False)
    pd.DataFrame(text_rows).to_csv(root / "text_df.csv", index=False)
    return {"root": root, "img_df": str(root / "img_df.csv"), "text_df": str(root / "text_df.csv")}


def test_reader_is_registered():
    assert "medtrim" in list_readers()


def test_tables_join_on_path_base_into_the_standard_manifest(seed_tables):
    df = build_manifest("medtrim", seed_tables["root"], img_df=seed_tables["img_df"], text_df=seed_tables["text_df"])
    assert len(df) == 20 and set(df["dataset"]) == {"medtrim"}
    row = df.set_index("study_id").loc[key(SUBJECTS[3], 6)]
    assert row["subject_id"] == SUBJECTS[3]
    assert row["image_path"] == str(seed_tables["root"] / "files" / key(SUBJECTS[3], 6) / "view0.jpg")
    assert row["findings"] == "Small left pleural effusion." and row["impression"] == "Left effusion."
    plain = df.set_index("study_id").loc[key(SUBJECTS[3], 7)]
    assert plain["findings"] == "" and plain["report"] == PLAIN
    assert df.groupby("subject_id")["split"].nunique().max() == 1  # patient-level split
    assert df.attrs["skips"] == {"missing_image": 1, "missing_report": 1}


def test_subject_falls_back_to_the_study_key_without_a_mimic_path(tmp_path):
    write_jpeg(tmp_path / "a.jpg", 80)
    pd.DataFrame({"path_base": ["case-a"], "full_path": [str(tmp_path / "a.jpg")]}).to_csv(tmp_path / "i.csv",
                                                                                          index=False)
    pd.DataFrame({"path_base": ["case-a"], "text": [PLAIN]}).to_csv(tmp_path / "t.csv", index=False)
    df = build_manifest("medtrim", tmp_path, img_df=tmp_path / "i.csv", text_df=tmp_path / "t.csv",
                        split_fractions=(1.0, 0.0, 0.0))
    assert df["subject_id"].tolist() == ["case-a"] and df["study_id"].tolist() == ["case-a"]


def test_strict_mode_names_the_missing_image(seed_tables):
    with pytest.raises(BadInputError, match="gone.jpg"):
        build_manifest("medtrim", seed_tables["root"], img_df=seed_tables["img_df"], text_df=seed_tables["text_df"],
                       strict=True)


def test_missing_tables_name_both_config_keys(run_dir):
    cfg = load_config("tiny", ["data.dataset=medtrim"])
    with pytest.raises(ValueError, match=r"data\.img_df.*data\.text_df"):
        prepare_run_data(cfg, run_dir, progress=False)


def test_seed_triplet_csv_trains_medtrim_through_prepare_run_data(seed_tables, run_dir):
    from workbench.methods import create_method

    keys = [key(s, k) for i, s in enumerate(SUBJECTS) for k in (2 * i, 2 * i + 1)]
    triplets = pd.DataFrame({"anchor": keys, "positive": keys[1:] + keys[:1], "negative": keys[2:] + keys[:2]})
    triplet_csv = seed_tables["root"] / "triplets.csv"
    triplets.to_csv(triplet_csv, index=False)  # the seed's form: path_base keys
    cfg = load_config("tiny", ["data.dataset=medtrim", f"data.img_df={seed_tables['img_df']}",
                               f"data.text_df={seed_tables['text_df']}", f"data.triplet_csv={triplet_csv}",
                               "method.name=medtrim"])
    manifest = prepare_run_data(cfg, run_dir, progress=False)
    assert len(read_manifest(run_dir)) == len(manifest) == 20
    assert manifest.attrs["skips"]["missing_image"] == 1
    train_ids = set(manifest.loc[manifest["split"] == "train", "study_id"])
    dataset = create_method("medtrim", cfg).train_dataset(run_dir)
    usable = triplets[triplets.isin(train_ids).all(axis=1)]
    assert len(dataset) == len(usable) > 0 and dataset.dropped == len(triplets) - len(usable)
    item = dataset[0]
    assert [item[m]["study_id"] for m in ("anchor", "positive", "negative")] == usable.iloc[0].tolist()
