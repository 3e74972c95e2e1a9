"""Figures of a training run from its `metrics.csv`: one curve per named loss term, and the
validation metrics at each validation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import pandas as pd


def read_metrics(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A run's metrics table from a DataFrame, a `metrics.csv`, or its training folder."""
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"No metrics file {path}; train a method first (notebooks/03_pretrain.ipynb).")
    return pd.read_csv(path)


def plot_loss_terms(source: str | Path | pd.DataFrame, smooth: int = 1, ax=None):
    """Loss per optimiser step: the weighted total and each named term (rolling mean of `smooth`)."""
    import matplotlib.pyplot as plt

    frame = read_metrics(source)
    steps = frame.dropna(subset=["loss"]) if "loss" in frame else frame.iloc[0:0]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    columns = ["loss"] + sorted(c for c in steps.columns if c.startswith("loss/"))
    for column in columns:
        values = steps[column].rolling(max(1, smooth), min_periods=1).mean()
        ax.plot(steps["step"], values, label="total (weighted)" if column == "loss" else column[5:],
                linewidth=2.0 if column == "loss" else 1.2)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss by term")
    if columns and not steps.empty:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax.figure


def validation_table(source: str | Path | pd.DataFrame, keys: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One row per validation (epoch, step) with the `val/` metrics (all, or `keys`)."""
    frame = read_metrics(source)
    cols = [c for c in frame.columns if c.startswith("val/")]
    if keys:
        cols = [c for c in cols if c.split("/", 1)[1] in keys or c in keys]
    if not cols:
        return pd.DataFrame(columns=["epoch", "step"])
    return frame.dropna(subset=cols, how="all")[["epoch", "step", *cols]].reset_index(drop=True)


def plot_validation(source: str | Path | pd.DataFrame,
                    keys: Sequence[str] = ("mean_R@10", "i2t_R@10", "t2i_R@10", "mean_R@1"), ax=None):
    """Validation retrieval (percent) after each epoch."""
    import matplotlib.pyplot as plt

    table = validation_table(source, keys)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    for column in [c for c in table.columns if c.startswith("val/")]:
        ax.plot(table["epoch"] + 1, table[column], marker="o", label=column[4:])
    ax.set_xlabel("epoch")
    ax.set_ylabel("percent")
    ax.set_title("Validation retrieval")
    if len(table):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax.figure
