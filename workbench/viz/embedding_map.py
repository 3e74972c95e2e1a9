"""UMAP of image and report embeddings in one plane: do pairs meet, do findings cluster?

Images and reports are fitted together (one UMAP over the stacked embeddings, cosine metric),
so the distance between an image's point and its report's point means the same as between
two images (McInnes et al. 2018). The coordinates are computed once per inspection session and
cached as `inspect/umap-<key>.parquet`; re-colouring only redraws the plot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pandas as pd

from workbench.data.labels import LABEL_PREFIX, label_columns
from workbench.io import atomic_path, save_figure_atomic
from workbench.viz.session import INSPECT_DIR, assertion_of, primary_finding

BASE_COLOURINGS = ("finding", "modality", "split")
MARKERS = {"image": "o", "report": "^"}


def umap_coordinates(image_emb: np.ndarray, text_emb: np.ndarray, seed: int = 0, n_neighbors: int = 15,
                     min_dist: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """2D UMAP coordinates of images and reports fitted jointly ([N, 2] each)."""
    import umap

    stacked = np.concatenate([np.asarray(image_emb, np.float32), np.asarray(text_emb, np.float32)])
    n = stacked.shape[0]
    if n < 4:
        raise ValueError(f"UMAP needs at least 2 studies (4 points); got {n // 2}. Inspect a larger split.")
    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, n - 1)), min_dist=min_dist,
                        metric="cosine", random_state=seed, init="random" if n < 100 else "spectral", n_jobs=1)
    coords = reducer.fit_transform(stacked).astype(np.float32)
    return coords[: len(image_emb)], coords[len(image_emb):]


def map_table(frame: pd.DataFrame, image_xy: np.ndarray, text_xy: np.ndarray) -> pd.DataFrame:
    """One row per point (kind image / report) with the columns each colouring reads."""
    base = pd.DataFrame({
        "study_id": frame["study_id"].astype(str).to_numpy(),
        "finding": [primary_finding(row) for _, row in frame.iterrows()],
        "modality": frame["modality"].astype(str).to_numpy(),
        "split": frame["split"].astype(str).to_numpy(),
    })
    for col in label_columns(frame.columns):
        name = col[len(LABEL_PREFIX):]
        base[f"assertion: {name}"] = [assertion_of(row, name) for _, row in frame.iterrows()]
    images = base.assign(kind="image", x=image_xy[:, 0], y=image_xy[:, 1])
    reports = base.assign(kind="report", x=text_xy[:, 0], y=text_xy[:, 1])
    return pd.concat([images, reports], ignore_index=True)


@dataclass
class EmbeddingMap:
    """UMAP coordinates of a session's studies (image and report points) and where they live."""

    table: pd.DataFrame
    inspect_dir: Path
    computed: bool  # False when the coordinates were read from the cache

    def colourings(self) -> List[str]:
        """What the points can be coloured by: finding, modality, split, then one assertion per label."""
        return list(BASE_COLOURINGS) + [c for c in self.table.columns if c.startswith("assertion: ")]

    def plot(self, color_by: str = "finding", join_pairs: bool = False, ax=None):
        return plot_embedding_map(self.table, color_by, join_pairs, ax)

    def save_png(self, color_by: str = "finding", join_pairs: bool = False, path: Optional[Path] = None) -> Path:
        """The static figure, written atomically into `inspect/` (name says the colouring)."""
        safe = color_by.replace(": ", "-").replace(" ", "_")
        path = Path(path) if path else self.inspect_dir / f"embedding_map-{safe}.png"
        return save_figure_atomic(self.plot(color_by, join_pairs), path, dpi=120)


def load_embedding_map(session, seed: int = 0) -> EmbeddingMap:
    """The session's UMAP, computed once and cached as `inspect/umap-<key>.parquet`."""
    path = Path(session.run_dir) / INSPECT_DIR / f"umap-{session.key}-s{seed}.parquet"
    if path.is_file():
        table = pd.read_parquet(path)
        if list(table.loc[table["kind"] == "image", "study_id"]) == session.study_ids():
            return EmbeddingMap(table, path.parent, computed=False)
    image_xy, text_xy = umap_coordinates(session.image_emb, session.text_emb, seed=seed)
    table = map_table(session.frame, image_xy, text_xy)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return EmbeddingMap(table, path.parent, computed=True)


def plot_embedding_map(table: pd.DataFrame, color_by: str = "finding", join_pairs: bool = False, ax=None):
    """Scatter of image (circles) and report (triangles) points coloured by `color_by`; with
    `join_pairs`, a thin line joins each study's image to its report."""
    import matplotlib.pyplot as plt

    if color_by not in table.columns:
        known = list(BASE_COLOURINGS) + [c for c in table.columns if c.startswith("assertion: ")]
        raise ValueError(f"Cannot colour by {color_by!r}; choose one of {known}.")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 6))
    else:
        fig = ax.figure
    if join_pairs:
        images = table[table["kind"] == "image"].set_index("study_id")
        reports = table[table["kind"] == "report"].set_index("study_id").loc[images.index]
        segments = np.stack([images[["x", "y"]].to_numpy(), reports[["x", "y"]].to_numpy()], axis=1)
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection(segments, colors="0.6", linewidths=0.5, alpha=0.6, zorder=1))
    categories = sorted(table[color_by].astype(str).unique())
    cmap = plt.get_cmap("tab20" if len(categories) > 10 else "tab10")
    for i, category in enumerate(categories):
        for kind, marker in MARKERS.items():
            part = table[(table[color_by].astype(str) == category) & (table["kind"] == kind)]
            if part.empty:
                continue
            ax.scatter(part["x"], part["y"], s=18, marker=marker, color=cmap(i % cmap.N), alpha=0.8, zorder=2,
                       label=category if kind == "image" else None, edgecolors="none")
    ax.set_title(f"UMAP of image (o) and report (^) embeddings, coloured by {color_by}")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.legend(fontsize=7, loc="best", markerscale=1.2, title=color_by, title_fontsize=8)
    fig.tight_layout()
    return fig


def embedding_map_png_paths(run_dir: str | os.PathLike) -> List[Path]:
    """The embedding-map figures saved in a run folder."""
    return sorted((Path(run_dir) / INSPECT_DIR).glob("embedding_map-*.png"))
