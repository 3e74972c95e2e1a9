"""The training loop: logging of named terms, schedule, export, best-model selection, early
stopping, exact resume, and a real run on a prepared tiny run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from workbench.config import load_config
from workbench.methods import create_method
from workbench.train.trainer import (CHECKPOINT_NAME, Trainer, TrainingError, higher_is_better, resolve_amp, train,
                                     warmup_cosine)

FINDINGS = ["no acute findings", "left pleural effusion", "right upper lobe pneumonia", "cardiomegaly"]


class PatternPairs(Dataset):
    """Synthetic image-report pairs: each finding draws its own bright quadrant, so an image's
    report is recoverable from the pixels (alignment is learnable)."""

    def __init__(self, n: int, size: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            k = i % len(FINDINGS)
            image = 0.2 * torch.randn(3, size, size, generator=g)
            r, c = divmod(k, 2)
            half = size // 2
            image[:, r * half:(r + 1) * half, c * half:(c + 1) * half] += 1.5
            self.items.append({"image": image, "text": f"{FINDINGS[k]}. study {i}.", "study_id": f"s{i}"})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def seeded_method(cfg, seed: int = 0):
    """Build the method with seeded initial weights (as `train()` does)."""
    torch.manual_seed(seed)
    return create_method("clip", cfg)


def tiny_cfg(tmp_path: Path, **training):
    overrides = ["training.device=cpu", "training.warmup_steps=2", "training.batch_size=8",
                 "training.learning_rate=0.003", "models.embed_dim=16", "eval.bootstrap=0"]
    overrides += [f"training.{k}={v}" for k, v in training.items()]
    cfg = load_config("tiny", overrides)
    cfg.method.name = "clip"
    return cfg


def test_warmup_then_cosine_schedule_reaches_zero():
    f = warmup_cosine(warmup_steps=4, total_steps=20)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(12) == pytest.approx(0.5)  # half-way through the cosine part
    assert f(20) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))


def test_amp_is_off_on_cpu_unless_bf16_is_asked_for():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None
    assert resolve_amp("fp16", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(TrainingError, match="training.amp"):
        resolve_amp("half", cpu)


def test_rank_metrics_select_lower_values():
    assert higher_is_better("val/mean_R@10") and not higher_is_better("val/i2t_MdR")


def test_fit_logs_each_named_term_and_exports_loadable_encoders(tmp_path):
    from workbench.models import load_encoders

    cfg = tiny_cfg(tmp_path, max_steps=6, eval_every=0)
    method = seeded_method(cfg)
    out = tmp_path / "train" / "clip-42"
    result = Trainer(method, cfg, out, train_data=PatternPairs(32), progress=False).fit()

    assert result.global_step == 6
    frame = pd.read_csv(out / "metrics.csv")
    steps = frame.dropna(subset=["loss"])
    assert list(steps["step"]) == [1, 2, 3, 4, 5, 6]
    assert {"loss", "loss/contrastive", "lr", "grad_norm", "stage"} <= set(frame.columns)
    assert steps["loss"].tolist() == pytest.approx(steps["loss/contrastive"].tolist())
    assert steps["lr"].iloc[0] < steps["lr"].iloc[1]  # warm-up
    assert (out / CHECKPOINT_NAME).is_file()

    reloaded = load_encoders(out)
    batch = method.collate([PatternPairs(4)[i] for i in range(4)])
    method.eval()
    with torch.no_grad():
        expected = method.model.encode_image(batch["image"])
        assert torch.allclose(reloaded.encode_image(batch["image"]), expected, atol=1e-6)


def test_training_lowers_the_contrastive_loss(tmp_path):
    cfg = tiny_cfg(tmp_path, max_steps=24, eval_every=0, warmup_steps=1)
    method = seeded_method(cfg)
    result = Trainer(method, cfg, tmp_path / "out", train_data=PatternPairs(64), progress=False).fit()
    losses = result.metrics.dropna(subset=["loss"])["loss"].to_numpy()
    assert losses[-4:].mean() < losses[:4].mean() - 0.2


class Scripted:
    """A validation function that reports a scripted metric sequence (tests selection logic)."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def __call__(self, method, loader, device):
        value = self.values[self.calls]
        self.calls += 1
        return {"mean_R@10": value}


def test_best_model_is_kept_and_early_stopping_ends_the_run(tmp_path):
    # 4 samples per epoch / batch 8 -> use 16 samples: 2 steps per epoch, 10 epochs budget.
    cfg = tiny_cfg(tmp_path, num_epochs=10, max_steps=-1, eval_every=1, early_stopping_patience=2)
    method = seeded_method(cfg)
    validate = Scripted([10.0, 30.0, 20.0, 25.0, 50.0, 60.0])
    out = tmp_path / "out"
    result = Trainer(method, cfg, out, train_data=PatternPairs(16), val_data=PatternPairs(8, seed=1),
                     validate=validate, progress=False).fit()
    assert validate.calls == 4  # best at epoch 2, then two validations without improvement
    assert result.stopped_early and result.epochs_run == 4
    assert result.best_metric == 30.0 and result.best_step == 4
    vals = result.metrics.dropna(subset=["val/mean_R@10"])
    assert vals["val/mean_R@10"].tolist() == [10.0, 30.0, 20.0, 25.0]
    assert (out / "encoders.safetensors").is_file()


def test_unknown_selection_metric_names_the_available_ones(tmp_path):
    cfg = tiny_cfg(tmp_path, num_epochs=1, max_steps=-1, select_metric="val/R@10")
    method = seeded_method(cfg)
    with pytest.raises(TrainingError, match="mean_R@10"):
        Trainer(method, cfg, tmp_path / "o", train_data=PatternPairs(16), val_data=PatternPairs(8),
                validate=Scripted([1.0]), progress=False).fit()


def test_too_small_training_set_says_how_to_fix_it(tmp_path):
    cfg = tiny_cfg(tmp_path, batch_size=64)
    with pytest.raises(TrainingError, match="lower training.batch_size"):
        Trainer(seeded_method(cfg), cfg, tmp_path / "o", train_data=PatternPairs(16), progress=False).fit()


class Crash(RuntimeError):
    pass


def crash_at_step(method, step: int, error: type = Crash) -> None:
    """Make `method` raise `error` at the end of optimiser step `step` (a simulated kill)."""
    def crash(at, _losses):
        if at == step:
            raise error("simulated power cut")

    method.on_step_end = crash


def test_resume_reproduces_the_next_steps_loss_exactly(tmp_path):
    """A run killed in epoch 2 and resumed from its end-of-epoch-1 checkpoint logs the same
    losses, step for step, as a run that was never interrupted."""
    settings = dict(num_epochs=3, max_steps=-1, eval_every=0, grad_accum=2, batch_size=4)
    data = PatternPairs(24)  # 6 batches of 4 = 3 steps per epoch with grad_accum 2

    cfg = tiny_cfg(tmp_path, **settings)
    straight = Trainer(seeded_method(cfg), cfg, tmp_path / "straight", train_data=data,
                       progress=False).fit()
    reference = straight.metrics.set_index("step")["loss"]

    cfg = tiny_cfg(tmp_path, **settings)
    crashing = seeded_method(cfg)
    crash_at_step(crashing, 5)  # in epoch two
    with pytest.raises(Crash):
        Trainer(crashing, cfg, tmp_path / "resumed", train_data=data, progress=False).fit()

    cfg = tiny_cfg(tmp_path, resume=True, **settings)
    resumed = Trainer(seeded_method(cfg), cfg, tmp_path / "resumed", train_data=data, progress=False).fit()
    after = resumed.metrics.set_index("step")["loss"]
    assert list(after.index) == list(range(1, 10))
    assert after.loc[4] == reference.loc[4]  # the first step after the checkpoint, bit for bit
    assert after.loc[4:].tolist() == reference.loc[4:].tolist()


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    """A tiny run folder as notebook 00 writes it (generated phantoms, manifest, cache)."""
    from workbench.data import prepare_run_data

    run_dir = tmp_path_factory.mktemp("run")
    prepare_run_data(load_config("tiny"), run_dir, progress=False)
    return run_dir


def test_train_writes_checkpoint_metrics_and_run_record_into_the_run_folder(prepared_run):
    cfg = load_config("tiny", ["method.name=clip", "training.max_steps=3", "training.random_seed=7"])
    result = train(cfg, prepared_run, progress=False)
    out = prepared_run / "train" / "clip-7"
    assert result.out_dir == out
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["method"] == "clip" and record["seed"] == 7
    assert record["global_step"] == 3
    frame = pd.read_csv(out / "metrics.csv")
    val = frame.dropna(subset=["val/mean_R@10"])
    assert len(val) == 1
    for key in ("val/i2t_R@1", "val/t2i_R@10", "val/i2t_MdR"):
        assert math.isfinite(val[key].iloc[0])
    assert (out / "encoders.json").is_file() and (out / CHECKPOINT_NAME).is_file()
