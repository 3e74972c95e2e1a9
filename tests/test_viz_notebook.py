"""Notebook 05 runs headless under papermill on a tiny run and leaves its figures in inspect/."""

from __future__ import annotations

import json
import shutil

import nbformat
import pytest


def test_notebook_05_has_one_parameters_cell_with_run_dir():
    from workbench.runs import notebook_path

    nb = nbformat.read(notebook_path("05_inspect"), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'run_dir = ""' in tagged[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3" and nb.metadata["language_info"]["name"] == "python"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") for c in code), "commit notebooks without outputs"
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines())


@pytest.mark.slow
def test_notebook_05_runs_under_papermill_and_saves_its_figures(tiny_inspect_run, tmp_path, execute_notebook):
    run = tmp_path / "run"
    shutil.copytree(tiny_inspect_run, run)
    executed = execute_notebook("05_inspect", run, split="val", max_points=50, device="cpu")
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    inspect = run / "inspect"
    assert list(inspect.glob("embeddings-*.npz")) and list(inspect.glob("umap-*.parquet"))
    assert (inspect / "embedding_map-finding.png").read_bytes()[:4] == b"\x89PNG"
    assert list(inspect.glob("attention-*-similarity.png"))
    peak = json.loads((inspect / "peak_in_mask-similarity.json").read_text())
    assert peak["n"] > 0 and 0.0 <= peak["rate"] <= 1.0 and 0.0 < peak["chance"] < 1.0
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "peak inside mask" in text and "tiny-0" in text
