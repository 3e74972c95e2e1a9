"""Data layer: source readers -> one manifest schema -> decoded-once caches -> torch datasets.

Public API:
    build_manifest(dataset, data_root, seed=0, split_fractions=(0.8, 0.1, 0.1), strict=False, **options)
    prepare_run_data(cfg, run_dir)           notebook 00: manifest.parquet + cache/ in a run folder
    list_readers(), READERS                  registered source readers
    skip_summary(df)                         skipped / repaired studies per reason
    StudyDataset, TextCollator               torch datasets over the cache, per-batch tokenisation
    read_manifest, write_manifest            the schema lives in workbench.data.manifest

Heavy modules (torch, MONAI) load on first use, so `import workbench.data` stays cheap for the
phantom generator and the readers.
"""

from __future__ import annotations

import importlib
from typing import Any

from workbench.data.build import build_manifest, prepare_run_data, reader_options
from workbench.data.manifest import read_manifest, validate_manifest, write_manifest
from workbench.data.readers import READERS, list_readers
from workbench.data.skips import BadInputError, SkipCounter, skip_summary

_LAZY = {
    "StudyDataset": "workbench.data.datasets",
    "TextCollator": "workbench.data.datasets",
    "build_image_cache": "workbench.data.cache",
    "build_volume_cache": "workbench.data.cache",
    "open_image_cache": "workbench.data.cache",
    "open_volume_cache": "workbench.data.cache",
    "train_transform_2d": "workbench.data.transforms",
    "eval_transform_2d": "workbench.data.transforms",
    "volume_transform_3d": "workbench.data.transforms",
    "plot_study_grid": "workbench.data.preview",
    "manifest_counts": "workbench.data.preview",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'workbench.data' has no attribute {name!r}")


__all__ = ["build_manifest", "prepare_run_data", "reader_options", "read_manifest", "validate_manifest",
           "write_manifest", "READERS", "list_readers", "BadInputError", "SkipCounter", "skip_summary", *_LAZY]
