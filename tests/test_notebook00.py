"""Notebook 00 end to end under papermill on a tiny generated demo, and prepare_run_data on it."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest

from workbench.data import StudyDataset, read_manifest


def test_notebook00_metadata_and_single_parameters_cell():
    from workbench.runs import notebook_path

    nb = nbformat.read(notebook_path("00_data_prep"), as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3" and nb.metadata["language_info"]["name"] == "python"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'run_dir = ""' in tagged[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs for c in code)
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines())


@pytest.mark.slow
def test_notebook00_writes_manifest_cache_and_provenance(run_dir, execute_notebook):
    out = execute_notebook("00_data_prep", run_dir, config="tiny", n_studies=40, n_ct_studies=4, image_size=64)
    manifest = read_manifest(run_dir / "manifest.parquet")
    assert (manifest["modality"] == "cxr").sum() == 40 and (manifest["modality"] == "ct").sum() == 4
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert manifest.groupby("subject_id")["split"].nunique().max() == 1
    assert {"label_Effusion", "gt", "regions", "mask_path"} <= set(manifest.columns)
    assert (run_dir / "cache" / "images_64.npy").is_file() and (run_dir / "cache" / "volumes_32x32x32.npy").is_file()
    record = json.loads((run_dir / "manifest.json").read_text())
    assert record["status"] == "finished" and record["n_studies"] == 44 and "config" in record
    assert not (run_dir / "run.json").exists()  # the pipeline-level record is not notebook 00's to write

    cached = StudyDataset(manifest, run_dir / "cache", split="train", fields=("image",), image_size=64)
    raw = cached.raw_image(0)[0].numpy()
    assert raw.shape == (64, 64) and raw.std() > 5  # a real phantom radiograph, not an empty slot

    executed = nbformat.read(out, as_version=4)
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
                     for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "44 studies written" in text and "Effusion" in text
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the radiograph grid and the CT grid


def test_prepare_run_data_on_the_tiny_demo_matches_the_fixture_manifest(tiny_demo_root, tiny_manifest, tmp_path):
    from workbench.config import load_config
    from workbench.data import prepare_run_data

    cfg = load_config("tiny", [f"data.data_root={tiny_demo_root}", "data.image_size=64", "data.volume_size=[32,32,32]"])
    df = prepare_run_data(cfg, tmp_path / "run", progress=False)
    assert list(df["study_id"]) == list(tiny_manifest["study_id"])
    assert list(df["split"]) == list(tiny_manifest["split"])
    labels = df.filter(like="label_").to_numpy(dtype=float)
    assert np.isin(labels[~np.isnan(labels)], [-1.0, 0.0, 1.0]).all() and (labels == 1).any()
    assert df["mask_path"].map(lambda p: p.endswith(".npz")).all()
