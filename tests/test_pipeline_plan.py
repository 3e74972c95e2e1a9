"""The pipeline plans the steps that fit a dataset's modalities, and redraws after notebook 00."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from workbench.data.defaults import default_label_set, default_mining_modality, manifest_modalities
from workbench.pipeline import plan_pipeline


def _by_notebook(plan):
    return [(s.notebook, s.params) for s in plan.steps]


def test_a_radiograph_dataset_trains_the_2d_methods_with_research_configs():
    plan = plan_pipeline({"dataset": "mimic", "data_root": "/data/mimic-cxr-jpg"})
    assert plan.profile == "research" and plan.modalities == ("cxr",) and plan.label_set == "chexpert14"
    trained = [p["method"] for n, p in _by_notebook(plan) if n == "03_pretrain"]
    assert trained == ["clip", "medtrim"]
    assert plan.steps[0].params == {"dataset": "mimic", "config": "demo", "data_root": "/data/mimic-cxr-jpg"}
    assert "medfinder" not in plan.describe()


@pytest.mark.parametrize("dataset", ["ctrate", "bimcv"])
def test_a_ct_dataset_trains_medfinder_labels_with_ctrate18_and_caches_at_its_volume_size(dataset):
    plan = plan_pipeline({"dataset": dataset, "data_root": "/data/ct"})
    assert plan.modalities == ("ct",) and plan.label_set == "ctrate18" and plan.methods == ["medfinder"]
    steps = _by_notebook(plan)
    assert steps[0][1]["config"] == "medfinder"  # the research MedFinder config's volume size
    assert ("03_pretrain", {"method": "medfinder", "config": "medfinder"}) in steps
    assert steps[-1] == ("05_inspect", {"method": "medfinder", "split": "val,test"})
    assert plan_pipeline({"dataset": dataset, "profile": "demo"}).steps[0].params["config"] == "medfinder_demo"


def test_a_method_that_does_not_fit_the_data_is_refused_naming_the_ones_that_do():
    with pytest.raises(ValueError, match=r"do not fit a ct dataset; methods that fit: \['medfinder'\]"):
        plan_pipeline({"dataset": "ctrate", "train_methods": "clip"})
    with pytest.raises(ValueError, match="Unknown dataset"):
        plan_pipeline({"dataset": "mimik"})


def test_the_plan_is_redrawn_from_the_manifest_after_notebook_00(tmp_path, monkeypatch, capsys):
    import workbench.cli as runs
    from workbench.data import write_manifest

    executed = []

    def fake_run_notebook(name, run_dir, params, output_name=None, progress=True):
        executed.append((name, dict(params)))
        if name.startswith("00"):  # a DICOM folder turned out to hold CT series only
            write_manifest(pd.DataFrame([{"subject_id": "p", "study_id": "s", "dataset": "dicom", "modality": "ct",
                                          "view": "axial", "image_path": "/x", "image_paths": ["/x"], "findings": "f",
                                          "impression": "", "report": "f", "split": "train"}]),
                           run_dir / "manifest.parquet")
        (run_dir / output_name).write_text("{}")
        return run_dir / output_name

    monkeypatch.setattr(runs, "run_notebook", fake_run_notebook)
    runs.run_pipeline({"dataset": "dicom", "data_root": str(tmp_path), "profile": "tiny"}, run_dir=tmp_path / "run")
    trained = [p["method"] for n, p in executed if n == "03_pretrain"]
    assert trained == ["medfinder"]
    out = capsys.readouterr().out
    assert "plan: dataset dicom" in out and "the manifest holds ct; plan redrawn" in out
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [s["notebook"] for s in record["steps"]].count("03_pretrain") == 1


def test_notebook_defaults_follow_the_manifest():
    ct = pd.DataFrame({"dataset": ["ctrate"] * 2, "modality": ["ct"] * 2})
    mixed = pd.DataFrame({"dataset": ["demo"] * 2, "modality": ["ct", "cxr"]})
    assert manifest_modalities(mixed) == ("cxr", "ct") and manifest_modalities(ct) == ("ct",)
    assert default_label_set(ct) == "ctrate18" and default_label_set(mixed) == "demo"
    assert default_label_set(pd.DataFrame({"dataset": ["mimic"], "modality": ["cxr"]})) == "chexpert14"
    assert default_mining_modality(ct) == "ct" and default_mining_modality(mixed) == "cxr"
