"""`models.init_checkpoint`: a method starts from a saved pair; `locked` names this seed's
baseline in the run folder and trains it first when it is absent."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from workbench.config import load_config
from workbench.data import prepare_run_data
from workbench.train.trainer import train


def test_clip_starts_from_the_locked_pair_trained_on_demand(run_dir):
    prepare_run_data(load_config("tiny", ["data.n_studies=24", "data.n_ct_studies=2"]), run_dir, progress=False)
    cfg = load_config("tiny", ["method.name=clip", "training.max_steps=1", "training.random_seed=3",
                               "models.init_checkpoint=locked", "method.params.steps_per_epoch=1",
                               "training.learning_rate=0"])
    result = train(cfg, run_dir, progress=False)
    locked = run_dir / "train" / "locked-3"
    assert (locked / "encoders.safetensors").is_file()  # the dependency was trained first
    start = load_file(str(locked / "encoders.safetensors"))
    after = load_file(str(result.out_dir / "encoders.safetensors"))
    # learning rate 0: the exported pair is the locked pair it started from
    heads = [k for k in start if k.startswith(("image_proj.", "text_proj."))]
    assert heads and all(torch.equal(start[k], after[k]) for k in heads)
    fresh = train(load_config("tiny", ["method.name=clip", "training.max_steps=1", "training.random_seed=4",
                                       "method.params.steps_per_epoch=1", "training.learning_rate=0"]),
                  run_dir, progress=False)
    other = load_file(str(fresh.out_dir / "encoders.safetensors"))
    assert not all(torch.equal(start[k], other[k]) for k in heads)  # without it: a fresh init
