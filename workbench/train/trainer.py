"""The one training loop every method plugs into (it never names a method).

AdamW with per-group learning rates, linear warm-up then cosine decay, gradient clipping,
mixed precision (bf16 where the GPU supports it, else fp16 with a GradScaler; off on CPU),
gradient accumulation, DDP under torchrun, tqdm progress, per-step metrics (each named loss
term) in `metrics.csv` (and TensorBoard when installed), periodic validation with the
evaluation suite, best-model export in the shared encoder format, early stopping, and
checkpoints that make `training.resume=true` continue exactly where a run stopped.

Output folder (`run_dir/train/<method>-<seed>/`, or `<data.model_save_path>/<method>-<seed>/`):
  encoders.safetensors, encoders.json   best (or final) encoders, `workbench.models` format
  checkpoint/last.safetensors           the whole training state for resume: weights, optimizer,
                                        schedule, counters, history and every rank's RNG state
  metrics.csv                           one row per optimiser step, one per validation
  run.json                              provenance (workbench.runs.RunRecord)

The checkpoint is one file renamed into place (`workbench.train.checkpoint`), so a kill while
it is written leaves the previous checkpoint whole; reading it never unpickles anything, so a
train folder from elsewhere cannot run code on resume. Temporary files that killed writes
left behind are removed when training starts. `checkpoint/last.pt` (pickles written by older
versions) is refused, not loaded.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from workbench.config import ExperimentConfig, MethodConfig
from workbench.io import atomic_path, remove_orphaned_temps
from workbench.tracking import Trackers
from workbench.methods.base import Method, move_to
from workbench.train.checkpoint import CheckpointFormatError, load_state, save_state, state_from_bytes, state_to_bytes
from workbench.train.distributed import (DistContext, EpochSampler, all_gather_bytes, all_gather_with_grad, barrier,
                                         init_distributed, mean_across_ranks, wrap_ddp)

CHECKPOINT_NAME = "checkpoint/last.safetensors"
LEGACY_CHECKPOINT_NAME = "checkpoint/last.pt"  # a pickle: never loaded
LOWER_IS_BETTER = ("MdR", "MnR", "loss")

Validator = Callable[[Method, DataLoader, torch.device], Dict[str, float]]


class TrainingError(RuntimeError):
    """A training setup that cannot run; the message says what to change."""


@dataclass
class TrainResult:
    """What a finished `Trainer.fit` reports."""

    out_dir: Path
    global_step: int
    epochs_run: int
    best_metric: Optional[float]
    best_step: Optional[int]
    stopped_early: bool
    metrics: pd.DataFrame = field(repr=False)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """This process's Python, NumPy and torch generator states as plain values (ints, lists,
    byte tensors): NumPy's own state holds an ndarray, which a checkpoint does not store."""
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": name, "key": [int(k) for k in key], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], np.asarray(numpy["key"], dtype=np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from 1/warmup to 1, then cosine to `min_ratio` at the end
    (Loshchilov & Hutter 2017, SGDR without restarts; Goyal et al. 2017 warm-up)."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def resolve_amp(setting: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype: auto = bf16 on GPUs that support it, else fp16; None on CPU/MPS."""
    setting = setting.lower()
    if setting not in ("auto", "bf16", "fp16", "off"):
        raise TrainingError(f"training.amp={setting!r} is not one of auto | bf16 | fp16 | off.")
    if setting == "off":
        return None
    if device.type != "cuda":  # explicit bf16 autocast exists on CPU; fp16 and auto are off there
        return torch.bfloat16 if setting == "bf16" and device.type == "cpu" else None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if setting == "bf16" else torch.float16


def resolve_train_device(name: str) -> torch.device:
    if name == "auto":
        from workbench.models import resolve_device

        return resolve_device("auto")
    return torch.device(name)


def higher_is_better(metric: str) -> bool:
    return not any(tag in metric for tag in LOWER_IS_BETTER)


class _LossModule(nn.Module):
    """What DDP wraps: the method's network, with forward = the method's named losses."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.network = method.network
        self.method = method  # a plain object, not a submodule

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Tensor]:
        return self.method.losses(batch)


@torch.no_grad()
def retrieval_validation(method: Method, loader: DataLoader, device: torch.device) -> Dict[str, float]:
    """Image<->report retrieval on a pair loader with the evaluation suite's metrics.

    Identical report texts form one target group, so duplicate reports are not punished.
    Adds `mean_R@K` = mean of i2t and t2i R@K (the default selection metric uses R@10).
    """
    from workbench.eval.retrieval import retrieval_metrics

    method.eval()
    images, texts, studies, reports = [], [], [], []
    for batch in loader:
        batch = move_to(batch, device)
        image, text = method.embed(batch)
        images.append(image.float().cpu())
        texts.append(text.float().cpu())
        n = image.shape[0]
        studies.extend(batch.get("study_id", [None] * n))
        reports.extend(batch.get("text", [None] * n))
    image_emb, text_emb = torch.cat(images), torch.cat(texts)
    image_groups = studies if all(s is not None for s in studies) else None
    text_groups = pd.factorize(pd.Series(reports, dtype=object))[0] if all(r is not None for r in reports) else None
    metrics = retrieval_metrics(image_emb, text_emb, image_groups=image_groups, text_groups=text_groups)
    out = {k: float(v) for k, v in metrics.items()}
    for k in (1, 5, 10):
        if f"i2t_R@{k}" in out and f"t2i_R@{k}" in out:
            out[f"mean_R@{k}"] = 0.5 * (out[f"i2t_R@{k}"] + out[f"t2i_R@{k}"])
    return out


class Trainer:
    """Trains one method according to `cfg.training`; see the module docstring for outputs.

    `train_data` / `val_data` default to the method's datasets from `run_dir`; pass datasets
    directly to train on anything whose items the method's `collate` understands. `validate`
    defaults to `retrieval_validation`.
    """

    def __init__(self, method: Method, cfg: ExperimentConfig, out_dir: str | Path,
                 train_data: Optional[Dataset] = None, val_data: Optional[Dataset] = None,
                 run_dir: Optional[str | Path] = None, validate: Optional[Validator] = None,
                 progress: bool = True) -> None:
        self.method = method
        self.cfg = cfg
        self.tcfg = cfg.training
        self.out_dir = Path(out_dir)
        self.run_dir = Path(run_dir) if run_dir else None
        self._train_data = train_data
        self._val_data = val_data
        self.validate = validate or retrieval_validation
        self.progress = progress
        self.history: List[Dict[str, Any]] = []
        self.global_step = 0
        self.start_epoch = 0
        self.best_metric: Optional[float] = None
        self.best_step: Optional[int] = None
        self.bad_validations = 0
        self.finished = False

    # ------------------------------------------------------------------ set-up
    def _datasets(self) -> tuple[Dataset, Optional[Dataset]]:
        train = self._train_data
        val = self._val_data
        if train is None:
            if self.run_dir is None:
                raise TrainingError("Trainer needs train_data or a run_dir holding manifest.parquet.")
            train = self.method.train_dataset(self.run_dir)
        if self.tcfg.eval_every <= 0:
            return train, None
        if val is None and self.run_dir is not None:
            val = self.method.eval_dataset(self.run_dir, "val")
            if len(val) == 0:  # type: ignore[arg-type]
                val = None
        return train, val

    def _loader(self, dataset: Dataset, sampler: Optional[torch.utils.data.Sampler], device: torch.device,
                drop_last: bool) -> DataLoader:
        workers = self.tcfg.num_workers
        return DataLoader(dataset, batch_size=self.tcfg.batch_size, sampler=sampler, shuffle=False,
                          collate_fn=self.method.collate, num_workers=workers, drop_last=drop_last,
                          pin_memory=self.tcfg.pin_memory and device.type == "cuda",
                          persistent_workers=False)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        groups = self.method.parameter_groups(self.tcfg.learning_rate, self.tcfg.encoder_lr_scale,
                                              self.tcfg.weight_decay)
        fused = self.method.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=self.tcfg.learning_rate, weight_decay=self.tcfg.weight_decay,
                                 fused=fused or None)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def _save_checkpoint(self, ctx: DistContext, epoch: int, optimizer, scheduler, scaler) -> None:
        """Write the training state as one file: weights and RNG states can never come from
        different steps, whatever moment a kill hits."""
        # Every rank keeps its own RNG stream (data augmentation differs per rank); rank 0
        # collects them all into its file. Called on every rank (the gather is collective).
        streams = all_gather_bytes(state_to_bytes(rng_state()), ctx)
        if not ctx.is_main:
            return
        state = {
            "network": self.method.network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "method_state": self.method.state_dict(),
            "method": self.method.name,
            "epoch": epoch,
            "global_step": self.global_step,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "finished": self.finished,
            "history": self.history,
            "world_size": ctx.world_size,
            "rng": [state_from_bytes(stream) for stream in streams],  # index = rank
        }
        save_state(self.checkpoint_path, state)

    def _resume_wanted(self) -> bool:
        """Whether to resume; refuses a pickle checkpoint of an older version rather than load it."""
        if not self.tcfg.resume:
            return False
        if self.checkpoint_path.is_file():
            return True
        legacy = self.out_dir / LEGACY_CHECKPOINT_NAME
        if legacy.is_file():
            raise TrainingError(f"{legacy} is a pickle, which resume does not load because unpickling a file can "
                                f"run code; delete {legacy.parent} to start over or set training.resume=false.")
        return False

    def _load_checkpoint(self, ctx: DistContext, optimizer, scheduler, scaler) -> None:
        try:
            state = load_state(self.checkpoint_path, ctx.device)
        except CheckpointFormatError as err:
            raise TrainingError(f"{self.checkpoint_path} is not a workbench training checkpoint ({err}); delete it "
                                f"to start over or set training.resume=false.") from None
        if state.get("method") != self.method.name:
            raise TrainingError(f"{self.checkpoint_path} was written by method {state.get('method')!r}, not "
                                f"{self.method.name!r}; point run_dir elsewhere or set training.resume=false.")
        self.method.network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state["method_state"])
        self.start_epoch = state["epoch"] + 1
        self.global_step = state["global_step"]
        self.best_metric = state["best_metric"]
        self.best_step = state["best_step"]
        self.bad_validations = state["bad_validations"]
        self.finished = state["finished"]
        self.history = list(state["history"])
        streams = state["rng"]
        if ctx.rank < len(streams):  # a rank the saving run did not have starts from its seed
            set_rng_state(streams[ctx.rank])

    def _write_metrics(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.history)
        with atomic_path(self.out_dir / "metrics.csv") as tmp:
            frame.to_csv(tmp, index=False)
        return frame

    # ------------------------------------------------------------------ the loop
    def fit(self, device: Optional[torch.device] = None) -> TrainResult:
        """Train until the step/epoch budget, early stopping, or the end; returns the result."""
        device = device or resolve_train_device(self.tcfg.device)
        ctx = init_distributed(device)
        device = ctx.device
        seed_everything(self.tcfg.random_seed + ctx.rank)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if ctx.is_main:  # what writes killed before their rename left; no rank writes yet
            for folder in (self.out_dir, self.checkpoint_path.parent):
                remove_orphaned_temps(folder)
        barrier(ctx)
        method = self.method.to(device)
        if ctx.is_distributed:
            method.gather = all_gather_with_grad

        train_data, val_data = self._datasets()
        accum = max(1, self.tcfg.grad_accum)
        sampler = EpochSampler(len(train_data), method.epoch_size(train_data), self.tcfg.random_seed,  # type: ignore[arg-type]
                               ctx.rank, ctx.world_size)
        loader = self._loader(train_data, sampler, device, drop_last=True)
        steps_per_epoch = len(loader) // accum
        if steps_per_epoch == 0:
            raise TrainingError(
                f"An epoch holds {len(sampler)} training samples per process, fewer than batch_size "
                f"{self.tcfg.batch_size} x grad_accum {accum}; lower training.batch_size or use more data."
            )
        total_steps = self.tcfg.max_steps if self.tcfg.max_steps > 0 else self.tcfg.num_epochs * steps_per_epoch
        num_epochs = math.ceil(total_steps / steps_per_epoch)
        val_loader = self._loader(val_data, None, device, drop_last=False) if val_data is not None else None

        optimizer = self._build_optimizer()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(self.tcfg.warmup_steps, total_steps))
        amp_dtype = resolve_amp(self.tcfg.amp, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        module = wrap_ddp(_LossModule(method), ctx, find_unused_parameters=True)

        if self._resume_wanted():
            self._load_checkpoint(ctx, optimizer, scheduler, scaler)
        tb = self._trackers() if ctx.is_main else None

        bar = self._progress_bar(total_steps, ctx)
        stopped_early = False
        epoch = self.start_epoch - 1
        try:
            for epoch in range(self.start_epoch, num_epochs):
                if self.finished or self.global_step >= total_steps:
                    break
                sampler.set_epoch(epoch)
                method.on_epoch_start(epoch)
                method.train()
                self._run_epoch(epoch, loader, module, optimizer, scheduler, scaler, amp_dtype, accum,
                                steps_per_epoch, total_steps, ctx, bar, tb)
                last = self.global_step >= total_steps or epoch == num_epochs - 1
                if val_loader is not None and ((epoch + 1) % max(1, self.tcfg.eval_every) == 0 or last):
                    stopped_early = self._validate(epoch, val_loader, device, ctx, tb)
                self.finished = last or stopped_early
                if (epoch + 1) % max(1, self.tcfg.save_freq) == 0 or self.finished:
                    if ctx.is_main:
                        self._write_metrics()
                    self._save_checkpoint(ctx, epoch, optimizer, scheduler, scaler)
                barrier(ctx)
                if stopped_early:
                    break
        finally:
            if bar is not None:
                bar.close()
            if tb is not None:
                tb.close()
        if ctx.is_main:
            if self.best_step is None:  # no validation ran: the final model is the export
                method.export(self.out_dir)
            frame = self._write_metrics()
        else:
            frame = pd.DataFrame(self.history)
        barrier(ctx)
        return TrainResult(self.out_dir, self.global_step, epoch + 1, self.best_metric, self.best_step,
                           stopped_early, frame)

    def _run_epoch(self, epoch: int, loader: DataLoader, module: nn.Module, optimizer, scheduler, scaler,
                   amp_dtype: Optional[torch.dtype], accum: int, steps_per_epoch: int, total_steps: int,
                   ctx: DistContext, bar, tb) -> None:
        method = self.method
        device = method.device
        params = method.trainable_parameters()
        sums: Dict[str, Tensor] = {}
        for i, batch in enumerate(loader):
            if i >= steps_per_epoch * accum or self.global_step >= total_steps:
                break
            micro = i % accum
            if micro == 0:
                stage = method.stage_at(self.global_step, epoch)
                method.set_stage(stage)
                sums = {}
            batch = move_to(batch, device, non_blocking=True)
            sync = micro == accum - 1
            context = module.no_sync() if (not sync and hasattr(module, "no_sync")) else contextlib.nullcontext()
            with context:
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    terms = module(batch)
                    total = method.weighted_total(terms)
                scaler.scale(total / accum).backward()
            for name, value in terms.items():
                sums[f"loss/{name}"] = sums.get(f"loss/{name}", 0) + value.detach().float() / accum
            sums["loss"] = sums.get("loss", 0) + total.detach().float() / accum
            if not sync:
                continue
            if self.tcfg.grad_clip and self.tcfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.tcfg.grad_clip)
                sums["grad_norm"] = grad_norm.detach().float()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()
            scheduler.step()
            self.global_step += 1
            names = list(sums)
            values = mean_across_ranks(torch.stack([sums[n] for n in names]).tolist(), ctx)
            row: Dict[str, Any] = {"step": self.global_step, "epoch": epoch, "stage": stage.name, "lr": max(lr)}
            row.update(dict(zip(names, values)))
            self.history.append(row)
            method.on_step_end(self.global_step, {n: v for n, v in zip(names, values)})
            if tb is not None:
                tb.log(row, self.global_step, prefix="train/")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}", epoch=epoch)

    def _validate(self, epoch: int, loader: DataLoader, device: torch.device, ctx: DistContext, tb) -> bool:
        """Validate on rank 0; export on improvement; return whether to stop early."""
        stop = torch.zeros(1, device=device if device.type == "cuda" else "cpu")
        if ctx.is_main:
            metrics = self.validate(self.method, loader, device)
            row = {"step": self.global_step, "epoch": epoch, **{f"val/{k}": v for k, v in metrics.items()}}
            self.history.append(row)
            if tb is not None:
                tb.log(row, self.global_step)
            key = self.tcfg.select_metric
            if key not in row:
                raise TrainingError(f"training.select_metric={key!r} is not among the validation metrics "
                                    f"{sorted(k for k in row if k.startswith('val/'))}.")
            value = float(row[key])
            better = self.best_metric is None or (
                value > self.best_metric if higher_is_better(key) else value < self.best_metric)
            if better:
                self.best_metric, self.best_step, self.bad_validations = value, self.global_step, 0
                self.method.export(self.out_dir)
            else:
                self.bad_validations += 1
            patience = self.tcfg.early_stopping_patience
            if patience > 0 and self.bad_validations >= patience:
                stop[0] = 1
        self.method.train()
        if ctx.is_distributed:
            torch.distributed.broadcast(stop, src=0)
        return bool(stop.item())

    def _progress_bar(self, total: int, ctx: DistContext):
        if not (self.progress and ctx.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.global_step, desc=f"train {self.method.name}", unit="step")

    def _trackers(self) -> Trackers:
        """TensorBoard / MLflow views of metrics.csv; a resumed run overwrites what a killed run
        logged after its last checkpoint."""
        from workbench.config import flatten_config

        return Trackers(self.tcfg.trackers, self.out_dir, run_dir=self.run_dir or self.out_dir,
                        run_name=self.out_dir.name, params=flatten_config(self.cfg),
                        purge_step=self.global_step + 1 if self.global_step else None)


def train_folder(run_dir: str | Path, method: str, seed: int, model_save_path: str | Path = "") -> Path:
    """Where a run's training of `method` with `seed` writes: `run_dir/train/<method>-<seed>/`,
    or `<model_save_path>/<method>-<seed>/` when the seed's `data.model_save_path` is set."""
    base = Path(model_save_path) if str(model_save_path) else Path(run_dir) / "train"
    return base / f"{method}-{seed}"


def train(cfg: ExperimentConfig, run_dir: Optional[str | Path] = None, progress: bool = True,
          validate: Optional[Validator] = None) -> TrainResult:
    """Train `cfg.method.name` on a run folder's data (newest prepared run when `run_dir` is
    empty) into `train/<method>-<seed>/` (or under `data.model_save_path` when set), with a
    `run.json` provenance record."""
    from workbench.config import setting_hash, to_dict
    from workbench.methods import create_method
    from workbench.runs import RunRecord, find_run_dir

    run_dir = find_run_dir("manifest", run_dir or cfg.run_dir or None)
    cfg.run_dir = str(run_dir)
    init = cfg.models.init_checkpoint
    if init in ("frozen", "locked"):  # this seed's baseline in the run folder, trained first if absent
        from workbench.eval.baselines import ensure_baselines

        baseline_cfg = copy.deepcopy(cfg)
        baseline_cfg.method = MethodConfig(name=init)  # its own defaults, not this method's knobs
        [folder] = ensure_baselines(run_dir, baseline_cfg, cfg.training.random_seed, [init], progress=progress)
        cfg.models.init_checkpoint = str(folder)
    elif init and not Path(init).is_absolute() and (Path(run_dir) / init).exists():
        cfg.models.init_checkpoint = str(Path(run_dir) / init)
    out_dir = train_folder(run_dir, cfg.method.name, cfg.training.random_seed, cfg.data.model_save_path)
    seed_everything(cfg.training.random_seed)  # initial weights of heads and random encoders
    method = create_method(cfg.method.name, cfg)
    if method.trains_itself:  # baselines run their own recipe but land in the same place
        folder = method.train_standalone(run_dir, progress=progress)
        return TrainResult(Path(folder), 0, 0, None, None, False, pd.DataFrame())
    main = int(os.environ.get("RANK", "0")) == 0
    extra = {"method": cfg.method.name, "setting_hash": setting_hash(cfg), "kind": "train"}
    record = RunRecord(out_dir, to_dict(cfg), seed=cfg.training.random_seed, extra=extra)
    if not main:
        return Trainer(method, cfg, out_dir, run_dir=run_dir, validate=validate, progress=False).fit()
    out_dir.mkdir(parents=True, exist_ok=True)
    with record:
        result = Trainer(method, cfg, out_dir, run_dir=run_dir, validate=validate, progress=progress).fit()
        record.update(global_step=result.global_step, epochs=result.epochs_run, best_metric=result.best_metric,
                      best_step=result.best_step, select_metric=cfg.training.select_metric,
                      stopped_early=result.stopped_early)
    return result
