"""`frozen` and `locked` (workbench.eval.baselines) as methods, so sweeps and the leaderboard
treat them like any trained method. They train themselves (frozen: nothing; locked: only the
projections on cached features), so the trainer hands them the run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping

from torch import Tensor

from workbench.config import ExperimentConfig
from workbench.methods.base import Method
from workbench.methods.params import MethodParams
from workbench.methods.registry import METHODS


@dataclass(frozen=True)
class LockedParams(MethodParams):
    """The locked baseline's own recipe (see workbench.eval.baselines.train_locked)."""

    epochs: int = 40
    lr: float = 1e-3
    batch_size: int = 256


class _Baseline(Method):
    trains_itself = True
    Params = LockedParams  # frozen trains nothing; one schema so a sweep passes the same keys to both
    loss_terms = ()

    @classmethod
    def build(cls, cfg: ExperimentConfig) -> "_Baseline":
        from torch import nn

        return cls(cfg, nn.Identity())  # the baseline builds its own frozen encoders

    def losses(self, batch: Mapping[str, Any]) -> Dict[str, Tensor]:
        raise NotImplementedError(f"{self.name!r} is trained by workbench.eval.baselines, not by the loop.")


@METHODS.register("frozen")
class FrozenBaseline(_Baseline):
    """Offline encoders with seeded random projections: the floor."""

    name = "frozen"

    def train_standalone(self, run_dir: str | Path, progress: bool = True) -> Path:
        from workbench.eval.baselines import train_frozen

        return train_frozen(run_dir, self.cfg, seed=self.cfg.training.random_seed)


@METHODS.register("locked")
class LockedBaseline(_Baseline):
    """LiT-style locked towers, projections trained by InfoNCE: the bar to clear."""

    name = "locked"

    def train_standalone(self, run_dir: str | Path, progress: bool = True) -> Path:
        from workbench.eval.baselines import train_locked

        return train_locked(run_dir, self.cfg, seed=self.cfg.training.random_seed, progress=progress)
