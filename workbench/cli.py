"""The command-line runner: notebooks headless into run folders, the whole pipeline, the sweep.

    python -m workbench.cli notebook 03_pretrain -p method cgns -p max_steps 50
    python -m workbench.cli pipeline [-p dataset mimic -p data_root DIR]   (what `make demo` calls)
    python -m workbench.cli sweep --methods all --seeds 3

It sits at the top of the layering (it drives notebooks, the plan and the sweep);
`workbench.runs` below it only names and records run folders.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from workbench.runs import RunRecord, find_run_dir, new_run_dir, notebook_path
from workbench.sweep import add_arguments as add_sweep_arguments, run_from_args as run_sweep_from_args


def run_notebook(name: str, run_dir: str | os.PathLike, parameters: Optional[Mapping[str, Any]] = None,
                 output_name: Optional[str] = None, progress: bool = True) -> Path:
    """Execute one notebook headless with papermill into `run_dir`; returns the executed copy.

    `run_dir` is always injected, so every notebook writes into the same folder.
    """
    import papermill as pm

    run_dir = Path(run_dir).resolve()  # the kernel runs in notebooks/: a relative path would land there
    run_dir.mkdir(parents=True, exist_ok=True)
    src = notebook_path(name)
    out = run_dir / (output_name or src.name)
    params = {"run_dir": str(run_dir), **dict(parameters or {})}
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3",
                        progress_bar=progress, cwd=str(src.parent))
    return out


def _executed_name(name: str, step_params: Mapping[str, Any]) -> str:
    stem = notebook_path(name).stem
    suffix = f"-{step_params['method']}" if stem.startswith("03") and "method" in step_params else ""
    return f"{stem}{suffix}.ipynb"


def run_pipeline(parameters: Optional[Mapping[str, Any]] = None, run_dir: Optional[Path] = None,
                 notebooks: Optional[Sequence[str]] = None) -> Path:
    """Run the notebooks the dataset's plan holds (`workbench.pipeline.plan_pipeline`), in
    order, into one (new) run folder; returns the folder.

    The plan is printed first and redrawn from the manifest after notebook 00 (its real
    modalities). `parameters` go to every notebook under each step's own (papermill ignores
    names a notebook does not declare, with a warning); `profile` and `train_methods` shape the
    plan only; `notebooks` restricts the run to those names.
    """
    from workbench.pipeline import notebook_parameters, plan_pipeline

    parameters = dict(parameters or {})
    plan = plan_pipeline(parameters)
    print(plan.describe(), flush=True)
    run_dir = Path(run_dir) if run_dir else new_run_dir()
    record = {"parameters": parameters, **plan.as_record()}
    done: List[str] = []
    with RunRecord(run_dir, record, seed=parameters.get("seed")) as run:
        i = 0
        while i < len(plan.steps):
            step = plan.steps[i]
            i += 1
            if notebooks and step.notebook not in notebooks:
                continue
            print(f"[workbench] running {step.notebook} {step.params or ''} -> {run_dir}", flush=True)
            executed = run_notebook(step.notebook, run_dir, notebook_parameters(parameters, step),
                                    output_name=_executed_name(step.notebook, step.params))
            done.append(step.notebook)
            run.update(completed=list(done), last_executed=executed.name)
            if step.notebook.startswith("00") and (run_dir / "manifest.parquet").is_file():
                from workbench.data.defaults import manifest_modalities
                from workbench.data.manifest import read_manifest

                modalities = manifest_modalities(read_manifest(run_dir))
                if modalities != plan.modalities:
                    plan = plan_pipeline(parameters, modalities)
                    print("[workbench] the manifest holds " + "+".join(modalities) + "; plan redrawn:\n"
                          + plan.describe(), flush=True)
                    run.update(**plan.as_record())
    return run_dir


def _parse_params(pairs: Sequence[Sequence[str]]) -> Dict[str, Any]:
    """papermill-style `-p key value`; values read as YAML so numbers and booleans keep type."""
    import yaml

    params: Dict[str, Any] = {}
    for key, value in pairs:
        params[key] = yaml.safe_load(value)
    return params


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    nb = sub.add_parser("notebook", help="run one notebook into a run folder")
    nb.add_argument("name")
    nb.add_argument("--run-dir", default=None, help="default: the newest run folder (or a new one for 00)")
    nb.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    pipe = sub.add_parser("pipeline", help="run notebooks 00..05 into one new run folder")
    pipe.add_argument("--run-dir", default=None)
    pipe.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    add_sweep_arguments(sub.add_parser("sweep", help="every method + frozen/locked on one split; one leaderboard"))
    args = parser.parse_args(argv)
    if args.command == "sweep":
        return run_sweep_from_args(args)
    params = _parse_params(args.p)

    if args.command == "notebook":
        if args.run_dir:
            run_dir = Path(args.run_dir)
        elif notebook_path(args.name).stem.startswith("00"):
            run_dir = new_run_dir()
        else:
            run_dir = find_run_dir("manifest")
        out = run_notebook(args.name, run_dir, params)
        print(f"[workbench] executed notebook: {out}")
        return 0
    if args.command == "pipeline":
        run_dir = run_pipeline(params, Path(args.run_dir) if args.run_dir else None)
        print(f"[workbench] pipeline finished; results in {run_dir}")
        return 0
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
