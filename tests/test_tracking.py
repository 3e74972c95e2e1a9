"""TensorBoard (and MLflow on request) show exactly the numbers of metrics.csv, including
after a kill and resume (issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd
import pytest

from test_trainer import Crash, PatternPairs, crash_at_step, seeded_method, tiny_cfg
from workbench.config import ConfigError, load_config
from workbench.train.trainer import Trainer


def tensorboard_scalars(folder: Path) -> Dict[str, List[Tuple[int, float]]]:
    """tag -> [(step, value)] over every event file of `folder`, as TensorBoard shows them
    (a resumed run's purge drops the killed run's later events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def csv_scalars(metrics: pd.DataFrame) -> Dict[str, List[Tuple[int, float]]]:
    out: Dict[str, List[Tuple[int, float]]] = {}
    for _, row in metrics.iterrows():
        is_val = any(str(k).startswith("val/") and pd.notna(v) for k, v in row.items())
        for key, value in row.items():
            if key in ("step", "epoch", "stage") or pd.isna(value):
                continue
            tag = key if is_val else f"train/{key}"
            out.setdefault(tag, []).append((int(row["step"]), float(value)))
    return out


def assert_same(tb, csv) -> None:
    assert set(tb) == set(csv)
    for tag, points in csv.items():
        assert [s for s, _ in tb[tag]] == [s for s, _ in points], tag
        assert [v for _, v in tb[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-7), tag


def test_a_clip_run_writes_tensorboard_scalars_equal_to_metrics_csv(tmp_path):
    cfg = tiny_cfg(tmp_path, num_epochs=2, max_steps=-1, eval_every=1)
    out = tmp_path / "train" / "clip-0"
    Trainer(seeded_method(cfg), cfg, out, train_data=PatternPairs(32), val_data=PatternPairs(8, seed=1),
            progress=False).fit()
    metrics = pd.read_csv(out / "metrics.csv")
    tb = tensorboard_scalars(out / "tensorboard")
    assert {"train/loss", "train/lr", "val/mean_R@10"} <= set(tb)
    assert any(t.startswith("train/loss/") for t in tb)  # every named loss term
    assert_same(tb, csv_scalars(metrics))


def test_a_resumed_run_shows_each_step_once_with_the_csv_values(tmp_path):
    settings = dict(num_epochs=3, max_steps=-1, eval_every=0, grad_accum=2, batch_size=4)
    out = tmp_path / "train" / "clip-0"
    cfg = tiny_cfg(tmp_path, **settings)
    method = seeded_method(cfg)
    crash_at_step(method, 5)  # killed in epoch 2, after its checkpoint at step 3
    with pytest.raises(Crash):
        Trainer(method, cfg, out, train_data=PatternPairs(24), progress=False).fit()
    cfg = tiny_cfg(tmp_path, resume=True, **settings)
    Trainer(seeded_method(cfg), cfg, out, train_data=PatternPairs(24), progress=False).fit()
    tb = tensorboard_scalars(out / "tensorboard")
    assert [s for s, _ in tb["train/loss"]] == list(range(1, 10))
    assert_same(tb, csv_scalars(pd.read_csv(out / "metrics.csv")))


def test_mlflow_records_the_same_metrics_in_a_local_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_cfg(tmp_path, num_epochs=1, max_steps=-1, eval_every=0, trackers="tensorboard,mlflow")
    out = tmp_path / "run" / "train" / "clip-0"
    Trainer(seeded_method(cfg), cfg, out, run_dir=tmp_path / "run", train_data=PatternPairs(16),
            progress=False).fit()
    client = MlflowClient((tmp_path / "run" / "mlruns").as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("run").experiment_id])
    assert run.info.run_name == "clip-0" and run.data.params["method.name"] == "clip"
    metrics = pd.read_csv(out / "metrics.csv")
    history = client.get_metric_history(run.info.run_id, "train.loss")
    assert client.get_metric_history(run.info.run_id, "train.lr")
    assert [m.step for m in history] == list(metrics["step"])
    assert [m.value for m in history] == pytest.approx(list(metrics["loss"]))


def test_an_unknown_tracker_is_a_config_error():
    with pytest.raises(ConfigError, match="wandb.*known: \\['tensorboard', 'mlflow'\\]"):
        load_config("tiny", ["training.trackers=tensorboard,wandb"])
