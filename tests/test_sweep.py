"""The fair sweep (issue 8): one encoder pair and step budget for every method, only the
method section differs; mean ± std over seeds; a tiny end-to-end sweep writes the leaderboard."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from workbench.config import to_dict
from workbench.sweep import (SweepError, leaderboard_markdown, leaderboard_table, load_sweep_spec, run_config,
                             run_sweep)


def _flat(cfg, section: str) -> dict:
    return to_dict(cfg)[section]


def test_every_2d_method_shares_data_encoders_and_budget_and_keeps_its_own_objective():
    spec = load_sweep_spec("sweep")
    configs = {m: run_config(spec, m, 0, False) for m in ("clip", "cgns", "asg", "locked")}
    shared = [(_flat(c, "data"), _flat(c, "models"), _flat(c, "training")) for c in configs.values()]
    assert all(s == shared[0] for s in shared)
    assert configs["cgns"].method.loss_weights["false_negative"] == 1e-4  # from cgns.yaml
    assert configs["cgns"].method.params["cluster_k"] == 8  # the sweep's demo knob
    assert configs["asg"].method.name == "asg" and "arsa" in configs["asg"].method.loss_weights
    assert configs["clip"].training.max_steps == spec.base["training.max_steps"]


def test_3d_methods_get_the_ct_settings_and_seeds_change_only_the_seed():
    spec = load_sweep_spec("sweep")
    ct = run_config(spec, "medfinder", 0, True)
    assert ct.data.modality == "ct" and ct.models.img_model.endswith("_3d")
    assert ct.training.max_steps == spec.base["training.max_steps"]  # same budget as 2D
    a, b = run_config(spec, "cgns", 0, False), run_config(spec, "cgns", 2, False)
    assert b.training.random_seed == 2
    b.training.random_seed = 0
    assert to_dict(a) == to_dict(b)


def test_unknown_sweep_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"methods": ["clip"], "method_list": ["x"]}))
    with pytest.raises(SweepError, match="method_list"):
        load_sweep_spec(str(path))


def test_leaderboard_is_mean_and_sample_std_over_seeds():
    rows = pd.DataFrame({
        "modality": ["cxr"] * 5, "method": ["clip", "clip", "clip", "locked", "locked"],
        "seed": [0, 1, 2, 0, 1], "metric": ["mean_R@10"] * 5, "value": [10.0, 20.0, 30.0, 5.0, 5.0]})
    table = leaderboard_table(rows, ["mean_R@10"]).set_index("method")
    assert table.loc["clip", "mean"] == pytest.approx(20.0) and table.loc["clip", "std"] == pytest.approx(10.0)
    assert table.loc["locked", "std"] == 0.0 and table.loc["clip", "n_seeds"] == 3
    text = leaderboard_markdown(leaderboard_table(rows, ["mean_R@10"]), ["mean_R@10"])
    assert "| clip | 3 | 20.0 ± 10.0 |" in text and "| locked | 2 | 5.0 ± 0.0 |" in text


@pytest.mark.slow
def test_tiny_sweep_end_to_end_writes_one_leaderboard(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    spec = {
        "methods": ["asg", "medfinder"], "baselines": ["locked"], "methods_3d": ["medfinder"], "seeds": 1,
        "split": "test", "evaluations": ["retrieval", "classaware"], "metrics": ["mean_R@10", "i2t_P@10"],
        "headline": ["mean_R@10"], "encoders": "tiny",
        "encoder_profiles": {"tiny": {"models.img_model": "tiny_vit"}},
        "base": {"data.n_studies": 40, "data.n_ct_studies": 12, "data.image_size": 64, "data.volume_size": [32, 32, 32],
                 "models.tiny": True, "models.img_pretrained": False, "models.text_pretrained": False,
                 "models.embed_dim": 16, "training.batch_size": 4, "training.max_steps": 2, "training.warmup_steps": 1,
                 "training.eval_every": 0, "training.device": "cpu"},
        "ct": {"data.modality": "ct", "models.img_model": "resnet10_3d", "training.batch_size": 2},
        "per_method": {"locked": {"method.params.epochs": 2}, "asg": {"method.params.num_tags": 11}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_sweep(methods="all", seeds=1, config=str(path), progress=False)
    assert result.folder.parent == tmp_path / "runs"
    for name in ("asg-0", "locked-0"):
        assert (result.folder / "train" / name / "encoders.json").is_file()
    for name in ("medfinder-0", "locked-0"):
        assert (result.folder / "ct" / "train" / name / "encoders.json").is_file()
    board = result.leaderboard
    assert set(zip(board["modality"], board["method"])) >= {("cxr", "asg"), ("cxr", "locked"), ("ct", "medfinder"),
                                                            ("ct", "locked")}
    r10 = board[board["metric"] == "mean_R@10"]
    assert r10["mean"].between(0, 100).all() and (r10["n_seeds"] == 1).all()
    assert all(p.is_file() and p.stat().st_size > 0 for p in result.files.values())
    assert "| asg | 1 |" in result.files["md"].read_text()
    saved = pd.read_csv(result.files["csv"])
    assert math.isclose(saved["mean"].sum(), board["mean"].sum())


def test_sweep_caches_the_source_images_at_its_own_size_and_leaves_the_source_alone(tmp_path, tiny_manifest):
    from workbench.data.cache import build_image_cache, build_volume_cache
    from workbench.data.datasets import StudyDataset
    from workbench.data.manifest import write_manifest
    from workbench.sweep import _sweep_cache

    source, folder = tmp_path / "source", tmp_path / "sweep"
    write_manifest(tiny_manifest, source / "manifest.parquet")
    build_image_cache(tiny_manifest, source / "cache", 64, progress=False)
    build_volume_cache(tiny_manifest, source / "cache", (16, 16, 16), progress=False)
    before = sorted(p.name for p in (source / "cache").iterdir())

    sizes = _sweep_cache(source, folder, 48, progress=False)

    assert sizes == {"data.image_size": 48, "data.volume_size": [16, 16, 16]}
    assert sorted(p.name for p in (source / "cache").iterdir()) == before  # nothing written there
    assert not (folder / "cache").is_symlink() and (folder / "manifest.parquet").exists()
    images = StudyDataset(tiny_manifest, folder / "cache", split="train", fields=("image",))
    assert tuple(images[0]["image"].shape[-2:]) == (48, 48)
    volumes = StudyDataset(tiny_manifest, folder / "cache", modality="ct", fields=("image",))
    assert tuple(volumes[0]["image"].shape[-3:]) == (16, 16, 16)
    built = (folder / "cache" / "images_48.npy").stat().st_mtime_ns
    assert _sweep_cache(source, folder, 48, progress=False) == sizes  # a resumed sweep reuses its cache
    assert (folder / "cache" / "images_48.npy").stat().st_mtime_ns == built
    # same size as the source: the source's cache is linked, not rebuilt
    linked = _sweep_cache(source, tmp_path / "same", 64, progress=False)
    assert (tmp_path / "same" / "cache").is_symlink() and linked["data.image_size"] == 64


def test_chance_levels_come_from_the_suite_rows_and_mean_metrics_average_both_directions():
    from workbench.sweep import chance_levels

    rows = pd.DataFrame({"modality": ["ct", "ct", "cxr"], "metric": ["i2t_R@10_chance", "t2i_R@10_chance", "i2t_P@10"],
                         "value": [25.0, 27.0, 40.0]})
    levels = chance_levels(rows, ["mean_R@10", "i2t_R@10", "i2t_P@10"])
    assert levels == {("ct", "mean_R@10"): 26.0, ("ct", "i2t_R@10"): 25.0}  # P@10 has no recorded chance
