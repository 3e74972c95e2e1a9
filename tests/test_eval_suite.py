"""Embedding, the baselines and the suite on a small synthetic run folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.config import load_config

from eval_fixtures import FINDINGS, make_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("evalrun") / "run")


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config("tiny", overrides=["method.params.epochs=3", "method.params.batch_size=8"])


@pytest.fixture(scope="module")
def baselines(tiny_run, tiny_cfg):
    from workbench.eval.baselines import ensure_baselines

    return ensure_baselines(tiny_run, tiny_cfg, seed=0, progress=False)


def test_embed_split_matches_encode_image_and_is_cached(tiny_run, tiny_cfg, tmp_path):
    from workbench.data.datasets import StudyDataset
    from workbench.data.manifest import read_manifest
    from workbench.eval.embed import embed_split
    from workbench.models import build_dual_encoder

    torch.manual_seed(0)
    model = build_dual_encoder(tiny_cfg.models).eval()
    manifest = read_manifest(tiny_run)
    img, txt, feats = embed_split(model, manifest, tiny_run / "cache", "test", store_dir=tmp_path, progress=False)
    ds = StudyDataset(manifest, tiny_run / "cache", split="test", fields=("image", "text"))
    with torch.no_grad():
        direct = model.encode_image(torch.stack([ds[i]["image"] for i in range(len(ds))])).numpy()
        direct_txt = model.encode_text(**model.tokenize([ds[i]["text"] for i in range(len(ds))])).numpy()
    assert np.allclose(img, direct, atol=1e-5) and np.allclose(txt, direct_txt, atol=1e-5)
    assert feats.study_ids == list(ds.frame["study_id"]) and feats.labels.shape == (len(ds), len(FINDINGS))
    assert len(list(tmp_path.glob("*_test.npz"))) == 1
    again = embed_split(model, manifest, tiny_run / "cache", "test", store_dir=tmp_path, progress=False)[0]
    assert np.array_equal(again, img)


def test_baselines_save_checkpoints_with_run_records(baselines):
    from workbench.models import load_extra_state

    names = [f.name for f in baselines]
    assert names == ["frozen-0", "locked-0"]
    for folder in baselines:
        record = json.loads((folder / "run.json").read_text())
        assert record["status"] == "finished" and record["config"]["method"]["name"] == folder.name[:-2]
    extra = load_extra_state(baselines[1])
    assert len(extra["history"]) == 3 and 1 <= extra["best_epoch"] <= 3


def test_locked_baseline_changes_only_the_projections(baselines):
    from workbench.models import load_encoders

    frozen, locked = (load_encoders(f) for f in baselines)
    for name, tensor in frozen.state_dict().items():
        if name.startswith(("image_encoder.", "text_encoder.")):
            assert torch.equal(tensor, locked.state_dict()[name]), name
    assert not torch.equal(frozen.image_proj.net.weight, locked.image_proj.net.weight)


def test_evaluate_run_writes_tidy_metrics_for_every_checkpoint(tiny_run, baselines):
    from workbench.eval.suite import COLUMNS, evaluate_run

    rows = evaluate_run(tiny_run, evaluations="retrieval,classaware,zeroshot,probe", split="test", n_boot=20,
                        device="cpu", progress=False, probe_fractions=(0.1, 1.0))
    table = pd.read_csv(tiny_run / "eval" / "metrics.csv")
    assert list(table.columns) == COLUMNS and len(table) == len(rows)
    assert set(table["method"]) == {"frozen", "locked"} and set(table["evaluation"]) == {
        "retrieval", "classaware", "zeroshot", "probe"}
    frozen = table[(table.method == "frozen") & (table.metric == "i2t_R@1")].iloc[0]
    assert frozen.ci_low <= frozen.value <= frozen.ci_high and frozen.n == 9
    chance = table[(table.method == "frozen") & (table.metric == "i2t_R@1_chance")].value.iloc[0]
    assert chance == pytest.approx(100 / 9)
    assert {"AUC/Effusion", "AUC", "F1", "Acc"} <= set(table[table.evaluation == "zeroshot"].metric)
    assert {"probe_AUC@10%", "probe_AUC@100%"} <= set(table.metric)
    # one setting hash per method, seeds excluded
    assert table.groupby("method")["setting_hash"].nunique().eq(1).all()
    assert (tiny_run / "eval" / "locked-0" / "zeroshot_test.npz").is_file()
    payload = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    assert len(payload["rows"]) == len(table)
    # evaluating one method again replaces its rows instead of duplicating them
    evaluate_run(tiny_run, methods="frozen", evaluations="retrieval", n_boot=5, device="cpu", progress=False)
    again = pd.read_csv(tiny_run / "eval" / "metrics.csv")
    assert len(again) == len(table)


def test_unknown_evaluation_is_named(tiny_run):
    from workbench.eval.suite import evaluate_run

    with pytest.raises(ValueError, match="retrieval"):
        evaluate_run(tiny_run, evaluations="retrieval,speed")


def test_leaderboard_gathers_runs_with_cis_and_plots(tiny_run, baselines, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from workbench.eval.leaderboard import format_leaderboard, gather_metrics, leaderboard, leaderboard_plot
    from workbench.eval.plots import metric_bars, roc_curves
    from workbench.eval.suite import evaluate_run

    if not (tiny_run / "eval" / "metrics.csv").is_file():
        evaluate_run(tiny_run, evaluations="retrieval,zeroshot", n_boot=10, device="cpu", progress=False)
    root = tiny_run.parent
    tidy = gather_metrics(root)
    board = leaderboard(root, metrics=("i2t_R@10", "AUC"))
    assert set(board["method"]) == {"frozen", "locked"} and {"i2t_R@10", "i2t_R@10 lo", "i2t_R@10 hi"} <= set(board)
    assert len(board) == 2 and (board["split"] == "test").all()
    printable = format_leaderboard(board, ("i2t_R@10",))
    assert printable["i2t_R@10"].str.contains(r"\[").all()
    assert leaderboard_plot(board, "i2t_R@10").axes
    retrieval = tidy[tidy.evaluation == "retrieval"]
    assert metric_bars(retrieval, ["i2t_R@1", "i2t_R@10"], chance={"i2t_R@10": 50.0}).axes
    assert roc_curves(tiny_run / "eval" / "locked-0" / "zeroshot_test.npz").axes
    assert leaderboard(tmp_path).empty
