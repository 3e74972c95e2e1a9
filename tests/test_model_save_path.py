"""`data.model_save_path` (the MedTrim seed's name): training output lands under it instead of
the run folder's `train/`."""

from __future__ import annotations

import json

from workbench.config import load_config
from workbench.data import prepare_run_data
from workbench.train.trainer import train, train_folder


def test_default_output_folder_is_the_run_folders_train(tmp_path):
    assert train_folder(tmp_path, "clip", 3) == tmp_path / "train" / "clip-3"
    assert train_folder(tmp_path, "clip", 3, tmp_path / "models") == tmp_path / "models" / "clip-3"


def test_model_save_path_receives_checkpoint_metrics_and_run_record(run_dir, tmp_path):
    prepare_run_data(load_config("tiny", ["data.n_studies=24", "data.n_ct_studies=2"]), run_dir, progress=False)
    save = tmp_path / "models"
    cfg = load_config("tiny", ["method.name=clip", "training.max_steps=1", "training.random_seed=5",
                               f"data.model_save_path={save}"])
    result = train(cfg, run_dir, progress=False)
    out = save / "clip-5"
    assert result.out_dir == out
    assert (out / "checkpoint" / "last.safetensors").is_file() and (out / "metrics.csv").is_file()
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not (run_dir / "train").exists()
