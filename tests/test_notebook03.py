"""Notebook 03 runs headless under papermill for `medtrim` and `clip` on a tiny run folder
and leaves the checkpoint, metrics and provenance where notebook 04 looks for them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workbench.config import load_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny prepared run folder (notebook 00's output) plus triplets.csv.xz (notebook 02's)."""
    from workbench.data import prepare_run_data
    from workbench.data.labels import label_columns

    run = tmp_path_factory.mktemp("runs") / "run"
    run.mkdir()
    manifest = prepare_run_data(load_config("tiny"), run, progress=False)
    train = manifest[(manifest["split"] == "train") & (manifest["modality"] == "cxr")].reset_index(drop=True)
    labels = train[label_columns(train.columns)].fillna(0).to_numpy() > 0
    keys = ["".join("1" if v else "0" for v in row) for row in labels]
    rng = np.random.default_rng(0)
    rows = []
    for i, key in enumerate(keys):  # positive: same finding set when there is one; negative: another set
        same = [j for j, k in enumerate(keys) if k == key and j != i]
        other = [j for j, k in enumerate(keys) if k != key]
        if same and other:
            rows.append((train["study_id"][i], train["study_id"][rng.choice(same)], train["study_id"][rng.choice(other)]))
    assert len(rows) >= 8
    pd.DataFrame(rows, columns=["anchor", "positive", "negative"]).to_csv(run / "triplets.csv.xz", index=False)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("method", ["medtrim", "clip"])
def test_notebook03_trains_each_method_into_the_run_folder(method, tiny_run, execute_notebook):
    out = execute_notebook("03_pretrain", tiny_run, method=method, config="tiny",
                           overrides="training.max_steps=4 training.batch_size=4 method.params.steps_per_epoch=2",
                           seed=3, device="cpu")
    folder = tiny_run / "train" / f"{method}-3"
    metrics = pd.read_csv(folder / "metrics.csv")
    terms = {"medtrim": {"loss/ii", "loss/it", "loss/tt", "loss/ti"}, "clip": {"loss/contrastive"}}[method]
    assert terms <= set(metrics.columns)
    assert metrics["step"].max() == 4
    assert metrics["val/mean_R@10"].notna().sum() == 2  # one validation per 2-step epoch
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "finished" and record["method"] == method
    assert (folder / "encoders.safetensors").is_file()
    executed = json.loads(out.read_text())
    figures = [o for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) == 2
