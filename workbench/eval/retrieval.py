"""Cross-modal retrieval metrics (R@K, median and mean rank), computed in chunks.

Scores are cosine similarities, as every CLIP-style evaluation reports: embeddings are
L2-normalised here (one cheap pass), so a caller's unnormalised rows (or any positive rescaling
of them) give the same ranks. Rank of a query = 1 + the number of candidates scoring strictly
higher than its best-scoring true match (ties count in the query's favour), as MedFinder and
open_clip report. The score
matrix is built one query chunk at a time, so memory is O(N x chunk), never N x N, and no
row is sorted.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

KS = (1, 5, 10)


def as_numpy(x, keep_double: bool = False) -> np.ndarray:
    """A float32 array from a numpy array or a (possibly GPU, grad-tracking) torch tensor
    (`keep_double`: float64 input stays float64)."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu")
        x = x.numpy() if keep_double and str(x.dtype) == "torch.float64" else x.float().numpy()
    arr = np.asarray(x)
    dtype = np.float64 if keep_double and arr.dtype == np.float64 else np.float32
    return np.ascontiguousarray(arr, dtype=dtype)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): dot products become cosine similarities.

    Kept in float64 (and so are the scores computed from it): a row and any positive multiple
    of it then agree to ~1e-16, so rescaling cannot reorder near-ties that float32 rounding would.
    """
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x64, axis=1, keepdims=True)
    return np.ascontiguousarray(x64 / np.where(norms > 0, norms, 1.0))


def group_codes(groups: Optional[Sequence], n: int, what: str) -> np.ndarray:
    """Integer codes of group labels (any hashable values); None: every row its own group."""
    if groups is None:
        return np.arange(n)
    values = np.asarray(list(groups) if not isinstance(groups, np.ndarray) else groups)
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} entries but there are {n} embeddings; pass one group per row.")
    _, codes = np.unique(values.astype(str) if values.dtype == object else values, return_inverse=True)
    return codes.reshape(-1)


def ranks_chunked(queries: np.ndarray, candidates: np.ndarray, match_q: Tuple[np.ndarray, ...],
                  match_c: Tuple[np.ndarray, ...], chunk_size: int = 1024) -> np.ndarray:
    """1-based rank of each query's best true match among all candidates.

    Query q and candidate c are a true match when they share a code in ANY of the paired
    code arrays (`match_q[k][q] == match_c[k][c]` for some k).
    """
    n_q = queries.shape[0]
    ranks = np.empty(n_q, dtype=np.int64)
    cand_t = np.ascontiguousarray(candidates.T)
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        scores = queries[start:stop] @ cand_t  # [chunk, N]
        match = np.zeros(scores.shape, dtype=bool)
        for codes_q, codes_c in zip(match_q, match_c):
            match |= codes_q[start:stop, None] == codes_c[None, :]
        if not match.any(axis=1).all():
            bad = start + int(np.flatnonzero(~match.any(axis=1))[0])
            raise ValueError(f"Query {bad} has no true match among the candidates; check the group arrays.")
        best_true = np.where(match, scores, -np.inf).max(axis=1)
        ranks[start:stop] = 1 + (scores > best_true[:, None]).sum(axis=1)
    return ranks


def summarize_ranks(ranks: np.ndarray, prefix: str, ks: Sequence[int] = KS) -> Dict[str, float]:
    """R@K in percent, median rank and mean rank."""
    out = {f"{prefix}R@{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
    out[f"{prefix}MdR"] = float(np.median(ranks))
    out[f"{prefix}MnR"] = float(np.mean(ranks))
    return out


def retrieval_ranks(image_emb, text_emb, image_groups: Optional[Sequence] = None,
                    text_groups: Optional[Sequence] = None, chunk_size: int = 1024,
                    normalize: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Per-query ranks (image->text, text->image) by cosine similarity; see `retrieval_metrics`
    for the match rule. `normalize=False` ranks by the raw dot product (rows that already are
    a hand-built score matrix)."""
    img = as_numpy(image_emb, keep_double=True)
    txt = as_numpy(text_emb, keep_double=True)
    if img.ndim != 2 or txt.ndim != 2 or img.shape != txt.shape:
        raise ValueError(f"image_emb {img.shape} and text_emb {txt.shape} must be paired [N, E] arrays of equal shape.")
    if normalize:
        img, txt = l2_normalize(img), l2_normalize(txt)
    n = img.shape[0]
    ig = group_codes(image_groups, n, "image_groups")
    tg = group_codes(text_groups, n, "text_groups")
    i2t = ranks_chunked(img, txt, (ig, tg), (ig, tg), chunk_size)
    t2i = ranks_chunked(txt, img, (ig, tg), (ig, tg), chunk_size)
    return i2t, t2i


def retrieval_metrics(image_emb, text_emb, image_groups: Optional[Sequence] = None,
                      text_groups: Optional[Sequence] = None, chunk_size: int = 1024,
                      normalize: bool = True) -> Dict[str, float]:
    """Image->text and text->image R@1/5/10 (percent), MdR and MnR (1-based ranks), ranking by
    cosine similarity (rows are L2-normalised inside: their scale never changes a result).

    Row i of `image_emb` and row i of `text_emb` are a pair (an image and its report). Without
    groups, pair i is query i's only true match. With groups, rows i and j also match when
    they share an image group (e.g. the study id: several images of one study form one
    target) or a text group (e.g. one id per distinct report text: duplicate texts are not
    punished). Rank = 1 + candidates scoring strictly higher than the best true match.
    """
    i2t, t2i = retrieval_ranks(image_emb, text_emb, image_groups, text_groups, chunk_size, normalize)
    return {**summarize_ranks(i2t, "i2t_"), **summarize_ranks(t2i, "t2i_")}


def chance_retrieval_metrics(n: int, ks: Sequence[int] = KS) -> Dict[str, float]:
    """What a random ranking scores on N pairs with one true match each (the floor to report)."""
    out: Dict[str, float] = {}
    for prefix in ("i2t_", "t2i_"):
        for k in ks:
            out[f"{prefix}R@{k}"] = 100.0 * min(k, n) / n
        out[f"{prefix}MdR"] = (n + 1) / 2.0
        out[f"{prefix}MnR"] = (n + 1) / 2.0
    return out


def naive_retrieval_metrics(image_emb, text_emb, normalize: bool = True) -> Dict[str, float]:
    """Reference: full N x N cosine-score matrix, every row argsorted (the memory-hungry way).

    The rank is the position of the first entry (in descending order) whose score equals the
    true pair's, i.e. 1 + strictly higher scores, so it agrees with the chunked version on ties.
    """
    img, txt = as_numpy(image_emb, keep_double=True), as_numpy(text_emb, keep_double=True)
    if normalize:
        img, txt = l2_normalize(img), l2_normalize(txt)
    out: Dict[str, float] = {}
    for prefix, (q, c) in (("i2t_", (img, txt)), ("t2i_", (txt, img))):
        scores = q @ c.T
        order = np.argsort(-scores, axis=1, kind="stable")
        sorted_scores = np.take_along_axis(scores, order, axis=1)
        true = np.diagonal(scores)[:, None]
        ranks = 1 + np.argmax(sorted_scores == true, axis=1)
        out.update(summarize_ranks(ranks, prefix))
        del scores, order, sorted_scores
    return out
