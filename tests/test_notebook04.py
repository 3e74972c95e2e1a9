"""Notebook 04 (evaluate) under papermill on a tiny run: baselines trained, metrics written."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest

from eval_fixtures import make_run


def test_notebook04_metadata_and_single_parameters_cell():
    from workbench.runs import notebook_path

    nb = nbformat.read(notebook_path("04_evaluate"), as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3" and nb.metadata["language_info"]["name"] == "python"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for assignment in ('run_dir = ""', 'methods = "all"', 'evaluations = "retrieval,classaware,zeroshot,probe"',
                       'split = "test"', "seed = 0"):
        assert assignment in tagged[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs for c in code)
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines())
    assert sum(len(c.source.splitlines()) for c in code) < 60


@pytest.mark.slow
def test_notebook04_trains_baselines_and_writes_the_evaluation(run_dir, execute_notebook):
    make_run(run_dir)
    out = execute_notebook("04_evaluate", run_dir, config="tiny",
                           overrides="method.params.epochs=2 eval.bootstrap=10 eval.probe_fractions=[0.5,1.0]")
    table = pd.read_csv(run_dir / "eval" / "metrics.csv")
    assert set(table["checkpoint"]) == {"frozen-0", "locked-0"}
    assert set(table["evaluation"]) == {"retrieval", "classaware", "zeroshot", "probe"}
    assert (table["split"] == "test").all()
    assert json.loads((run_dir / "train" / "locked-0" / "run.json").read_text())["status"] == "finished"
    executed = nbformat.read(out, as_version=4)
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # retrieval, class-aware, zero-shot + ROC, probe figures
    printed = "".join(o.get("data", {}).get("text/plain", "") for c in executed.cells[-1:] for o in c.outputs)
    assert "locked" in printed and "frozen" in printed
