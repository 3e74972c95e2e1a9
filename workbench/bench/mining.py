"""Triplet-mining speed: the seed's default schedule (40000 x 32 = 1.28M triplets) on a
200,000-study MIMIC-like entity table, against the per-pair pure-Python reference.

`python -m workbench.bench mining [--studies N] [--total_iter N] [--reference_iter N]
[--device auto] [--threads N]`. Prints encoding and mining times, triplets/s (wall and CPU
time), the reference's triplets/s on its first `reference_iter` iterations, whether both
miners chose the same triplets there, and returns {"seconds", "triplets", "speedup"}
(speedup = reference seconds per triplet / ours).
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional


from workbench.mining.encode import encode_findings
from workbench.mining.reference import reference_mine_studies, reference_study
from workbench.mining.schedule import MiningConfig, mine_encoded
from workbench.mining.synthetic import synthetic_entity_table


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench mining", description=__doc__)
    parser.add_argument("--studies", type=int, default=200_000)
    parser.add_argument("--total_iter", type=int, default=40_000)
    parser.add_argument("--reference_iter", type=int, default=100, help="iterations the reference mines (x 32 triplets)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the miner (its default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv or [])

    t0 = time.perf_counter()
    table = synthetic_entity_table(args.studies, seed=args.seed, split_fractions=(1.0, 0.0, 0.0))
    t1 = time.perf_counter()
    enc = encode_findings(table["findings"].tolist(), table["study_id"].tolist())
    t2 = time.perf_counter()
    n_findings = (enc.weights > 0).sum(1)
    print(f"entity table: {len(table)} train studies in {t1 - t0:.1f} s; {len(enc.findings) - 1} findings, "
          f"{float((enc.weights[:, -1] > 0).double().mean()):.0%} with no finding, "
          f"{float(n_findings.double().mean()):.2f} findings per study; encoded in {t2 - t1:.1f} s")

    subjects = table["subject_id"].tolist()
    config = MiningConfig(total_iter=args.total_iter, seed=args.seed)
    cpu0 = time.process_time()
    result = mine_encoded(enc, subjects, config, device=args.device, progress=False, cpu_threads=args.threads)
    cpu = time.process_time() - cpu0
    n = len(result.triplets)
    print(f"vectorised ({result.device}, {args.threads} CPU thread(s)): {n} triplets "
          f"({config.total_iter} x {config.mini_batch_size}) in {result.seconds:.2f} s wall, {cpu:.2f} s CPU "
          f"= {n / result.seconds:,.0f} triplets/s; skipped anchors {result.skipped}")

    small = MiningConfig(total_iter=args.reference_iter, seed=args.seed)
    studies = [reference_study(f) for f in table["findings"]]
    t3 = time.perf_counter()
    ref = reference_mine_studies(studies, subjects, small)
    ref_seconds = time.perf_counter() - t3
    ours_small = mine_encoded(enc, subjects, small, device=args.device, progress=False)
    ids = enc.study_ids
    ref_ids = [(ids[a], ids[p], ids[q]) for a, p, q, *_ in ref.triplets]
    same = ref_ids == list(ours_small.triplets[["anchor", "positive", "negative"]].itertuples(index=False, name=None))
    ref_rate = len(ref.triplets) / ref_seconds
    speedup = (ref_seconds / max(1, len(ref.triplets))) / (result.seconds / max(1, n))
    print(f"reference (pure Python, per pair): {len(ref.triplets)} triplets in {ref_seconds:.2f} s "
          f"= {ref_rate:,.0f} triplets/s; same triplets as the vectorised miner: {same}")
    print(f"speedup per triplet: {speedup:,.0f}x; default schedule would take the reference "
          f"{1_280_000 / ref_rate / 60:.0f} min")
    return {"seconds": round(result.seconds, 2), "triplets": n, "speedup": round(speedup, 1)}
