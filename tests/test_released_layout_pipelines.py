"""The notebook pipeline 00 -> 05 under papermill on trees in the released layouts, as a user
points it at their copy: `python -m workbench.cli pipeline -p dataset <name> -p data_root DIR`
with the `tiny` profile. Asserts the kept studies and skips, the label set, the modality the
steps ran on, and that every trained method and baseline reached the metrics."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from released_layouts import write_bimcv_r, write_ct_rate, write_mimic_cxr_jpg
from workbench.data import read_manifest
from workbench.cli import run_pipeline

pytestmark = pytest.mark.slow
NOTEBOOKS = ["00_data_prep.ipynb", "01_ober.ipynb", "02_triplet_mining.ipynb", "04_evaluate.ipynb",
             "05_inspect.ipynb"]


def run(tmp_path, facts, dataset: str, **params):
    folder = run_pipeline({"dataset": dataset, "data_root": str(facts.root), "profile": "tiny", "max_steps": 2,
                           **params}, run_dir=tmp_path / "run")
    manifest = read_manifest(folder)
    record = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["study_id"]) == sorted(facts.kept)
    assert record["status"] == "finished" and record["skips"] == {**facts.skipped, **facts.kept_reasons}
    assert all((folder / name).is_file() for name in NOTEBOOKS)
    assert json.loads((folder / "run.json").read_text())["status"] == "finished"
    return folder, manifest, record, pd.read_csv(folder / "eval" / "metrics.csv")


def test_ct_rate_tree_runs_every_notebook_with_the_3d_methods_and_its_18_labels(tmp_path):
    facts = write_ct_rate(tmp_path / "ct-rate")
    folder, manifest, record, metrics = run(tmp_path, facts, "ctrate")
    assert record["modalities"] == {"ct": len(facts.kept)}
    assert record["preprocessing"]["ct"]["window_hu"] == [-1000.0, 1000.0]
    from workbench.data.labels import label_columns

    assert len(label_columns(manifest.columns)) == 18 and set(manifest["label_source"]) == {"ctrate_predicted"}
    ober = pd.read_parquet(folder / "ober.parquet")
    assert {"Lung nodule", "Pleural effusion", "Emphysema"} <= set(ober.columns)  # ctrate18, chosen from the data
    assert set(metrics["checkpoint"]) == {"medfinder-0", "frozen-ct-0", "locked-ct-0"}
    assert set(metrics["modality"]) == {"ct"}
    assert {"retrieval", "zeroshot", "probe"} <= set(metrics["evaluation"])  # CT-RATE's labels are scored
    assert (folder / "03_pretrain-medfinder.ipynb").is_file() and not (folder / "03_pretrain-clip.ipynb").exists()


def test_bimcv_r_tree_runs_every_notebook_on_ct_only(tmp_path):
    facts = write_bimcv_r(tmp_path / "bimcv-r")
    folder, manifest, record, metrics = run(tmp_path, facts, "bimcv")
    assert set(manifest["modality"]) == {"ct"}
    assert "No radiographs in this run" in (folder / "00_data_prep.ipynb").read_text()
    assert set(metrics["checkpoint"]) == {"medfinder-0", "frozen-ct-0", "locked-ct-0"}
    assert "retrieval" in set(metrics["evaluation"])


def test_mimic_cxr_jpg_tree_with_gzip_tables_runs_every_notebook_with_the_2d_methods(tmp_path):
    facts = write_mimic_cxr_jpg(tmp_path / "mimic")
    folder, manifest, record, metrics = run(tmp_path, facts, "mimic", report_root=str(facts.extra["report_root"]))
    assert record["modalities"] == {"cxr": len(facts.kept)}
    assert "No CT volumes in this run" in (folder / "00_data_prep.ipynb").read_text()
    ober = pd.read_parquet(folder / "ober.parquet")
    assert {"Pleural Effusion", "No Finding"} <= set(ober.columns)  # chexpert14, chosen from the data
    assert set(metrics["checkpoint"]) == {"clip-0", "medtrim-0", "frozen-0", "locked-0"}
    assert set(metrics["modality"]) == {"cxr"}
    zeroshot = metrics[metrics["evaluation"] == "zeroshot"]["metric"].astype(str)
    assert not zeroshot.str.contains("source").any()  # label_source is not a finding
