"""Data-prep benchmark: demo generation, manifest, cache build, and cached vs. JPEG loading.

Why: the decoded-once cache exists so training never re-decodes JPEG; this measures what it
buys (items per second through `StudyDataset` from the memmap versus decode + resize per
item) and what notebook 00 costs at the default demo size.

    python -m workbench.bench data_prep [--n-studies 2000] [--n-ct-studies 200] [--image-size 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench data_prep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-studies", type=int, default=2000)
    parser.add_argument("--n-ct-studies", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--volume-size", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--load-items", type=int, default=500, help="items timed per loading mode")
    parser.add_argument("--root", default="", help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)

    from workbench.data import StudyDataset, build_manifest
    from workbench.data.cache import build_image_cache, build_volume_cache, letterbox, load_image_2d
    from workbench.data.phantom import generate_demo
    from workbench.data.transforms import eval_transform_2d

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.root or tmp)
        figures: Dict[str, float] = {}
        t0 = time.perf_counter()
        generate_demo(work / "data", n_studies=args.n_studies, n_ct_studies=args.n_ct_studies,
                      image_size=args.image_size, volume_size=tuple(args.volume_size), seed=0, progress=False)
        figures["generate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        df = build_manifest("demo", work / "data", seed=0)
        figures["manifest_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_image_cache(df, work / "cache", args.image_size, progress=False)
        figures["cache_2d_s"] = time.perf_counter() - t0
        if args.n_ct_studies:
            t0 = time.perf_counter()
            build_volume_cache(df, work / "cache", args.volume_size, progress=False)
            figures["cache_3d_s"] = time.perf_counter() - t0

        ds = StudyDataset(df, work / "cache", fields=("image", "text"), image_size=args.image_size)
        n = min(args.load_items, len(ds))
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        figures["cached_items_per_s"] = n / (time.perf_counter() - t0)
        to_tensor = eval_transform_2d()
        import torch

        paths = ds.frame["image_path"].tolist()[:n]
        t0 = time.perf_counter()
        for path in paths:
            to_tensor(torch.from_numpy(letterbox(load_image_2d(path), args.image_size)).unsqueeze(0))
        figures["jpeg_items_per_s"] = n / (time.perf_counter() - t0)
        figures["cache_speedup"] = figures["cached_items_per_s"] / figures["jpeg_items_per_s"]
        figures["studies"] = float(len(df))
    for key, value in figures.items():
        print(f"{key:>20}: {value:.3f}")
    return figures
