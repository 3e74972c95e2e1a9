"""Linear probe: how much of each label a frozen image encoder's features already hold.

Features are computed once (see `workbench.eval.embed.cached_features`); a scikit-learn
logistic regression is fit on 1 %, 10 % and 100 % of the train split (fixed seeds, so the
same inputs give the same numbers) and scored on the evaluation split: macro AUC for
multi-label / binary targets, accuracy for multi-class (the linear-evaluation protocol of
CLIP, Radford et al. 2021 §3.2, and of ConVIRT's data-efficiency study, Zhang et al. 2022 §4).
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np

from workbench.data.labels import label_column, label_columns
from workbench.eval.stats import bootstrap_ci, metric_with_ci, roc_auc

TASKS = ("multilabel", "binary", "multiclass")


def subsample_indices(n: int, fraction: float, seed: int, classes: np.ndarray | None = None) -> np.ndarray:
    """A fixed-seed subset of ceil(fraction * n) rows (at least 2); for class targets each class
    present in the full train split keeps at least one example, so the fit is defined."""
    rng = np.random.default_rng(seed)
    size = max(2, min(n, math.ceil(fraction * n)))
    chosen = rng.permutation(n)[:size]
    if classes is not None:
        missing = set(np.unique(classes)) - set(np.unique(classes[chosen]))
        extra = [int(np.flatnonzero(classes == c)[0]) for c in sorted(missing)]
        chosen = np.concatenate([chosen, np.asarray(extra, dtype=np.int64)])
    return np.sort(chosen)


def _fit_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c: float, seed: int) -> np.ndarray:
    """Probability of the positive class; a constant when the subset has one class only."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(train_y)) < 2:
        return np.full(test_x.shape[0], float(train_y[0]))
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(train_x, train_y)
    return clf.predict_proba(test_x)[:, 1]


def _standardize(train_x: np.ndarray, test_x: np.ndarray):
    mean = train_x.mean(0)
    std = train_x.std(0) + 1e-6
    return (train_x - mean) / std, (test_x - mean) / std


def linear_probe(train_x, train_y, test_x, test_y, fractions: Sequence[float] = (0.01, 0.1, 1.0),
                 task: str = "multilabel", seed: int = 0, c: float = 1.0, n_boot: int = 200,
                 names: Sequence[str] | None = None) -> List[Dict[str, float]]:
    """Tidy metric rows `probe_AUC@<pct>%` (multilabel/binary) or `probe_Acc@<pct>%` (multiclass).

    multilabel: `train_y` [N, L] in the manifest's convention (1 present; -1 uncertain rows are
    left out of that label); macro AUC over labels with both classes in the test split.
    binary / multiclass: `train_y` [N] integer classes.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown probe task {task!r}; use one of {TASKS}.")
    train_x = np.asarray(train_x, dtype=np.float64)
    test_x = np.asarray(test_x, dtype=np.float64)
    rows: List[Dict[str, float]] = []
    for fraction in fractions:
        pct = f"{100 * fraction:g}%"
        if task == "multilabel":
            ty = np.asarray(train_y, dtype=np.float64)
            ey = np.asarray(test_y, dtype=np.float64)
            idx = subsample_indices(len(train_x), fraction, seed)
            tx, ex = _standardize(train_x[idx], test_x)
            scores = np.zeros(ey.shape)
            for j in range(ty.shape[1]):
                ok = ty[idx, j] != -1
                scores[:, j] = _fit_scores(tx[ok], (ty[idx, j][ok] == 1).astype(int), ex, c, seed)

            def macro(sel: np.ndarray) -> float:
                vals = [roc_auc(ey[sel, j][ey[sel, j] != -1] == 1, scores[sel, j][ey[sel, j] != -1])
                        for j in range(ey.shape[1])]
                vals = [v for v in vals if np.isfinite(v)]
                return float(np.mean(vals)) if vals else float("nan")

            everything = np.arange(len(ey))
            rows.append(metric_with_ci(f"probe_AUC@{pct}", macro(everything), bootstrap_ci(macro, len(ey), n_boot, seed)))
            if names is not None and fraction == max(fractions):
                for j, name in enumerate(names):
                    ok = ey[:, j] != -1
                    rows.append(metric_with_ci(f"probe_AUC@{pct}/{name}", roc_auc(ey[ok, j] == 1, scores[ok, j])))
        else:
            ty = np.asarray(train_y).astype(int).reshape(-1)
            ey = np.asarray(test_y).astype(int).reshape(-1)
            idx = subsample_indices(len(train_x), fraction, seed, classes=ty)
            tx, ex = _standardize(train_x[idx], test_x)
            if task == "binary":
                scores = _fit_scores(tx, ty[idx], ex, c, seed)
                stat = lambda sel: roc_auc(ey[sel], scores[sel])  # noqa: E731
                name = f"probe_AUC@{pct}"
            else:
                from sklearn.linear_model import LogisticRegression

                clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(tx, ty[idx])
                predicted = clf.predict(ex)
                stat = lambda sel: float(np.mean(predicted[sel] == ey[sel]))  # noqa: E731
                name = f"probe_Acc@{pct}"
            rows.append(metric_with_ci(name, stat(np.arange(len(ey))), bootstrap_ci(stat, len(ey), n_boot, seed)))
    return rows


def class_folder_probe(model, root, work_dir, positive: str = "PNEUMONIA", subject_regex: str = "",
                       image_size: int = 224, seed: int = 0, fractions: Sequence[float] = (0.01, 0.1, 1.0),
                       batch_size: int = 32, n_boot: int = 200, max_studies: int | None = None,
                       progress: bool = True) -> List[Dict[str, float]]:
    """Binary linear probe on a labelled class-folder image set (e.g. ../shared/data/pneumonia_cxr:
    normal vs pneumonia), split by patient (`subject_regex`) through the data layer's `folders`
    reader; features of the model's frozen image encoder, cached under `work_dir`.

    `max_studies` keeps a fixed-seed subset (for quick checks). Rows as `linear_probe`'s, on test.
    """
    from pathlib import Path

    from workbench.data import build_manifest
    from workbench.data.cache import build_image_cache
    from workbench.data.datasets import StudyDataset
    from workbench.eval.embed import encoder_fingerprint, image_features

    work_dir = Path(work_dir)
    manifest = build_manifest("folders", root, seed=seed, subject_regex=subject_regex)
    column = label_column(positive)
    if column not in manifest.columns:
        raise ValueError(f"{root} has no class folder {positive!r}; classes: "
                         f"{[c[len('label_'):] for c in label_columns(manifest.columns)]}.")
    if max_studies and len(manifest) > max_studies:
        manifest = manifest.sample(n=max_studies, random_state=seed).reset_index(drop=True)
    build_image_cache(manifest, work_dir / "cache", image_size, progress=progress)
    key = encoder_fingerprint(model, f"{root}|{image_size}|{len(manifest)}|{seed}")
    path = work_dir / f"probe_features_{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            train_x, train_y, test_x, test_y = z["train_x"], z["train_y"], z["test_x"], z["test_y"]
    else:
        parts = {}
        for split in ("train", "test"):
            ds = StudyDataset(manifest, work_dir / "cache", split=split, fields=("image",), image_size=image_size)
            y = (ds.frame[column].astype(float).to_numpy() == 1).astype(int)
            parts[split] = (image_features(model, ds, batch_size, progress, desc=f"probe {split}"), y)
        train_x, train_y = parts["train"]
        test_x, test_y = parts["test"]
        from workbench.io import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    return linear_probe(train_x, train_y, test_x, test_y, fractions=fractions, task="binary", seed=seed,
                        n_boot=n_boot)
