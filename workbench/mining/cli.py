"""`python -m workbench.mining`: mine triplets from OBER's entity table, as the seed's
`run_triplet_generation.py` does (same options and defaults), into a CSV of study ids + scores.

    python -m workbench.mining --input ober.parquet --output triplets.csv.xz \
        [--threshold 0.25 --semi_hard_prob 1.0 --big_batch_size 512 --mini_batch_size 32 \
         --total_iter 40000 --scoring union|seed --uncertain_weight 0.5 --positive_cap 0.6 \
         --all_anchors --min_positive_score X --seed N --device auto]

The output is checked before mining (a .csv[.gz|.xz|.bz2] name, an existing writable folder,
not the input or the manifest). Exit status: 0 with triplets written, 2 for bad options or
input, 1 when the schedule mines no triplet (nothing is written then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from workbench.data.skips import format_skips

from workbench.mining.encode import FindingsFormatError
from workbench.mining.schedule import MiningConfig, mine_triplets
from workbench.mining.similarity import SCORINGS
from workbench.mining.table import TRIPLET_SUFFIXES, EntityTableError, load_entity_table, write_triplets
from workbench.ober.cli import check_output_path


def build_parser() -> argparse.ArgumentParser:
    d = MiningConfig()
    p = argparse.ArgumentParser(prog="python -m workbench.mining", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="entity table: ober.parquet (study_id, findings[, subject_id, split])")
    p.add_argument("--output", required=True, help="triplet CSV to write (e.g. triplets.csv.xz)")
    p.add_argument("--manifest", default=None,
                   help="manifest to join subject_id/split from (default: manifest.parquet beside --input)")
    p.add_argument("--modality", default="", help="mine only studies of this modality (cxr | ct); default: all")
    p.add_argument("--threshold", type=float, default=d.threshold, help="semi-hard negatives score >= this")
    p.add_argument("--semi_hard_prob", type=float, default=d.semi_hard_prob, help="probability of a semi-hard negative")
    p.add_argument("--big_batch_size", type=int, default=d.big_batch_size)
    p.add_argument("--mini_batch_size", type=int, default=d.mini_batch_size)
    p.add_argument("--total_iter", type=int, default=d.total_iter, help="iterations (x mini_batch_size triplets)")
    p.add_argument("--scoring", choices=SCORINGS, default=d.scoring,
                   help="union: symmetric, 1 only for identical entity sets; seed: the seed's anchor-normalised score")
    p.add_argument("--w_dis", type=float, default=d.w_dis, help="weight of the finding Jaccard")
    p.add_argument("--w_adj", type=float, default=d.w_adj, help="weight of the severity agreement")
    p.add_argument("--w_dir", type=float, default=d.w_dir, help="weight of the location agreement")
    p.add_argument("--uncertain_weight", type=float, default=d.uncertain_weight)
    p.add_argument("--positive_cap", type=float, default=d.positive_cap, help="negatives must score below this")
    p.add_argument("--all_anchors", action="store_true", help="every mini-batch member is an anchor")
    p.add_argument("--min_positive_score", type=float, default=None, help="skip anchors whose best match is weaker")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = MiningConfig(
        threshold=args.threshold, semi_hard_prob=args.semi_hard_prob, big_batch_size=args.big_batch_size,
        mini_batch_size=args.mini_batch_size, total_iter=args.total_iter, scoring=args.scoring,
        w_dis=args.w_dis, w_adj=args.w_adj, w_dir=args.w_dir, uncertain_weight=args.uncertain_weight,
        positive_cap=args.positive_cap, all_anchors=args.all_anchors, min_positive_score=args.min_positive_score,
        seed=args.seed,
    )
    manifest = Path(args.manifest) if args.manifest else Path(args.input).parent / "manifest.parquet"
    try:
        check_output_path(args.output, [args.input, manifest], TRIPLET_SUFFIXES)
        config.validate()
        table = load_entity_table(args.input, args.manifest)
        result = mine_triplets(table, config, device=args.device, progress=not args.quiet, modality=args.modality)
    except (EntityTableError, FindingsFormatError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(result.triplets) == 0:
        print(f"error: mined no triplet from {result.n_studies} train studies ({result.anchors} anchors: "
              f"{result.skipped_no_candidate} without a negative below --positive_cap, "
              f"{result.skipped_weak_positive} with a positive below --min_positive_score); "
              f"nothing written to {args.output}: loosen those options or raise --total_iter.", file=sys.stderr)
        return 1
    write_triplets(result.triplets, args.output)
    print(f"Mined {len(result.triplets)} triplets from {result.n_studies} train studies in {result.seconds:.1f} s "
          f"on {result.device} -> {args.output}")
    print(f"Skipped anchors: {result.skipped} (no negative candidate: {result.skipped_no_candidate}, "
          f"positive below min_positive_score: {result.skipped_weak_positive})")
    if result.skips:
        print(f"Studies not mined: {format_skips(result.skips)}")
    return 0
