"""Scoring a labeler against gold labels: per-label precision / recall / F1, micro and macro F1.

Pinned conventions (issue 4): a prediction is positive only when it is 1 (uncertain -1 and
NaN are not positive: these gold files mark asserted findings only); gold is positive when
it is 1; `normal` / `No Finding` are not scored; macro-F1 is the mean over labels with at
least one gold positive. Rows are aligned by index (the report id).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

NOT_SCORED = ("normal", "No Finding")


def _f1(tp: int, fp: int, fn: int) -> Dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def evaluate(pred: pd.DataFrame, gold: pd.DataFrame, labels: Optional[Sequence[str]] = None,
             exclude: Iterable[str] = ()) -> Dict[str, object]:
    """Score `pred` against `gold` on their shared labels and index.

    Returns {"per_label": DataFrame (precision, recall, f1, support, tp, fp, fn), "micro_f1",
    "macro_f1", "n_reports", "labels"}.
    """
    skip = set(NOT_SCORED) | set(exclude)
    if labels is None:
        labels = [c for c in gold.columns if c in pred.columns and c not in skip]
    missing = [c for c in labels if c not in pred.columns or c not in gold.columns]
    if missing:
        raise KeyError(f"labels {missing} are missing from the predictions or the gold table; "
                       f"score a label set whose names match the gold's columns.")
    if not labels:
        raise ValueError("no label is shared by predictions and gold; check the label set and column names.")
    common = gold.index.intersection(pred.index)
    if len(common) == 0:
        raise ValueError("predictions and gold share no row index; index both by the report id.")
    p = pred.loc[common, list(labels)].to_numpy(dtype=np.float64) == 1.0
    g = gold.loc[common, list(labels)].to_numpy(dtype=np.float64) == 1.0
    tp = (p & g).sum(0)
    fp = (p & ~g).sum(0)
    fn = (~p & g).sum(0)
    rows = []
    for i, label in enumerate(labels):
        rows.append({"label": label, **_f1(int(tp[i]), int(fp[i]), int(fn[i])), "support": int(g[:, i].sum()),
                     "tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i])})
    table = pd.DataFrame(rows).set_index("label")
    micro = _f1(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    with_pos = table[table["support"] > 0]
    return {"per_label": table, "micro_f1": micro["f1"], "micro_precision": micro["precision"],
            "micro_recall": micro["recall"], "macro_f1": float(with_pos["f1"].mean()) if len(with_pos) else 0.0,
            "n_reports": int(len(common)), "labels": list(labels)}
