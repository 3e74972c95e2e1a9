"""Patient-level splits, the decoded-once caches, and what bad files do to them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from workbench.data import BadInputError, SkipCounter
from workbench.data.cache import build_image_cache, build_volume_cache, image_cache_files, open_image_cache, \
    volume_cache_files
from workbench.data.splits import assign_splits, draw_subject_splits


def frame(n_subjects: int = 60, studies_per_subject: int = 3, modality: str = "cxr") -> pd.DataFrame:
    rows = [{"subject_id": f"p{s:03d}", "study_id": f"{modality}{s:03d}_{k}", "modality": modality}
            for s in range(n_subjects) for k in range(studies_per_subject)]
    return pd.DataFrame(rows)


def test_no_subject_is_in_two_splits_and_fractions_hold():
    df = frame()
    df["split"] = assign_splits(df, seed=0, fractions=(0.8, 0.1, 0.1))
    assert df.groupby("subject_id")["split"].nunique().max() == 1
    per_subject = df.drop_duplicates("subject_id")["split"].value_counts().to_dict()
    assert per_subject == {"train": 48, "val": 6, "test": 6}


def test_splits_are_deterministic_by_seed_and_change_with_it():
    df = frame()
    a = assign_splits(df, seed=7)
    b = assign_splits(df.sample(frac=1.0, random_state=1).sort_index(), seed=7)  # row order does not matter
    assert a.equals(b)
    assert not a.equals(assign_splits(df, seed=8))


def test_small_modality_subsets_still_get_every_split():
    df = pd.concat([frame(40), frame(4, 1, modality="ct")], ignore_index=True)
    df["split"] = assign_splits(df, seed=0)
    assert set(df.loc[df["modality"] == "ct", "split"]) == {"train", "val", "test"}


def test_official_split_wins_and_a_conflicting_subject_goes_to_the_strictest():
    df = frame(20, 2)
    df["official_split"] = None
    df.loc[df["subject_id"] == "p000", "official_split"] = ["train", "test"]
    df.loc[df["subject_id"] == "p001", "official_split"] = "val"
    df.loc[df["subject_id"] == "p002", "official_split"] = "train"
    skips = SkipCounter()
    split = assign_splits(df, seed=0, skips=skips)
    assert set(split[df["subject_id"] == "p000"]) == {"test"}
    assert set(split[df["subject_id"] == "p001"]) == {"val"}
    assert skips.as_dict() == {"official_split_conflict": 1}


def test_draw_subject_splits_gives_each_nonzero_split_a_subject_when_possible():
    assert sorted(draw_subject_splits(["a", "b", "c"], 0).values()) == ["test", "train", "val"]
    with pytest.raises(ValueError, match="split_fractions"):
        draw_subject_splits(["a"], 0, (1.0, -0.1, 0.1))


def _jpeg(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=92)
    return path


def image_manifest(tmp_path: Path, n: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        arr = (rng.random((80, 80)) * 60).astype(np.uint8) + np.linspace(0, 180, 80, dtype=np.uint8)[None]
        path = _jpeg(tmp_path / "img" / f"{k}.jpg", arr)
        rows.append({"subject_id": f"p{k}", "study_id": f"s{k}", "modality": "cxr", "image_path": str(path)})
    return pd.DataFrame(rows)


def test_cached_image_equals_a_direct_decode_and_resize(tmp_path):
    df = image_manifest(tmp_path)
    cache = build_image_cache(df, tmp_path / "cache", 32, progress=False)
    memmap = np.load(image_cache_files(tmp_path / "cache", 32)[0], mmap_mode="r")
    assert isinstance(memmap, np.memmap) and memmap.shape == (5, 32, 32) and memmap.dtype == np.uint8
    for study, path in zip(df["study_id"], df["image_path"]):
        direct = np.asarray(Image.open(path).convert("L").resize((32, 32), Image.BILINEAR))
        np.testing.assert_array_equal(cache.get(study), direct)


def test_non_square_images_are_letterboxed_not_stretched(tmp_path):
    path = _jpeg(tmp_path / "wide.png", np.full((40, 80), 200, np.uint8))
    df = pd.DataFrame([{"subject_id": "a", "study_id": "w", "modality": "cxr", "image_path": str(path)}])
    img = build_image_cache(df, tmp_path / "cache", 40, progress=False).get("w")
    assert img[:10].max() == 0 and img[-10:].max() == 0 and (img[10:30] == 200).all()


def test_cache_is_reused_when_nothing_changed(tmp_path):
    df = image_manifest(tmp_path, 3)
    build_image_cache(df, tmp_path / "cache", 16, progress=False)
    array_path = image_cache_files(tmp_path / "cache", 16)[0]
    before = array_path.stat().st_mtime_ns
    build_image_cache(df, tmp_path / "cache", 16, progress=False)
    assert array_path.stat().st_mtime_ns == before
    assert len(open_image_cache(tmp_path / "cache", 16)) == 3


def test_truncated_jpeg_is_counted_in_the_cache_and_strict_raises_naming_it(tmp_path):
    df = image_manifest(tmp_path, 4)
    bad = Path(df["image_path"].iat[2])
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # header intact, data cut
    skips = SkipCounter()
    cache = build_image_cache(df, tmp_path / "cache", 16, skips=skips, progress=False)
    assert skips.as_dict() == {"unreadable_image": 1} and "s2" not in cache and len(cache) == 3
    with pytest.raises(BadInputError, match=f"{bad.name}: unreadable image"):
        build_image_cache(df, tmp_path / "strict", 16, skips=SkipCounter(strict=True), progress=False)


def test_an_interrupted_cache_build_leaves_nothing_half_written(tmp_path):
    df = image_manifest(tmp_path, 4)
    Path(df["image_path"].iat[3]).write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(BadInputError):
        build_image_cache(df, tmp_path / "cache", 16, skips=SkipCounter(strict=True), progress=False)
    assert list((tmp_path / "cache").iterdir()) == []  # no .npy, no index, no temporary file


def _nifti(path: Path, shape=(24, 24, 16)) -> Path:
    vol = np.full(shape, -1000, dtype=np.int16)
    vol[6:18, 6:18, 4:12] = 50
    vol[10:14, 10:14, 6:10] = 600
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(vol, np.diag([3.0, 3.0, 3.0, 1.0])), str(path))
    return path


def test_volume_cache_has_fixed_shape_window_and_catches_truncated_nifti(tmp_path):
    good = _nifti(tmp_path / "a.nii.gz")
    bad = _nifti(tmp_path / "b.nii.gz")
    bad.write_bytes(bad.read_bytes()[:200])
    df = pd.DataFrame([{"subject_id": "a", "study_id": "a", "modality": "ct", "image_path": str(good)},
                       {"subject_id": "b", "study_id": "b", "modality": "ct", "image_path": str(bad)}])
    skips = SkipCounter()
    cache = build_volume_cache(df, tmp_path / "cache", (16, 16, 16), skips=skips, progress=False)
    assert volume_cache_files(tmp_path / "cache", (16, 16, 16))[0].name == "volumes_16x16x16.npy"
    vol = cache.get("a")
    assert vol.shape == (16, 16, 16) and vol.dtype == np.uint8
    # the foreground crop removed most air (12.5% of the raw volume is body); the dense core is brightest
    assert (vol > 100).mean() > 0.25 and vol.max() >= int(255 * 1600 / 2000) - 2
    assert skips.as_dict() == {"unreadable_volume": 1} and "b" not in cache
    with pytest.raises(BadInputError, match="b.nii.gz: unreadable volume"):
        build_volume_cache(df, tmp_path / "strict", (16, 16, 16), skips=SkipCounter(strict=True), progress=False)


def test_prepare_run_data_drops_undecodable_studies_and_writes_manifest_and_cache(tmp_path):
    from workbench.config import load_config
    from workbench.data import prepare_run_data, read_manifest

    root = tmp_path / "mimic"
    for k in range(6):
        study = root / "p10" / f"p1000000{k}" / f"s5000000{k}"
        _jpeg(study / f"d{k}.jpg", np.full((40, 40), 30 * k, np.uint8))
        (study.parent / f"s5000000{k}.txt").write_text(f"FINDINGS: Finding {k}.\nIMPRESSION: Impression {k}.")
    truncated = root / "p10" / "p10000004" / "s50000004" / "d4.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-200])
    cfg = load_config("tiny", ["data.dataset=mimic", f"data.data_root={root}", "data.image_size=16"])
    run_dir = tmp_path / "run"
    df = prepare_run_data(cfg, run_dir, progress=False)
    assert "s50000004" not in set(df["study_id"]) and len(df) == 5
    assert df.attrs["skips"] == {"unreadable_image": 1}
    back = read_manifest(run_dir / "manifest.parquet")
    assert list(back["study_id"]) == list(df["study_id"]) and back["image_paths"].map(len).eq(1).all()
    assert (run_dir / "cache" / "images_16.npy").is_file()
    assert not [p for p in run_dir.rglob("*.tmp*")]
