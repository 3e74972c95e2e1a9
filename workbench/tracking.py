"""Experiment trackers beside `metrics.csv`: TensorBoard by default, MLflow on request.

`metrics.csv` and `run.json` stay the record of a run; trackers are views of the same numbers
for people who compare runs in TensorBoard (`tensorboard --logdir papermill_runs` shows every
train folder of a sweep side by side) or MLflow (a local `mlruns/` store in the run folder, or
the server in `MLFLOW_TRACKING_URI`). Every tracker gets exactly the values written to the CSV.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

TRACKERS = ("tensorboard", "mlflow")
TENSORBOARD_FOLDER = "tensorboard"
MLFLOW_FOLDER = "mlruns"


def parse_trackers(value: str | Sequence[str]) -> List[str]:
    """'tensorboard,mlflow' -> ['tensorboard', 'mlflow']; '' or 'none' -> []; unknown names fail."""
    names = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    names = [n for n in names if n != "none"]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"Unknown tracker(s) {unknown} in training.trackers; known: {list(TRACKERS)} "
                         "(comma-separated, or 'none').")
    return names


def numeric_items(row: Mapping[str, Any], skip: Sequence[str] = ("step", "epoch")) -> Dict[str, float]:
    """The finite numeric values of a metrics row (strings such as the stage name are left out)."""
    out = {}
    for key, value in row.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


class _TensorBoard:
    def __init__(self, folder: Path, purge_step: Optional[int]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops the events a killed run wrote after its checkpoint
        self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def log(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def figure(self, tag: str, fig: Any, step: int) -> None:
        self.writer.add_figure(tag, fig, step, close=False)

    def close(self) -> None:
        self.writer.close()


def mlflow_key(key: str) -> str:
    """MLflow's name for a metrics.csv column: '/' -> '.' (its file store makes a folder of each
    '/' part, so `loss` and `loss/ii` would collide), '@' -> '_at_' (not allowed there)."""
    return key.replace("/", ".").replace("@", "_at_")


def mlflow_uri(run_dir: Path) -> str:
    """The MLflow store: `MLFLOW_TRACKING_URI` when the user set one, else `<run_dir>/mlruns`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / MLFLOW_FOLDER).resolve().as_uri()


class _MLflow:
    def __init__(self, run_dir: Path, run_name: str, params: Mapping[str, Any]) -> None:
        try:
            import mlflow
        except ImportError:
            raise ImportError("training.trackers names mlflow but it is not installed; "
                              "pip install 'medalign-workbench[mlflow]' (or drop mlflow from training.trackers).") from None
        uri = mlflow_uri(run_dir)
        if uri.startswith("file:"):  # a local folder store: no server; MLflow 3 asks for an explicit opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.tracking.MlflowClient(uri)
        name = run_dir.resolve().name
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        for key, value in list(params.items())[:500]:
            self.client.log_param(self.run_id, key, str(value)[:500])

    def log(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.client.log_metric(self.run_id, mlflow_key(key), value, step=step)

    def figure(self, tag: str, fig: Any, step: int) -> None:
        self.client.log_figure(self.run_id, fig, f"{tag}-{step}.png")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class Trackers:
    """The trackers one training (or evaluation) writes to; `log` takes metrics.csv rows."""

    def __init__(self, names: Sequence[str], out_dir: str | Path, run_dir: str | Path | None = None,
                 run_name: str = "", params: Optional[Mapping[str, Any]] = None,
                 purge_step: Optional[int] = None) -> None:
        out_dir = Path(out_dir)
        self.backends: List[Any] = []
        for name in parse_trackers(names):
            if name == "tensorboard":
                self.backends.append(_TensorBoard(out_dir / TENSORBOARD_FOLDER, purge_step))
            else:
                self.backends.append(_MLflow(Path(run_dir or out_dir), run_name or out_dir.name, params or {}))

    def log(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Log a row's numeric values as `prefix + key` at `step`."""
        items = {prefix + k: v for k, v in numeric_items(values).items()}
        for backend in self.backends:
            backend.log(items, step)

    def figure(self, tag: str, fig: Any, step: int) -> None:
        for backend in self.backends:
            backend.figure(tag, fig, step)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
