"""Chunked retrieval metrics vs a naive full-argsort reference: time and peak memory.

`python -m workbench.bench retrieval [--n 20000] [--dim 512] [--chunk 1024]`. Embeddings are
Gaussian, quantised to multiples of 1/16 so every dot product is exact in float32 whatever
the summation order (both paths then see identical scores, ties included), and the two
results are asserted identical. Memory is numpy's peak allocation seen by tracemalloc.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from workbench.eval.retrieval import naive_retrieval_metrics, retrieval_metrics


def paired_embeddings(n: int, dim: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Correlated image/text pairs whose dot products are exact in float32."""
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, dim))
    txt = img + 12.0 * rng.normal(size=(n, dim))  # noisy enough that ranks spread
    quantise = lambda x: (np.round(x * 4) / 16).astype(np.float32)  # noqa: E731
    return quantise(img), quantise(txt)


def measure(fn: Callable[[], Dict[str, float]]) -> Tuple[Dict[str, float], float, float]:
    """(result, seconds, peak MiB allocated during the call)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak / 2**20


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench retrieval")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=1024)
    args = parser.parse_args(argv or [])
    img, txt = paired_embeddings(args.n, args.dim)
    chunked, t_chunked, m_chunked = measure(lambda: retrieval_metrics(img, txt, chunk_size=args.chunk))
    naive, t_naive, m_naive = measure(lambda: naive_retrieval_metrics(img, txt))
    if chunked != naive:
        raise AssertionError(f"chunked and naive retrieval metrics differ: {chunked} vs {naive}")
    print(f"N={args.n} dim={args.dim} chunk={args.chunk}")
    print(f"chunked: {t_chunked:8.2f} s  peak {m_chunked:9.1f} MiB")
    print(f"naive  : {t_naive:8.2f} s  peak {m_naive:9.1f} MiB  (full N x N scores + argsort)")
    print("metrics (identical): " + " ".join(f"{k}={v:.3f}" for k, v in chunked.items()))
    return {"speedup": t_naive / t_chunked, "mem_ratio": m_naive / m_chunked,
            "chunked_s": t_chunked, "naive_s": t_naive, "chunked_MiB": m_chunked, "naive_MiB": m_naive}
