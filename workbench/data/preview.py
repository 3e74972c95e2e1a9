"""Looking at a manifest: counts per split and finding, and a grid of images with their reports."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from workbench.data.labels import LABEL_PREFIX, label_columns


def manifest_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Per split (rows): studies and subjects per modality, then positives (label == 1) per finding."""
    table = pd.DataFrame(index=pd.Index(["train", "val", "test"], name="split"))
    for modality in sorted(df["modality"].astype(str).unique()):
        part = df[df["modality"] == modality]
        table[f"{modality} studies"] = part.groupby("split").size()
        table[f"{modality} subjects"] = part.groupby("split")["subject_id"].nunique()
    for col in label_columns(df.columns):
        table[col[len(LABEL_PREFIX):]] = (pd.to_numeric(df[col], errors="coerce") == 1).groupby(df["split"]).sum()
    table = table.fillna(0).astype(int)
    table.loc["total"] = table.sum()
    return table


def plot_study_grid(manifest: pd.DataFrame, cache_dir: str | Path, n: int = 8, split: Optional[str] = None,
                    modality: str = "cxr", seed: int = 0, cols: int = 4, wrap: int = 45, max_chars: int = 280,
                    image_size: Optional[int] = None, volume_size: Optional[Sequence[int]] = None):
    """A matplotlib grid of `n` random studies: the cached image (mid axial slice for CT) above
    the start of its report. Returns the Figure."""
    import matplotlib.pyplot as plt

    from workbench.data.datasets import StudyDataset

    ds_img = StudyDataset(manifest, cache_dir, split=split, modality=modality, fields=("image",),
                          image_size=image_size, volume_size=volume_size)
    if len(ds_img) == 0:
        raise ValueError(f"No cached {modality} studies{f' in split {split!r}' if split else ''} to show.")
    picks = np.random.default_rng(seed).choice(len(ds_img), size=min(n, len(ds_img)), replace=False)
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks):
        image = ds_img.raw_image(int(i))[0].numpy()
        if image.ndim == 3:  # cached volumes are RAS [x, y, z]: middle axial slice, radiological view
            image = image[::-1, ::-1, image.shape[2] // 2].T
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        report = str(ds_img.frame["report"].iat[int(i)]) or "(no report)"
        if len(report) > max_chars:
            report = report[:max_chars].rsplit(" ", 1)[0] + " ..."
        study = ds_img.frame["study_id"].iat[int(i)]
        ax.set_title(f"{study} ({ds_img.frame['split'].iat[int(i)]})", fontsize=8)
        ax.text(0, -0.03, textwrap.fill(report, wrap), transform=ax.transAxes, fontsize=6.5, va="top")
    fig.tight_layout()
    return fig
