"""One table of every evaluation under `papermill_runs/`, and a bar plot of it.

Rows are grouped by method and setting hash (the model and objective settings only, not
seed, paths or device: `workbench.config.setting_hash`), so seeds of one setting sit
together and can be averaged.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd

from workbench.eval.suite import KEY_COLUMNS

DEFAULT_METRICS = ("i2t_R@10", "t2i_R@10", "i2t_P@10", "AUC", "probe_AUC@100%")


def gather_metrics(root: str | Path | None = None) -> pd.DataFrame:
    """Every `*/eval/metrics.csv` under `root` (default: the runs root) in one tidy table."""
    from workbench.runs import runs_root

    root = Path(root) if root else runs_root()
    tables = [pd.read_csv(path) for path in sorted(root.glob("*/eval/metrics.csv"))]
    if not tables:
        return pd.DataFrame(columns=KEY_COLUMNS + ["evaluation", "metric", "value", "ci_low", "ci_high", "n"])
    return pd.concat(tables, ignore_index=True)


def leaderboard(root: str | Path | None = None, metrics: Sequence[str] = DEFAULT_METRICS, split: str = "test",
                table: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Wide table: method, setting_hash, dataset, split, seed, run, then per metric its value,
    `<metric> lo` and `<metric> hi` (95 % CI; NaN where none was computed)."""
    tidy = gather_metrics(root) if table is None else table
    tidy = tidy[(tidy["split"] == split) & tidy["metric"].isin(metrics)]
    index = ["method", "setting_hash", "dataset", "split", "seed", "run"]
    if tidy.empty:
        return pd.DataFrame(columns=index + list(metrics))
    tidy = tidy.drop_duplicates(index + ["metric"], keep="last")
    wide = tidy.set_index(index + ["metric"])[["value", "ci_low", "ci_high"]].unstack("metric")
    out = pd.DataFrame(index=wide.index)
    for metric in metrics:
        for part, suffix in (("value", ""), ("ci_low", " lo"), ("ci_high", " hi")):
            if (part, metric) in wide.columns:
                out[metric + suffix] = wide[(part, metric)]
    first = [m for m in metrics if m in out.columns]
    return out.reset_index().sort_values(first[:1] or index, ascending=False, kind="stable").reset_index(drop=True)


def format_leaderboard(board: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS) -> pd.DataFrame:
    """Printable: each metric as `value [lo, hi]`."""
    cols: List[str] = [c for c in ("method", "setting_hash", "dataset", "split", "seed", "run") if c in board.columns]
    out = board[cols].copy()
    for metric in metrics:
        if metric not in board.columns:
            continue
        lo, hi = board.get(metric + " lo"), board.get(metric + " hi")
        out[metric] = [
            f"{v:.3g}" + (f" [{a:.3g}, {b:.3g}]" if a == a and b == b else "")
            for v, a, b in zip(board[metric], lo if lo is not None else [float("nan")] * len(board),
                               hi if hi is not None else [float("nan")] * len(board))
        ]
    return out


def leaderboard_plot(board: pd.DataFrame, metric: str = "i2t_R@10", ax=None):
    """Bar per (method, seed) of one metric with its CI."""
    from workbench.eval.plots import metric_bars

    tidy = pd.DataFrame({
        "label": board["method"].astype(str) + " s" + board["seed"].astype(str),
        "metric": metric, "value": board[metric],
        "ci_low": board.get(metric + " lo"), "ci_high": board.get(metric + " hi"),
    })
    return metric_bars(tidy, [metric], group="label", title=f"leaderboard: {metric}", ax=ax)
