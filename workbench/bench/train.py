"""Trainer overhead and input pipeline speed (`python -m workbench.bench train`).

For the same method, model and batch: median step time of the full `Trainer` (collate and
tokenisation, device transfer, autocast, clipping, schedule, per-term logging) against a bare
forward/backward/AdamW loop on a pre-built batch -> overhead_pct (goal <= 10 %); and the data
loader's samples/s alone against training samples/s -> loader_ratio (> 1: loading is not the
bottleneck). Defaults: the `tiny` config on synthetic 64 px pairs, CPU; `--config demo
--run-dir DIR` measures the real encoders on a prepared run folder.

`--case 3d` (or `all`) times MedFinder's optimiser step (two views, fusion, InfoNCE) on
synthetic CT volumes for the demo CT encoder (`medfinder_demo`: the 2.5D EfficientNet-Lite0)
and the research one (`medfinder`: 3D ResNet-50), both at `--volume-size` with the same batch,
so the two price the same work: s_per_step_3d_demo, s_per_step_3d_research.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

FINDINGS = ["no acute findings", "left pleural effusion", "right upper lobe pneumonia", "cardiomegaly"]


class SyntheticPairs(Dataset):
    """Image-report pairs made on the fly (uint8-like noise images, short reports)."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(3, self.size, self.size, generator=g),
                "text": f"{FINDINGS[i % 4]}. heart size normal. study {i}.", "study_id": f"s{i}"}


def _bare_step_times(method, batch, steps: int, lr: float) -> List[float]:
    opt = torch.optim.AdamW(method.parameter_groups(lr), lr=lr)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        method.weighted_total(method.losses(batch)).backward()
        opt.step()
        if method.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


# The CT encoders priced by the 3D case: name -> bundled config.
CT_CONFIGS = {"demo": "medfinder_demo", "research": "medfinder"}


def volume_step_seconds(config: str, volume_size: Sequence[int], batch_size: int, steps: int, device: str,
                        overrides: Sequence[str] = ()) -> float:
    """Median seconds of a MedFinder optimiser step on random volumes (first step: warm-up)."""
    from workbench.config import load_config
    from workbench.methods import create_method
    from workbench.methods.base import move_to

    size = "[" + ",".join(str(int(v)) for v in volume_size) + "]"
    cfg = load_config(config, [f"data.volume_size={size}", f"training.batch_size={batch_size}",
                               f"training.device={device}", *overrides])
    torch.manual_seed(0)
    method = create_method("medfinder", cfg)
    method.to(torch.device(device))
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.rand(1, *volume_size, generator=g), "image2": torch.rand(1, *volume_size, generator=g),
              "text": f"{FINDINGS[i % 4]}. study {i}.", "study_id": f"s{i}"} for i in range(batch_size)]
    batch = move_to(method.collate(items), torch.device(device))
    method.train()
    return statistics.median(_bare_step_times(method, batch, steps + 1, cfg.training.learning_rate)[1:])


def volume_case(volume_size: Sequence[int], batch_size: int, steps: int, device: str) -> Dict[str, float]:
    """s/step of each `CT_CONFIGS` encoder; printed one line each."""
    figures: Dict[str, float] = {}
    for label, config in CT_CONFIGS.items():
        seconds = volume_step_seconds(config, volume_size, batch_size, steps, device)
        figures[f"s_per_step_3d_{label}"] = seconds
        print(f"3d {label:9s} ({config}) {seconds:8.2f} s/step  batch {batch_size} x 2 views at "
              f"{'x'.join(map(str, volume_size))}", flush=True)
    return figures


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench train", description=__doc__)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--method", default="clip")
    parser.add_argument("--run-dir", default=None, help="prepared run folder (default: synthetic pairs)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--case", choices=("2d", "3d", "all"), default="2d",
                        help="2d: trainer overhead and loader (default); 3d: CT encoders' s/step; all: both")
    parser.add_argument("--volume-size", type=int, nargs=3, default=(64, 64, 64))
    parser.add_argument("--volume-batch", type=int, default=4)
    parser.add_argument("--volume-steps", type=int, default=2)
    args = parser.parse_args(list(argv or []))
    figures: Dict[str, float] = {}
    if args.case in ("3d", "all"):
        figures.update(volume_case(args.volume_size, args.volume_batch, args.volume_steps, args.device))
    if args.case == "3d":
        return figures
    figures.update(trainer_case(args))
    return figures


def trainer_case(args: argparse.Namespace) -> Dict[str, float]:
    """Trainer overhead against a bare loop, and the loader's speed against training's."""
    from workbench.config import load_config
    from workbench.methods import create_method
    from workbench.train.trainer import Trainer

    overrides = [f"method.name={args.method}", f"training.batch_size={args.batch_size}",
                 f"training.device={args.device}", f"training.num_workers={args.num_workers}",
                 f"training.max_steps={args.steps}", "training.eval_every=0", "training.save_freq=1000"]
    cfg = load_config(args.config, overrides)
    torch.manual_seed(0)
    method = create_method(args.method, cfg)
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    method.to(device)
    dataset = method.train_dataset(args.run_dir) if args.run_dir else SyntheticPairs(args.batch_size * (args.steps + 2),
                                                                                        args.image_size)
    warm = max(2, args.steps // 5)

    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=method.collate,
                        num_workers=args.num_workers, drop_last=True)
    start = time.perf_counter()
    seen = 0
    for i, batch in enumerate(loader):
        seen += len(batch["study_id"]) if "study_id" in batch else args.batch_size
        if i + 1 >= args.steps:
            break
    loader_sps = seen / (time.perf_counter() - start)

    from workbench.methods.base import move_to

    batch = move_to(method.collate([dataset[i] for i in range(args.batch_size)]), device)
    method.train()
    bare_before = statistics.median(_bare_step_times(method, batch, args.steps, cfg.training.learning_rate)[warm:])

    stamps: List[float] = []
    method.on_step_end = lambda step, losses: stamps.append(time.perf_counter())  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as out:
        Trainer(method, cfg, out, train_data=dataset, progress=False).fit(device)
    trainer_step = statistics.median([b - a for a, b in zip(stamps[warm:], stamps[warm + 1:])])
    # The bare loop runs before and after the trainer; their mean damps drift on shared machines.
    bare_after = statistics.median(_bare_step_times(method, batch, args.steps, cfg.training.learning_rate)[warm:])
    bare = 0.5 * (bare_before + bare_after)
    train_sps = args.batch_size / trainer_step
    figures = {"overhead_pct": 100.0 * (trainer_step - bare) / bare, "loader_ratio": loader_sps / train_sps}
    print(f"device={device} config={args.config} method={args.method} batch={args.batch_size} steps={args.steps}")
    print(f"bare step      {bare * 1000:8.1f} ms")
    print(f"trainer step   {trainer_step * 1000:8.1f} ms  (overhead {figures['overhead_pct']:.1f} %, goal <= 10 %)")
    print(f"loader         {loader_sps:8.1f} samples/s")
    print(f"training       {train_sps:8.1f} samples/s  (loader ratio {figures['loader_ratio']:.2f})")
    return figures


if __name__ == "__main__":  # pragma: no cover
    main()
