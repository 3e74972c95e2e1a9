"""Small statistics shared by the evaluations: ROC AUC (rank form) and bootstrap CIs."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_vals)) + 1
    starts = np.concatenate([[0], boundaries])
    stops = np.concatenate([boundaries, [len(values)]])
    for start, stop in zip(starts, stops):
        ranks[order[start:stop]] = (start + stop + 1) / 2.0
    return ranks


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half).

    NaN when `y_true` holds a single class: the AUC is undefined, not an error.
    """
    y = np.asarray(y_true).astype(bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def f1_accuracy(y_true, predicted) -> Tuple[float, float]:
    """F1 of the positive class (0 when nothing is predicted or present) and accuracy."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(predicted).astype(bool)
    tp = float(np.sum(y & p))
    fp = float(np.sum(~y & p))
    fn = float(np.sum(y & ~p))
    f1 = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    return f1, float(np.mean(y == p))


def best_f1_threshold(y_true, scores) -> float:
    """The score threshold maximising F1 (chosen on validation, applied to test)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.sum() == 0 or y.sum() == len(y):
        return float(np.median(s)) if len(s) else 0.0
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    predicted = np.arange(1, len(s) + 1)
    last_of_value = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # `s >= t` includes every tie of t
    f1 = 2 * tp / (predicted + y.sum())
    f1 = np.where(last_of_value, f1, -1.0)
    return float(s_sorted[int(np.argmax(f1))])


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 200, seed: int = 0,
                 alpha: float = 0.05) -> Tuple[float, float, int]:
    """Percentile CI of `statistic(indices)` over `n_boot` resamples of `range(n)`.

    Resamples where the statistic is undefined (NaN, e.g. an AUC on a resample with one class)
    are dropped instead of crashing or poisoning the interval; returns (low, high, n_valid),
    (nan, nan, 0) when no resample is valid (a single-class label column).
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        value = statistic(rng.integers(0, n, size=n))
        if value is not None and np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan"), 0
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high), len(values)


def metric_with_ci(name: str, value: float, ci: Optional[Tuple[float, float, int]] = None) -> Dict[str, float]:
    """One tidy metric record."""
    low, high = (ci[0], ci[1]) if ci else (float("nan"), float("nan"))
    return {"metric": name, "value": float(value), "ci_low": float(low), "ci_high": float(high)}
