"""Training checkpoints are safe to resume from: a planted pickle never runs, a kill at any
moment of a checkpoint write still resumes bit for bit, and what killed writes left behind is
cleaned up when training starts."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from test_trainer import PatternPairs, crash_at_step, seeded_method, tiny_cfg
from workbench.io import atomic_path
from workbench.train.trainer import Trainer, TrainingError

# 24 pairs in batches of 4 with grad_accum 2: 3 steps per epoch, a checkpoint after each epoch
SETTINGS = dict(num_epochs=3, max_steps=-1, eval_every=0, grad_accum=2, batch_size=4)


class NoisyPairs(Dataset):
    """PatternPairs with noise drawn from Python's, NumPy's and torch's global generators on
    every read, so a resumed run repeats the uninterrupted losses only if all three generator
    states come back with the weights they were saved with."""

    def __init__(self, n: int) -> None:
        self.pairs = PatternPairs(n)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        item = dict(self.pairs[i])
        shift = random.gauss(0.0, 0.1) + float(np.random.normal(0.0, 0.1))
        item["image"] = item["image"] + shift + 0.1 * torch.randn_like(item["image"])
        return item


class Killed(BaseException):
    """A simulated kill: no `except Exception` in the trainer catches it."""


class Malicious:
    """Unpickling this creates `marker`: the proof that loading a file ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def fit(out: Path, data: Dataset, resume: bool = False) -> Trainer:
    cfg = tiny_cfg(out, resume=resume, **SETTINGS)
    trainer = Trainer(seeded_method(cfg), cfg, out, train_data=data, progress=False)
    trainer.fit()
    return trainer


def losses(trainer: Trainer) -> List[Tuple[int, float]]:
    return [(row["step"], row["loss"]) for row in trainer.history if "loss" in row]


def leftover_temps(out: Path) -> List[str]:
    return sorted(p.name for p in out.rglob(".*.tmp*"))


@pytest.mark.parametrize("name", ["last.pt", "last.safetensors"])
def test_a_planted_pickle_checkpoint_is_refused_and_never_runs(tmp_path, name):
    out = tmp_path / "shared-train-folder"
    (out / "checkpoint").mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"network": Malicious(marker)}, out / "checkpoint" / name)
    torch.save(Malicious(marker), out / "checkpoint" / "rng-rank0.pt")

    with pytest.raises(TrainingError, match=r"checkpoint.*training\.resume=false\.$") as err:
        fit(out, PatternPairs(24), resume=True)
    assert not marker.exists()
    assert "\n" not in str(err.value)  # one sentence, ending in what to do


def test_a_kill_at_any_checkpoint_write_boundary_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Kill before each rename of the first two checkpoint writes (leaving the temporary file
    on disk, as a real kill does) and right after each write; resuming from what is on disk
    logs the uninterrupted run's losses exactly."""
    data = NoisyPairs(24)
    real_replace, real_save = os.replace, Trainer._save_checkpoint
    plan = {"save": 0, "renames": [], "kill": None}  # kill: (save number, renames before the kill)
    debris = {}

    def replace(src, dst):
        if plan["save"]:
            plan["renames"][-1] += 1
            if plan["kill"] == (plan["save"], plan["renames"][-1] - 1):
                debris[Path(src)] = Path(src).read_bytes()  # atomic_path deletes it; a kill would not
                raise Killed(f"before rename {dst}")
        return real_replace(src, dst)

    def save_checkpoint(self, *args, **kwargs):
        plan["save"] = len(plan["renames"]) + 1
        plan["renames"].append(0)
        try:
            real_save(self, *args, **kwargs)
        finally:
            plan["save"] = 0
        if plan["kill"] == (len(plan["renames"]), plan["renames"][-1]):
            raise Killed("after the checkpoint write")

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Trainer, "_save_checkpoint", save_checkpoint)

    reference = losses(fit(tmp_path / "straight", data))
    assert [step for step, _ in reference] == list(range(1, 10))
    renames = list(plan["renames"])
    kills = [(save, k) for save in (1, 2) for k in range(renames[save - 1] + 1)]

    diverged, littered = [], []
    for save, k in kills:
        out = tmp_path / f"killed-save{save}-rename{k}"
        plan.update(renames=[], kill=(save, k))
        debris.clear()
        with pytest.raises(Killed):
            fit(out, data)
        for path, content in debris.items():
            path.write_bytes(content)
        plan.update(renames=[], kill=None)
        resumed = fit(out, data, resume=True)
        where = f"save {save} after {k} of {renames[save - 1]} renames"
        if losses(resumed) != reference:
            diverged.append(where)
        if leftover_temps(out):
            littered.append(f"{where}: {leftover_temps(out)}")
    assert diverged == []  # bit for bit, wherever the kill hit
    assert littered == []


def test_orphaned_temporary_files_are_removed_on_start(tmp_path):
    out = tmp_path / "out"
    fit(out, PatternPairs(24))
    checkpoint = next((out / "checkpoint").glob("last.*"))

    def orphan(path: Path, content: bytes) -> Path:
        """A file under the temporary name `atomic_path` really gives `path`."""
        with pytest.raises(Killed), atomic_path(path) as tmp:
            raise Killed
        tmp.write_bytes(content)
        return tmp

    orphans = [orphan(checkpoint, checkpoint.read_bytes()[: checkpoint.stat().st_size // 2]),  # torn write
               orphan(out / "checkpoint" / "rng-rank0.pt", b"old"),
               orphan(out / "metrics.csv", b"step,loss\n")]
    kept = [out / "notes.tmp.txt", out / "checkpoint" / ".keep"]
    for path in kept:
        path.write_text("the user's")

    fit(out, PatternPairs(24), resume=True)
    assert [p.name for p in orphans if p.exists()] == []
    assert all(p.exists() for p in kept)


def test_rng_state_survives_a_checkpoint_file(tmp_path):
    from workbench.train.checkpoint import load_state, save_state
    from workbench.train.trainer import rng_state, set_rng_state

    def draws():
        return random.random(), float(np.random.normal()), torch.rand(3).tolist()

    random.gauss(0, 1), np.random.normal()  # cached Gaussians are part of the state, too
    save_state(tmp_path / "rng.safetensors", rng_state())
    expected = draws()
    set_rng_state(load_state(tmp_path / "rng.safetensors"))
    assert draws() == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    root, data = Path(folder), NoisyPairs(48)  # 24 per rank: 3 steps per epoch, as in one process
    straight = losses(fit(root / "straight", data))
    cfg = tiny_cfg(root, **SETTINGS)
    method = seeded_method(cfg)
    crash_at_step(method, 5, Killed)  # in epoch two
    killed = False
    try:
        Trainer(method, cfg, root / "resumed", train_data=data, progress=False).fit()
    except Killed:
        killed = True
    resumed = losses(fit(root / "resumed", data, resume=True))
    torch.save({"straight": straight, "resumed": resumed, "killed": killed}, root / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_ranks_resume_each_with_its_own_rng_stream(tmp_path):
    """DDP: rank 0's checkpoint holds every rank's generator state and each rank gets its own
    back (the logged loss is the ranks' mean, so a swapped stream changes it)."""
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["killed"] and [step for step, _ in got["resumed"]] == list(range(1, 10))
        assert got["resumed"] == got["straight"]
