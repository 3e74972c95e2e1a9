"""`python -m workbench.train --config medtrim --training.batch_size 64 [--run-dir DIR]`.

`--config` takes a bundled config name (workbench/configs/*.yaml) or a YAML path; every other
`--section.key value` overrides one config key (workbench.config.load_config). Launch under
`torchrun --nproc_per_node=N -m workbench.train ...` for DDP; nothing else changes.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from workbench.config import bundled_configs, load_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=f"bundled name ({', '.join(bundled_configs())}) or YAML path")
    parser.add_argument("--method", default=None, help="method name (overrides method.name)")
    parser.add_argument("--run-dir", default=None, help="run folder with manifest.parquet (default: newest)")
    parser.add_argument("--no-progress", action="store_true")
    args, rest = parser.parse_known_args(argv)
    overrides: List[str] = list(rest)
    if args.method:
        overrides.append(f"method.name={args.method}")
    cfg = load_config(args.config, overrides)

    from workbench.train.trainer import train

    result = train(cfg, args.run_dir, progress=not args.no_progress)
    print(f"[workbench] trained {cfg.method.name}: {result.global_step} steps, best "
          f"{cfg.training.select_metric}={result.best_metric} -> {result.out_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
