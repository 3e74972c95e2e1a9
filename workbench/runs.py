"""Run folders, provenance records and the headless notebook runner.

One pipeline run is one folder `papermill_runs/<run-id>/` (run-id = UTC time + short config
hash) holding every notebook's executed copy and artifacts under fixed names, so any later
notebook can find what an earlier one wrote by name alone (`find_run_dir`).

CLI (`python -m workbench.runs`):
    notebook NAME [-p key value]...   one notebook into a run folder
    pipeline [-p key value]...        notebooks 00..05 planned for the dataset into one new run folder
                                      (-p dataset ctrate -p data_root DIR [-p profile demo|research|tiny]
                                      [-p train_methods medfinder]; workbench.pipeline)
    sweep [--methods all] [--seeds 3] every method + frozen/locked on one split, one leaderboard
                                      (workbench.sweep.run_sweep)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from workbench.io import write_json_atomic

# Artifact name -> (relative path inside a run folder, notebook that writes it).
ARTIFACTS: Dict[str, tuple[str, str]] = {
    "manifest": ("manifest.parquet", "00_data_prep"),
    "cache": ("cache", "00_data_prep"),
    "ober": ("ober.parquet", "01_ober"),
    "triplets": ("triplets.csv.xz", "02_triplet_mining"),
    "train": ("train", "03_pretrain"),
    "eval": ("eval/metrics.json", "04_evaluate"),
    "inspect": ("inspect", "05_inspect"),
}

_TRACKED_LIBRARIES = [
    "torch", "torchvision", "timm", "monai", "transformers", "nibabel", "numpy", "pandas",
    "scikit-learn", "omegaconf", "safetensors", "umap-learn", "papermill", "medalign-workbench",
]


class RunNotFoundError(FileNotFoundError):
    """No run folder holds the artifact a notebook needs."""


def project_root() -> Path:
    """The checkout's root: the folder holding `notebooks/` (falls back to the cwd)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir():
        return here
    return Path.cwd()


def runs_root() -> Path:
    """Where run folders live: $WORKBENCH_RUNS, else `<project>/papermill_runs`."""
    env = os.environ.get("WORKBENCH_RUNS")
    return Path(env) if env else project_root() / "papermill_runs"


def new_run_id(config_hash: str = "", now: Optional[_dt.datetime] = None) -> str:
    """UTC time (sortable) + short config hash."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{config_hash}" if config_hash else stamp


def new_run_dir(config_hash: str = "", root: Optional[Path] = None) -> Path:
    """Create a fresh run folder; never reuses one (a second within the same second gets a suffix)."""
    root = Path(root) if root else runs_root()
    root.mkdir(parents=True, exist_ok=True)
    base = new_run_id(config_hash)
    path = root / base
    n = 1
    while path.exists():
        path = root / f"{base}-{n}"
        n += 1
    path.mkdir()
    return path


def find_run_dir(artifact: str, run_dir: str | os.PathLike | None = None, root: Optional[Path] = None) -> Path:
    """The given `run_dir`, or the run folder whose `artifact` was written last (not the last
    name: a hand-named folder such as `covid-notes` must not shadow every newer timestamped run).

    A given folder must hold the artifact; otherwise the error names the notebook to run first.
    """
    if artifact not in ARTIFACTS:
        raise KeyError(f"Unknown artifact {artifact!r}; known: {sorted(ARTIFACTS)}")
    rel, notebook = ARTIFACTS[artifact]
    if run_dir:
        path = Path(run_dir)
        if not (path / rel).exists():
            raise RunNotFoundError(
                f"Run folder {path} has no {rel}; run notebooks/{notebook}.ipynb into it first."
            )
        return path
    root = Path(root) if root else runs_root()
    candidates = sorted((p for p in root.glob("*") if p.is_dir() and (p / rel).exists()),
                        key=lambda p: ((p / rel).lstat().st_mtime, p.name))
    if not candidates:
        raise RunNotFoundError(
            f"No run folder under {root} holds {rel}; run notebooks/{notebook}.ipynb first "
            f"(or `python -m workbench.runs notebook {notebook}`)."
        )
    return candidates[-1]


def git_commit(cwd: Optional[Path] = None) -> str:
    """The checkout's commit (with `+dirty` when there are uncommitted changes), or 'unknown'."""
    cwd = cwd or project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> Dict[str, str]:
    """Installed versions of the libraries a result depends on."""
    versions = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunRecord:
    """Writes `run.json`: resolved config, seed, git commit, library versions, host, start/end.

    Use as a context manager around the work; the record is written at start (status
    'running') and rewritten at the end with 'finished' or 'failed', so a crashed run is
    recognisable as such.
    """

    def __init__(self, folder: str | os.PathLike, config: Mapping[str, Any], seed: Optional[int] = None,
                 extra: Optional[Mapping[str, Any]] = None, filename: str = "run.json") -> None:
        # `filename`: a notebook's own provenance beside the pipeline-level run.json
        # (notebook 00 writes manifest.json), so notebooks never clobber each other's record.
        self.path = Path(folder) / filename
        self.record: Dict[str, Any] = {
            "config": dict(config),
            "seed": seed,
            "git_commit": git_commit(),
            "versions": library_versions(),
            "host": {"name": socket.gethostname(), "platform": platform.platform(),
                     "cpus": os.cpu_count()},
            "start": utc_now(),
            "end": None,
            "status": "running",
            **(dict(extra) if extra else {}),
        }

    def __enter__(self) -> "RunRecord":
        write_json_atomic(self.path, self.record)
        return self

    def update(self, **fields: Any) -> None:
        self.record.update(fields)
        write_json_atomic(self.path, self.record)

    def __exit__(self, exc_type, exc, tb) -> None:
        self.record["end"] = utc_now()
        self.record["status"] = "failed" if exc_type else "finished"
        if exc is not None:
            self.record["error"] = f"{exc_type.__name__}: {exc}"
        write_json_atomic(self.path, self.record)


# ---------------------------------------------------------------------------- notebook runner

def notebook_path(name: str) -> Path:
    """`03`, `03_pretrain` or `03_pretrain.ipynb` -> the notebook's path."""
    folder = project_root() / "notebooks"
    stem = name[: -len(".ipynb")] if name.endswith(".ipynb") else name
    matches = sorted(folder.glob(f"{stem}*.ipynb"))
    exact = [m for m in matches if m.stem == stem]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    known = sorted(p.stem for p in folder.glob("*.ipynb"))
    raise FileNotFoundError(f"No notebook named {name!r} in {folder}; known: {known}")


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
    parser = argparse.ArgumentParser(prog="python -m workbench.runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    nb = sub.add_parser("notebook", help="run one notebook into a run folder")
    nb.add_argument("name")
    nb.add_argument("--run-dir", default=None, help="default: the newest run folder (or a new one for 00)")
    nb.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    pipe = sub.add_parser("pipeline", help="run notebooks 00..05 into one new run folder")
    pipe.add_argument("--run-dir", default=None)
    pipe.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    from workbench.sweep import add_arguments as add_sweep_arguments, run_from_args as run_sweep_from_args

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
