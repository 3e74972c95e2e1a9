"""Are the CT phantoms' findings visible to the demo's CT encoder? (`python -m workbench.bench ct_probe`)

A linear probe (`workbench.eval.probe.linear_probe`, 1 % / 10 % / 100 % of the train split) on
frozen pooled features of the demo CT volumes (64^3), scored by AUC per finding on the held-out
studies (val + test, for more positives), for each encoder of `--encoders` (name:pretrained).
Default: the pretrained 2.5D EfficientNet-Lite0 against the random-init narrow 3D ResNet-10
the demo used before. Features take minutes on 2 cores, hence a benchmark, not a test.
`--run-dir` uses a prepared run folder; otherwise `--n-ct` phantoms are generated in a
temporary one. Last line: probe_AUC@<pct> and per-finding AUC@100 % of each encoder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

DEFAULT_ENCODERS = ("efficientnet_lite0_25d_3d:pretrained", "resnet10_narrow_3d:random")


def _features(encoder, dataset, batch: int = 16) -> np.ndarray:
    parts = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch):
            volumes = torch.stack([dataset[i]["image"] for i in range(start, min(len(dataset), start + batch))])
            parts.append(encoder(volumes).pooled.float())
    return torch.cat(parts).numpy()


def _split(manifest, run_dir: Path, splits: Tuple[str, ...], names: Sequence[str]):
    from workbench.data import StudyDataset

    frame = manifest[manifest["split"].isin(splits)]
    dataset = StudyDataset(frame, run_dir / "cache", split=None, modality="ct", fields=("image",))
    labels = np.stack([dataset.frame[f"label_{n}"].fillna(0).to_numpy() for n in names], 1)
    return dataset, labels


def probe_encoders(run_dir: Path, encoders: Sequence[str]) -> Dict[str, float]:
    from workbench.config import ModelsConfig
    from workbench.data.manifest import read_manifest
    from workbench.eval.probe import linear_probe
    from workbench.models import build_image_encoder

    manifest = read_manifest(run_dir)
    manifest = manifest[manifest["modality"] == "ct"]
    names = [c[len("label_"):] for c in manifest.columns
             if c.startswith("label_") and (manifest[c] == 1).any()]
    train, train_y = _split(manifest, run_dir, ("train",), names)
    held, held_y = _split(manifest, run_dir, ("val", "test"), names)
    figures: Dict[str, float] = {}
    for spec in encoders:
        name, _, weights = spec.partition(":")
        torch.manual_seed(0)
        encoder = build_image_encoder(ModelsConfig(img_model=name, img_pretrained=weights == "pretrained")).eval()
        start = time.perf_counter()
        rows = linear_probe(_features(encoder, train), train_y, _features(encoder, held), held_y, names=names, n_boot=0)
        short = f"{name.replace('efficientnet_lite0_', 'effnet_')}_{weights}"
        print(f"{spec}  ({time.perf_counter() - start:.0f} s, {len(train)} train / {len(held)} held-out volumes)")
        for row in rows:
            print(f"  {row['metric']:32s} {row['value']:.3f}")
            figures[f"{short}.{row['metric'].replace('probe_', '')}"] = float(row["value"])
    return figures


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench ct_probe", description=__doc__)
    parser.add_argument("--run-dir", default=None, help="prepared run folder with CT volumes (default: generate)")
    parser.add_argument("--n-ct", type=int, default=400, help="phantoms to generate without --run-dir")
    parser.add_argument("--encoders", default=",".join(DEFAULT_ENCODERS), help="name:pretrained|random, comma list")
    args = parser.parse_args(list(argv or []))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    if args.run_dir:
        return probe_encoders(Path(args.run_dir), encoders)
    from workbench.config import load_config
    from workbench.data import prepare_run_data

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("medfinder_demo", ["data.dataset=demo", "data.n_studies=4", f"data.n_ct_studies={args.n_ct}"])
        prepare_run_data(cfg, Path(tmp), progress=False)
        return probe_encoders(Path(tmp), encoders)
