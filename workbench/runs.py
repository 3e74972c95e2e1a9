"""Run folders and provenance records, the bottom of the layering.

One pipeline run is one folder `papermill_runs/<run-id>/` (run-id = UTC time + short config
hash) holding every notebook's executed copy and artifacts under fixed names, so any later
notebook can find what an earlier one wrote by name alone (`find_run_dir`). The command-line
runner that executes notebooks into these folders is `workbench.cli`.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

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
            f"(or `python -m workbench.cli notebook {notebook}`)."
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
