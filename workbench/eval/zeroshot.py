"""Zero-shot classification per finding from positive/negative prompt pairs.

Each finding gets a positive and a negative prompt set; each set's text embeddings are
averaged over templates (CLIP's prompt ensembling, Radford et al. 2021 §3.1.4) and the image
is scored by a two-way softmax over {positive, negative} similarities (CheXzero, Tiu et al.
2022: positive-vs-negative prompt pairs). Threshold for F1/accuracy: the F1-best on the
validation split, applied unchanged to the test split. 95 % CIs: bootstrap over test images.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from workbench.eval.retrieval import as_numpy
from workbench.eval.stats import best_f1_threshold, bootstrap_ci, f1_accuracy, metric_with_ci, roc_auc

POSITIVE_TEMPLATES: Tuple[str, ...] = (
    "{finding}.",
    "There is {finding}.",
    "Findings consistent with {finding}.",
    "{finding} is present.",
)
NEGATIVE_TEMPLATES: Tuple[str, ...] = (
    "No {finding}.",
    "There is no {finding}.",
    "No evidence of {finding}.",
    "{finding} is absent.",
)


def finding_phrase(name: str) -> str:
    """`Lung_Opacity` -> `lung opacity` (what a report would say)."""
    return name.replace("_", " ").strip().lower()


def prompts_for(finding: str, templates: Sequence[str]) -> List[str]:
    phrase = finding_phrase(finding)
    return [t.format(finding=phrase).capitalize() if t.startswith("{") else t.format(finding=phrase) for t in templates]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def prompt_embeddings(encode_texts: Callable[[List[str]], np.ndarray], findings: Sequence[str],
                      positive: Sequence[str] = POSITIVE_TEMPLATES,
                      negative: Sequence[str] = NEGATIVE_TEMPLATES) -> Tuple[np.ndarray, np.ndarray]:
    """Template-ensembled positive and negative prompt embeddings, [F, E] each (unit norm)."""
    pos, neg = [], []
    for finding in findings:
        pos.append(_unit(_unit(as_numpy(encode_texts(prompts_for(finding, positive)))).mean(0)))
        neg.append(_unit(_unit(as_numpy(encode_texts(prompts_for(finding, negative)))).mean(0)))
    return np.stack(pos), np.stack(neg)


def zero_shot_scores(image_emb, positive_emb: np.ndarray, negative_emb: np.ndarray,
                     logit_scale: float = 100.0) -> np.ndarray:
    """[N, F] probability of 'positive' under a two-way softmax of scaled cosine similarities."""
    img = _unit(as_numpy(image_emb))
    diff = logit_scale * (img @ positive_emb.T - img @ negative_emb.T)
    return 1.0 / (1.0 + np.exp(-np.clip(diff, -60, 60)))


def binary_targets(column) -> Tuple[np.ndarray, np.ndarray]:
    """(present, usable): 1 is present; 0 and NaN (unmentioned) are absent; -1 (uncertain) is
    left out of that finding's evaluation."""
    col = np.asarray(column, dtype=np.float64)
    return col == 1, col != -1


def evaluate_binary_scores(val_y: np.ndarray, val_scores: np.ndarray, test_y: np.ndarray, test_scores: np.ndarray,
                           names: Sequence[str], n_boot: int = 200, seed: int = 0,
                           prefix: str = "") -> List[Dict[str, float]]:
    """Per-column AUC, F1 and accuracy (validation-chosen threshold) with bootstrap 95 % CIs, and
    their macro means (`AUC`, `F1`, `Acc`). A single-class test column gives AUC NaN with a NaN
    CI and never raises."""
    rows: List[Dict[str, float]] = []
    per_metric: Dict[str, List[float]] = {"AUC": [], "F1": [], "Acc": []}
    for j, name in enumerate(names):
        yv, okv = binary_targets(val_y[:, j])
        yt, okt = binary_targets(test_y[:, j])
        threshold = best_f1_threshold(yv[okv], val_scores[okv, j])
        y, s = yt[okt], test_scores[okt, j]
        if len(y) == 0:
            continue
        auc = roc_auc(y, s)
        f1, acc = f1_accuracy(y, s >= threshold)
        auc_ci = bootstrap_ci(lambda idx: roc_auc(y[idx], s[idx]), len(y), n_boot, seed)
        f1_ci = bootstrap_ci(lambda idx: f1_accuracy(y[idx], s[idx] >= threshold)[0], len(y), n_boot, seed)
        acc_ci = bootstrap_ci(lambda idx: f1_accuracy(y[idx], s[idx] >= threshold)[1], len(y), n_boot, seed)
        rows += [metric_with_ci(f"{prefix}AUC/{name}", auc, auc_ci), metric_with_ci(f"{prefix}F1/{name}", f1, f1_ci),
                 metric_with_ci(f"{prefix}Acc/{name}", acc, acc_ci)]
        per_metric["AUC"].append(auc)
        per_metric["F1"].append(f1)
        per_metric["Acc"].append(acc)

    valid_auc = [v for v in per_metric["AUC"] if np.isfinite(v)]
    if per_metric["AUC"]:
        macro_ci = (bootstrap_ci(lambda idx: _macro_auc_on(idx, test_y, test_scores), test_y.shape[0], n_boot, seed)
                    if valid_auc else (float("nan"), float("nan"), 0))
        rows.append(metric_with_ci(f"{prefix}AUC", float(np.mean(valid_auc)) if valid_auc else float("nan"), macro_ci))
        rows.append(metric_with_ci(f"{prefix}F1", float(np.mean(per_metric["F1"]))))
        rows.append(metric_with_ci(f"{prefix}Acc", float(np.mean(per_metric["Acc"]))))
    return rows


def _macro_auc_on(idx: np.ndarray, test_y: np.ndarray, test_scores: np.ndarray) -> float:
    """Macro AUC over the columns that keep both classes in a bootstrap resample."""
    values = []
    for j in range(test_y.shape[1]):
        y, ok = binary_targets(test_y[idx, j])
        auc = roc_auc(y[ok], test_scores[idx, j][ok])
        if np.isfinite(auc):
            values.append(auc)
    return float(np.mean(values)) if values else float("nan")


def zero_shot_evaluate(val_image_emb, val_labels, test_image_emb, test_labels, positive_emb: np.ndarray,
                       negative_emb: np.ndarray, findings: Sequence[str], logit_scale: float = 100.0,
                       n_boot: int = 200, seed: int = 0) -> Tuple[List[Dict[str, float]], np.ndarray]:
    """Tidy metric rows and the [N_test, F] test scores (for ROC curves)."""
    val_scores = zero_shot_scores(val_image_emb, positive_emb, negative_emb, logit_scale)
    test_scores = zero_shot_scores(test_image_emb, positive_emb, negative_emb, logit_scale)
    rows = evaluate_binary_scores(np.asarray(val_labels, dtype=np.float64), val_scores,
                                  np.asarray(test_labels, dtype=np.float64), test_scores, findings, n_boot, seed)
    return rows, test_scores
