"""A training run's plan, priced before it starts: what trains on what, and how long it takes.

Why: the research configs (MedFinder's ResNet-50 on CT, 20 epochs) are GPU-sized; started on a
laptop CPU from notebook 03 they run for hours without a word. `plan_training` says which
encoder, input size, device and step budget the run really uses, times one real optimiser
step on a real batch, and extrapolates; `check_budget` stops a run over the limit with the
command of the CPU-sized config instead.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from workbench.config import ExperimentConfig

# The CPU-sized config of each method whose bundled config is GPU-sized.
CPU_CONFIGS: Dict[str, str] = {"medfinder": "medfinder_demo"}


class TrainingBudgetError(RuntimeError):
    """A planned run longer than the allowed minutes; the message names the CPU-sized command."""


@dataclass
class TrainingPlan:
    """What a `train(cfg, run_dir)` call would do, and its measured price."""

    method: str
    image_encoder: str
    text_encoder: str
    input_shape: Tuple[int, ...]
    device: str
    batch_size: int
    total_steps: int
    steps_per_epoch: int
    seconds_per_step: float
    trains_itself: bool = False

    @property
    def estimated_minutes(self) -> float:
        """Step time x steps (validation and saving not counted: a lower bound)."""
        return self.seconds_per_step * self.total_steps / 60.0

    def describe(self) -> str:
        """Lines for a notebook or a log."""
        if self.trains_itself:
            return f"{self.method}: a baseline with its own recipe (projections on cached features)"
        return "\n".join([
            f"method         {self.method}",
            f"image encoder  {self.image_encoder}  input {'x'.join(map(str, self.input_shape))}",
            f"text encoder   {self.text_encoder}",
            f"device         {self.device}, batch {self.batch_size}",
            f"steps          {self.total_steps} ({self.steps_per_epoch} per epoch)",
            f"measured       {self.seconds_per_step:.2f} s per step (a real batch, forward + backward + AdamW)",
            f"estimate       {self.estimated_minutes:.1f} min of training",
        ])


def _steps(cfg: ExperimentConfig, method, dataset) -> Tuple[int, int]:
    per_epoch = method.epoch_size(dataset) // max(1, cfg.training.batch_size * max(1, cfg.training.grad_accum))
    per_epoch = max(1, per_epoch)
    total = cfg.training.max_steps if cfg.training.max_steps > 0 else cfg.training.num_epochs * per_epoch
    return int(total), int(per_epoch)


def _timed_steps(method, batch, lr: float, steps: int) -> float:
    """Seconds of the last of `steps` optimiser steps (a first step also warms allocators and
    caches, so one step alone overestimates: the safe side for a warning)."""
    optimizer = torch.optim.AdamW(method.parameter_groups(lr), lr=lr)
    seconds = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        method.weighted_total(method.losses(batch)).backward()
        optimizer.step()
        if method.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds


def _image_shape(batch) -> Tuple[int, ...]:
    """One input's shape: the first image-like tensor of the batch (methods name theirs
    differently, e.g. MedTrim's anchor/positive/negative)."""
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.ndim >= 4:
            return tuple(int(s) for s in value.shape[1:])
    return ()


def plan_training(cfg: ExperimentConfig, run_dir: str | Path, measure_steps: int = 1) -> TrainingPlan:
    """Build the method as `train` would (on a copy of `cfg`), time `measure_steps` optimiser
    steps on one real training batch, and return the plan. The weights it touched are thrown
    away; `train` starts from scratch."""
    from workbench.methods import create_method
    from workbench.methods.base import move_to
    from workbench.models.registry import resolved_image_model, resolved_text_model
    from workbench.train.trainer import resolve_train_device

    cfg = copy.deepcopy(cfg)
    cfg.run_dir = str(run_dir)
    if cfg.models.init_checkpoint in ("frozen", "locked"):
        cfg.models.init_checkpoint = ""  # same architecture and cost; the baseline is trained by `train`
    method = create_method(cfg.method.name, cfg)
    common = dict(method=cfg.method.name, image_encoder=resolved_image_model(cfg.models),
                  text_encoder=resolved_text_model(cfg.models), batch_size=cfg.training.batch_size)
    if getattr(method, "trains_itself", False):
        return TrainingPlan(**common, input_shape=(), device=cfg.training.device, total_steps=0, steps_per_epoch=0,
                            seconds_per_step=0.0, trains_itself=True)
    device = resolve_train_device(cfg.training.device)
    method.to(device)
    dataset = method.train_dataset(run_dir)
    size = min(cfg.training.batch_size, len(dataset))
    batch = move_to(method.collate([dataset[i] for i in range(size)]), device)
    method.train()
    seconds = _timed_steps(method, batch, cfg.training.learning_rate, max(1, measure_steps))
    total, per_epoch = _steps(cfg, method, dataset)
    return TrainingPlan(**common, input_shape=_image_shape(batch), device=str(device),
                        total_steps=total, steps_per_epoch=per_epoch, seconds_per_step=seconds)


def check_budget(plan: TrainingPlan, max_cpu_minutes: float) -> None:
    """On a CPU, raise when the estimate exceeds `max_cpu_minutes` (0 or less: no limit), naming
    the CPU-sized config and the parameter that lifts the limit. GPU runs are not limited: the
    research configs are meant for them."""
    if plan.device != "cpu" or max_cpu_minutes <= 0 or plan.estimated_minutes <= max_cpu_minutes:
        return
    max_minutes = max_cpu_minutes
    cpu = CPU_CONFIGS.get(plan.method)
    smaller = (f"papermill notebooks/03_pretrain.ipynb out.ipynb -p method {plan.method} -p config {cpu}"
               if cpu else f"-p max_steps {max(1, math.floor(max_minutes * 60 / max(plan.seconds_per_step, 1e-9)))}")
    raise TrainingBudgetError(
        f"This {plan.method} run would train about {plan.estimated_minutes:.0f} min on {plan.device} "
        f"({plan.total_steps} steps x {plan.seconds_per_step:.1f} s, {plan.image_encoder} on "
        f"{'x'.join(map(str, plan.input_shape))}), over max_cpu_minutes={max_minutes:g}; run the CPU-sized "
        f"setting ({smaller}) or pass -p max_cpu_minutes 0 to train anyway."
    )
