"""Class-aware retrieval: is what comes back clinically the same, not just the paired report?

Precision@K (K = 1, 5, 10): a retrieved candidate is relevant when its set of present
findings equals the query's (no finding is a class of its own); the "any shared finding"
variant counts a candidate relevant when it shares at least one finding (two no-finding
studies also count). Keyword retrieval (MedFinder's keyword mode): the query is a finding's
name embedded by the text encoder; P@20/50/100 of images that show it.

Labels: a [N, L] array in the manifest's convention; only 1 counts as present.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from workbench.eval.retrieval import as_numpy, l2_normalize

PRECISION_KS = (1, 5, 10)
KEYWORD_KS = (20, 50, 100)


def present_matrix(labels) -> np.ndarray:
    """Bool [N, L]: finding present (label == 1; 0, -1 and NaN are not present)."""
    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    return arr == 1


def finding_set_codes(present: np.ndarray) -> np.ndarray:
    """One integer per distinct set of present findings (the empty set included)."""
    _, codes = np.unique(np.packbits(present, axis=1), axis=0, return_inverse=True)
    return codes.reshape(-1)


def top_k_indices(queries: np.ndarray, candidates: np.ndarray, k: int, chunk_size: int = 1024) -> np.ndarray:
    """[Nq, k] candidate indices by descending score; ties keep the lower index first."""
    k = min(k, candidates.shape[0])
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk_size):
        scores = queries[start:start + chunk_size] @ candidates.T
        out[start:start + chunk_size] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return out


def class_aware_precision(image_emb, text_emb, labels, ks: Sequence[int] = PRECISION_KS,
                          chunk_size: int = 1024) -> Dict[str, float]:
    """i2t and t2i Precision@K (percent) with exact-finding-set relevance, and `_any` variants."""
    img, txt = l2_normalize(as_numpy(image_emb)), l2_normalize(as_numpy(text_emb))  # cosine, as retrieval
    present = present_matrix(labels)
    if present.shape[0] != img.shape[0]:
        raise ValueError(f"labels has {present.shape[0]} rows but there are {img.shape[0]} embeddings.")
    codes = finding_set_codes(present)
    empty = ~present.any(axis=1)
    k_max = max(ks)
    out: Dict[str, float] = {}
    for prefix, (q, c) in (("i2t_", (img, txt)), ("t2i_", (txt, img))):
        top = top_k_indices(q, c, k_max, chunk_size)
        exact = codes[top] == codes[:, None]
        shared = (present[top] & present[:, None, :]).any(axis=2) | (empty[top] & empty[:, None])
        for k in ks:
            kk = min(k, top.shape[1])
            out[f"{prefix}P@{k}"] = float(100.0 * exact[:, :kk].mean())
            out[f"{prefix}P@{k}_any"] = float(100.0 * shared[:, :kk].mean())
    return out


def keyword_precision(query_emb, image_emb, labels, findings: Sequence[str],
                      ks: Sequence[int] = KEYWORD_KS) -> Dict[str, float]:
    """P@K (percent) of images showing finding f among the top K for query f, per finding and
    the mean over findings that occur at all (`kw_P@K`). K is capped at the number of images."""
    queries, images = l2_normalize(as_numpy(query_emb)), l2_normalize(as_numpy(image_emb))
    present = present_matrix(labels)
    if queries.shape[0] != len(findings) or present.shape[1] != len(findings):
        raise ValueError("keyword_precision needs one query embedding and one label column per finding.")
    top = top_k_indices(queries, images, max(ks))
    out: Dict[str, float] = {}
    per_k: Dict[int, List[float]] = {k: [] for k in ks}
    for f, name in enumerate(findings):
        hits = present[top[f], f]
        for k in ks:
            value = float(100.0 * hits[: min(k, len(hits))].mean())
            out[f"kw_P@{k}/{name}"] = value
            if present[:, f].any():
                per_k[k].append(value)
    for k in ks:
        out[f"kw_P@{k}"] = float(np.mean(per_k[k])) if per_k[k] else float("nan")
    return out
