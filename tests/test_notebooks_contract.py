"""Every notebook keeps the notebook-first contract that papermill and the pipeline rely on."""

import ast
import json
from pathlib import Path

import pytest
from papermill.inspection import inspect_notebook

from workbench.pipeline import plan_pipeline
from workbench.runs import notebook_path

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_the_six_ordered_notebooks_exist():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_that_papermill_reads_whole(path):
    tagged = [c for c in _code_cells(path) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    assigned = [t.id for node in ast.parse("".join(tagged[0]["source"])).body
                for t in getattr(node, "targets", [])]
    # papermill silently drops a parameter whose line it cannot parse (e.g. '=' in a comment)
    assert list(inspect_notebook(str(path))) == assigned
    assert "run_dir" in assigned


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_a_kernelspec_and_no_definitions(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"]["language_info"]["name"] == "python"
    for cell in _code_cells(path):
        assert not cell.get("outputs") and cell.get("execution_count") is None
        tree = ast.parse("".join(cell["source"]))
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(tree))


def test_pipeline_names_only_existing_notebooks_in_order():
    stems = [notebook_path(step.notebook).stem for step in plan_pipeline({}).steps]
    assert stems == sorted(stems) and {s[:2] for s in stems} == {"00", "01", "02", "03", "04", "05"}
