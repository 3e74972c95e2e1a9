"""Figures of the evaluation suite: metric bars with 95 % CIs, ROC curves, leaderboard bars.

Each function takes a tidy table (the rows `evaluate_run` writes) or scores, draws on a new
or given matplotlib Axes and returns the Figure, so notebooks stay one call per figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd


def _axes(ax=None, figsize=(7, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def metric_bars(table: pd.DataFrame, metrics: Sequence[str], group: str = "method", title: str = "", ax=None,
                chance: Optional[dict] = None):
    """Grouped bars of `metrics` per `group` value with CI whiskers (NaN CIs draw none)."""
    fig, ax = _axes(ax, figsize=(max(6, 1.2 * len(metrics) + 2), 3.5))
    groups = list(dict.fromkeys(table[group]))
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(metrics))
    for g, name in enumerate(groups):
        sub = table[table[group] == name].drop_duplicates("metric", keep="last").set_index("metric")
        values = np.array([sub["value"].get(m, np.nan) for m in metrics], dtype=float)
        low = np.array([sub["ci_low"].get(m, np.nan) for m in metrics], dtype=float)
        high = np.array([sub["ci_high"].get(m, np.nan) for m in metrics], dtype=float)
        err = np.vstack([np.where(np.isfinite(low), values - low, 0), np.where(np.isfinite(high), high - values, 0)])
        ax.bar(x + (g - (len(groups) - 1) / 2) * width, values, width, yerr=err, capsize=3, label=str(name))
    if chance:
        for i, m in enumerate(metrics):
            if m in chance:
                ax.hlines(chance[m], i - 0.4, i + 0.4, colors="k", linestyles="dashed",
                          label="chance" if i == 0 else None)
    ax.set_xticks(x, metrics, rotation=30, ha="right")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def roc_curves(scores_file: str | Path, findings: Optional[Sequence[str]] = None, ax=None, title: str = ""):
    """ROC curve per finding from an `eval/<checkpoint>/zeroshot_<split>.npz` file."""
    from sklearn.metrics import roc_curve

    from workbench.eval.stats import roc_auc
    from workbench.eval.zeroshot import binary_targets

    fig, ax = _axes(ax, figsize=(4.5, 4.5))
    with np.load(scores_file) as z:
        scores, labels, names = z["scores"], z["labels"], [str(n) for n in z["findings"]]
    for j, name in enumerate(names):
        if findings and name not in findings:
            continue
        y, ok = binary_targets(labels[:, j])
        if y[ok].all() or not y[ok].any():
            continue  # a single-class column has no ROC curve
        fpr, tpr, _ = roc_curve(y[ok], scores[ok, j])
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y[ok], scores[ok, j]):.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or Path(scores_file).parent.name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# Metrics each evaluation shows in the notebook's bar plot.
FIGURE_METRICS = {
    "retrieval": ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"],
    "classaware": ["i2t_P@1", "i2t_P@5", "i2t_P@10", "i2t_P@10_any", "t2i_P@10", "kw_P@20", "kw_P@50"],
    "zeroshot": ["AUC", "F1", "Acc"],
    "probe": ["probe_AUC@1%", "probe_AUC@10%", "probe_AUC@100%"],
    "segmentation": ["Dice@1%", "Dice@10%", "Dice@100%"],
    "detection": ["mAP@1%", "mAP@10%", "mAP@100%", "mAP50@100%"],
}


def evaluation_figure(results: pd.DataFrame, evaluation: str, split: Optional[str] = None):
    """Bars (with CIs) of one evaluation's headline metrics per checkpoint; retrieval also draws
    the chance level. None when the table holds no rows of that evaluation."""
    rows = results[results["evaluation"] == evaluation]
    if split is not None:
        rows = rows[rows["split"] == split]
    if rows.empty:
        return None
    metrics = [m for m in FIGURE_METRICS.get(evaluation, sorted(set(rows["metric"]))) if m in set(rows["metric"])]
    chance = {m[: -len("_chance")]: v for m, v in zip(rows["metric"], rows["value"]) if m.endswith("_chance")}
    return metric_bars(rows, metrics, group="checkpoint", title=f"{evaluation} ({', '.join(sorted(set(rows['split'])))})",
                       chance=chance or None)


def roc_grid(run_dir: str | Path, split: str = "test"):
    """Zero-shot ROC curves of every evaluated checkpoint, one panel each (None if none)."""
    import matplotlib.pyplot as plt

    files = sorted(Path(run_dir).glob(f"eval/*/zeroshot_{split}.npz"))
    if not files:
        return None
    fig, axes = plt.subplots(1, len(files), figsize=(4.5 * len(files), 4.5), squeeze=False)
    for ax, path in zip(axes[0], files):
        roc_curves(path, ax=ax, title=f"{path.parent.name}: zero-shot ROC")
    fig.tight_layout()
    return fig


def dense_panel(run_dir: str | Path, task: str, split: str = "test", checkpoints: Optional[Sequence[str]] = None,
                n_images: int = 4, threshold: float = 0.5):
    """Predicted masks (segmentation) or boxes (detection) over test images, one row per
    checkpoint: ground truth in green, prediction in red (boxes: score >= `threshold`), from the
    `eval/<checkpoint>/<task>_<split>.npz` the dense evaluation saved at its largest fraction.
    None when no checkpoint has one."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    files = sorted(Path(run_dir).glob(f"eval/*/{task}_{split}.npz"))
    if checkpoints is not None:
        files = [f for f in files if f.parent.name in set(checkpoints)]
    if not files:
        return None
    fig, axes = plt.subplots(len(files), n_images, figsize=(2.2 * n_images, 2.4 * len(files)), squeeze=False)
    for row, path in zip(axes, files):
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        for j, ax in enumerate(row):
            ax.axis("off")
            if j >= len(data["study_ids"]):
                continue
            ax.imshow(data["images"][j], cmap="gray")
            if task == "segmentation":
                for mask, level, color in ((data["targets"][j].astype(np.float32), 0.5, "lime"),
                                           (data["probs"][j].astype(np.float32), threshold, "red")):
                    if mask.min() < level <= mask.max():  # a contour exists
                        ax.contour(mask, levels=[level], colors=color, linewidths=0.8)
                label = f"Dice {data['dice'][j]:.2f}"
            else:
                label = ""
                for tag, color in (("gt", "lime"), ("pred", "red")):
                    lo, hi = data[f"{tag}_offsets"][j], data[f"{tag}_offsets"][j + 1]
                    for k in range(lo, hi):
                        if tag == "pred" and data["pred_scores"][k] < threshold:
                            continue
                        x0, y0, x1, y1 = data[f"{tag}_boxes"][k]
                        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color, lw=0.9))
                        if tag == "pred":
                            label = label or f"top {data['pred_scores'][k]:.2f}"
            ax.set_title(f"{path.parent.name}\n{data['study_ids'][j]} {label}", fontsize=7)
    fig.suptitle(f"{task}: ground truth (green) vs prediction (red), {split} split", fontsize=9)
    fig.tight_layout()
    return fig
