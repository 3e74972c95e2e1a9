"""Run folders, provenance and the artifact lookup that ties notebooks together."""

import json
import os
import time

import pytest

from workbench.io import atomic_path
from workbench.runs import RunNotFoundError, RunRecord, find_run_dir, new_run_dir


def test_newest_run_holding_the_artifact_is_found(tmp_path):
    old = new_run_dir("aaaa", root=tmp_path)
    (old / "manifest.parquet").write_bytes(b"x")
    time.sleep(1.1)
    newer = new_run_dir("bbbb", root=tmp_path)
    (newer / "manifest.parquet").write_bytes(b"x")
    time.sleep(1.1)
    new_run_dir("cccc", root=tmp_path)  # newest, but without a manifest
    assert find_run_dir("manifest", root=tmp_path) == newer
    named = tmp_path / "zz-covid-notes"  # sorts last by name, but its manifest is older
    named.mkdir()
    (named / "manifest.parquet").write_bytes(b"x")
    os.utime(named / "manifest.parquet", (0, 0))
    assert find_run_dir("manifest", root=tmp_path) == newer


def test_missing_artifact_names_the_notebook_to_run(tmp_path):
    with pytest.raises(RunNotFoundError, match="00_data_prep"):
        find_run_dir("manifest", root=tmp_path)
    with pytest.raises(RunNotFoundError, match="02_triplet_mining"):
        find_run_dir("triplets", run_dir=tmp_path)


def test_run_record_has_provenance_and_marks_failures(tmp_path):
    with RunRecord(tmp_path, {"training": {"batch_size": 2}}, seed=3):
        running = json.loads((tmp_path / "run.json").read_text())
        assert running["status"] == "running"
    done = json.loads((tmp_path / "run.json").read_text())
    assert done["status"] == "finished" and done["seed"] == 3 and done["end"]
    assert "torch" in done["versions"] and done["git_commit"]
    with pytest.raises(RuntimeError):
        with RunRecord(tmp_path, {}, seed=1):
            raise RuntimeError("boom")
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_pipeline_records_each_step_and_its_provenance(tmp_path, monkeypatch):
    import workbench.cli as runs

    executed = []

    def fake_run_notebook(name, run_dir, params, output_name=None, progress=True):
        executed.append((name, dict(params), output_name))
        out = run_dir / output_name
        out.write_text("{}")
        return out

    monkeypatch.setattr(runs, "run_notebook", fake_run_notebook)
    folder = runs.run_pipeline({"seed": 1, "profile": "tiny"}, run_dir=tmp_path, notebooks=["00_data_prep", "03_pretrain"])
    assert [e[2] for e in executed] == ["00_data_prep.ipynb", "03_pretrain-clip.ipynb", "03_pretrain-medtrim.ipynb",
                                        "03_pretrain-medfinder.ipynb"]
    assert executed[2][1] == {"seed": 1, "method": "medtrim", "config": "tiny"}  # `profile` shapes the plan only
    assert executed[3][1]["config"] == "tiny_ct"
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "finished" and record["seed"] == 1
    assert record["completed"] == ["00_data_prep", "03_pretrain", "03_pretrain", "03_pretrain"]


def test_a_relative_run_dir_reaches_the_notebook_absolute(tmp_path, monkeypatch):
    """papermill runs the kernel in notebooks/, where a relative folder would point elsewhere."""
    import papermill

    from workbench.cli import run_notebook

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, out, parameters, **kw: seen.update(parameters))
    monkeypatch.chdir(tmp_path)
    run_notebook("00_data_prep", "runs/a", {"seed": 2})
    assert seen["run_dir"] == str(tmp_path / "runs" / "a") and seen["seed"] == 2
