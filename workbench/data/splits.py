"""Patient-level, seed-deterministic train/val/test splits.

Studies of one patient are correlated (same anatomy, often near-identical reports), so a
patient in train and test inflates retrieval scores. Splits are therefore drawn over subjects,
never over studies, separately per modality so that small CT subsets still get a test split.
An official split (MIMIC's split CSV, ROCO's files, CT-RATE's folders) wins over the drawn one.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from workbench.data.skips import SkipCounter

SPLIT_NAMES = ("train", "val", "test")
_OFFICIAL_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                     "validation": "val", "dev": "val", "test": "test", "testing": "test"}
_STRICTNESS = {"train": 0, "val": 1, "test": 2}


def normalise_split_name(value: object) -> Optional[str]:
    """'validate' -> 'val', 'valid' -> 'val', NaN/'' -> None; unknown names raise."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    key = str(value).strip().lower()
    if not key:
        return None
    if key not in _OFFICIAL_ALIASES:
        raise ValueError(f"Unknown split name {value!r}; use one of {sorted(_OFFICIAL_ALIASES)}.")
    return _OFFICIAL_ALIASES[key]


def _counts(n: int, fractions: Sequence[float]) -> list:
    """Largest-remainder counts summing to n; every split with a positive fraction gets at
    least one subject when there are enough subjects."""
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"split_fractions must be three non-negative numbers (train, val, test); got {fractions}.")
    fr = fr / fr.sum()
    raw = fr * n
    counts = np.floor(raw).astype(int)
    for idx in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[idx] += 1
    positive = np.flatnonzero(fr > 0)
    if n >= len(positive):
        for idx in positive:
            if counts[idx] == 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[idx] += 1
    return counts.tolist()


def draw_subject_splits(subjects: Sequence[str], seed: int = 0,
                        fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> Dict[str, str]:
    """subject -> split; a seeded permutation of the sorted unique subjects, cut by fractions."""
    unique = sorted(set(str(s) for s in subjects))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train, n_val, _ = _counts(len(unique), fractions)
    out: Dict[str, str] = {}
    for rank, idx in enumerate(order):
        out[unique[idx]] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return out


def assign_splits(df: pd.DataFrame, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  official_column: str = "official_split", skips: Optional[SkipCounter] = None) -> pd.Series:
    """The `split` column for a manifest-shaped frame (needs subject_id and modality).

    Rules, in order:
    1. A subject with an official split keeps it for all its studies (when its studies
       disagree, the strictest wins: test > val > train, counted as `official_split_conflict`).
    2. When the official splits lack val and/or test (CT-RATE has train/valid, mapped to
       train/test; the pneumonia folders have train only), the missing ones are drawn from
       the official train subjects with their share of `fractions`.
    3. Subjects without any official split are drawn per modality with `seed` and `fractions`.
    """
    subjects = df["subject_id"].astype(str)
    official = ([normalise_split_name(v) for v in df[official_column].astype(object)]
                if official_column in df.columns else [None] * len(df))
    subject_split: Dict[str, str] = {}
    for subject, split in zip(subjects, official):
        if split is None:
            continue
        prev = subject_split.get(subject)
        if prev is not None and prev != split:
            if skips is not None:
                skips.keep("official_split_conflict", subject)
            split = max(prev, split, key=_STRICTNESS.__getitem__)
        subject_split[subject] = split

    present = set(subject_split.values())
    if "train" in present and present != set(SPLIT_NAMES):
        train_pool = sorted(s for s, v in subject_split.items() if v == "train")
        pool_fractions = [fractions[0]] + [fractions[k] if SPLIT_NAMES[k] not in present else 0.0 for k in (1, 2)]
        subject_split.update(draw_subject_splits(train_pool, seed, pool_fractions))

    modality = df["modality"].astype(str) if "modality" in df.columns else pd.Series("", index=df.index)
    for mod in sorted(modality.unique()):
        pending = [s for s in subjects[modality == mod].unique() if s not in subject_split]
        subject_split.update(draw_subject_splits(pending, seed, fractions))
    return subjects.map(subject_split).astype(object).rename("split")


def check_no_leakage(df: pd.DataFrame) -> None:
    """Raise if a subject appears in more than one split."""
    leaked = df.groupby("subject_id")["split"].nunique()
    if (leaked > 1).any():
        raise ValueError(f"Subject {leaked[leaked > 1].index[0]!r} appears in more than one split.")
