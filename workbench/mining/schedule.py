"""MedTrim's triplet-mining schedule, vectorised: big batch -> mini batches -> anchor, positive, negative.

Semantics follow the seed's `TripletGenerator.generate_triplets` / `APNFinder`
(icon-lab/MedTrim, `data/TripletGenerator.py`) and its CLI defaults:

- each of `total_iter` iterations draws a big batch of `big_batch_size` distinct studies;
  then `mini_batch_size` times a mini batch of `mini_batch_size` distinct studies is drawn
  from it, with one random anchor in it (so 40000 x 32 = 1.28M triplets by default);
- positive = the most similar other member (ties: the earliest member);
- the remaining members scoring >= `positive_cap` (0.6) are dropped;
- with probability `semi_hard_prob` the negative is the least similar remaining member whose
  score is >= `threshold` (ties: earliest), falling back to the most similar remaining member
  (ties: earliest) when there is none; otherwise it is the least similar remaining member,
  an "easy" negative (ties: the latest, as the seed's `scores[-1]` on its stably sorted list).

Where we deliberately differ from the seed:
- an anchor with no remaining candidate is skipped and counted (the seed crashes on `max([])`);
- a member of the anchor's own subject is never its negative (the seed knows no subjects);
- only the train split is mined (`mine_triplets`);
- the score is the symmetric union-normalised one unless `scoring="seed"` (see `similarity`);
- options off by default: `all_anchors` (every mini-batch member is an anchor, M x as many
  triplets) and `min_positive_score` (skip anchors whose best match is weaker).

Speed: the random draws of a chunk of iterations are made at once (numpy), then all of the
chunk's mini batches are scored and selected with a few tensor ops each (torch, on GPU when
given); no Python runs per pair or per mini batch. Draws depend only on the seed and the
schedule, never on the device, so results are the same on CPU and GPU.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.mining.encode import EncodedStudies, check_uncertain_weight, encode_findings, pack_slots
from workbench.mining.similarity import (ScoreWeights, check_scoring, score_key, score_keys, score_tables,
                                         slot_pair_scores)

DRAW_CHUNK_ITERATIONS = 64  # iterations whose draws are made (and mined) together; fixed for determinism
TRIPLET_COLUMNS = ["anchor", "positive", "negative", "pos_score", "neg_score"]


@dataclass
class MiningConfig:
    """The seed's CLI parameters (same names and defaults) plus our documented additions."""

    threshold: float = 0.25
    semi_hard_prob: float = 1.0
    big_batch_size: int = 512
    mini_batch_size: int = 32
    total_iter: int = 40000
    scoring: str = "union"  # union (symmetric) | seed (anchor-normalised)
    w_dis: float = 0.85
    w_adj: float = 0.10
    w_dir: float = 0.05
    uncertain_weight: float = 0.5
    positive_cap: float = 0.6
    all_anchors: bool = False
    min_positive_score: Optional[float] = None
    seed: int = 0

    def weights(self) -> ScoreWeights:
        return ScoreWeights(findings=self.w_dis, severity=self.w_adj, location=self.w_dir)

    def validate(self) -> "MiningConfig":
        check_scoring(self.scoring)
        check_uncertain_weight(self.uncertain_weight)
        if self.mini_batch_size < 2:
            raise ValueError(f"mini_batch_size must be >= 2 (an anchor needs another member); got {self.mini_batch_size}.")
        if self.big_batch_size < 2:
            raise ValueError(f"big_batch_size must be >= 2; got {self.big_batch_size}.")
        if self.total_iter < 0:
            raise ValueError(f"total_iter must be >= 0; got {self.total_iter}.")
        if not 0.0 <= self.semi_hard_prob <= 1.0:
            raise ValueError(f"semi_hard_prob is a probability in [0, 1]; got {self.semi_hard_prob}.")
        return self


@dataclass
class MiningResult:
    """Mined triplets (study ids and the anchor's scores of positive and negative) and counts."""

    triplets: pd.DataFrame
    anchors: int  # anchors tried
    skipped_no_candidate: int  # no member left for a negative (the seed would crash)
    skipped_weak_positive: int  # best match below min_positive_score
    n_studies: int  # studies mined (train split)
    seconds: float
    device: str
    config: MiningConfig = field(default_factory=MiningConfig)
    skips: Dict[str, int] = field(default_factory=dict)  # studies not mined, per reason (missing_findings)

    @property
    def skipped(self) -> int:
        return self.skipped_no_candidate + self.skipped_weak_positive

    def summary(self) -> Dict[str, Any]:
        return {"triplets": len(self.triplets), "anchors": self.anchors, "skipped": self.skipped,
                "skipped_no_candidate": self.skipped_no_candidate,
                "skipped_weak_positive": self.skipped_weak_positive, "studies": self.n_studies,
                "skipped_studies": dict(self.skips),
                "seconds": round(self.seconds, 3), "device": self.device, "config": asdict(self.config)}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU (scores are float64, which MPS lacks)."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"Device {name!r} was asked for but CUDA is not available; use --device auto or cpu.")
    return device


# ------------------------------------------------------------------------------ random draws

def sample_distinct(rng: np.random.Generator, n: int, k: int, rows: int) -> np.ndarray:
    """`rows` independent uniform random ordered k-subsets of range(n), as [rows, k] int64.

    For k <= n/2: draw with replacement, then redraw only the later copies of a repeated value
    until none is left (a redrawn value that repeats is redrawn again). The procedure only
    looks at which draws are equal, never at their values, so it commutes with any
    relabelling of range(n): every ordered k-subset is equally likely. It costs one sort of
    value * k + position per row, O(rows * k log k), instead of O(rows * n).
    """
    if k > n:
        raise ValueError(f"cannot draw {k} distinct items from {n}.")
    if 2 * k > n:
        return np.argsort(rng.random((rows, n)), axis=1)[:, :k].astype(np.int64)
    out = rng.integers(0, n, size=(rows, k), dtype=np.int64)
    keys = np.sort(out * k + np.arange(k, dtype=np.int64), axis=1)
    values = keys // k
    r, c = np.nonzero(values[:, 1:] == values[:, :-1])
    redraw_row, redraw_pos = r, keys[r, c + 1] % k
    while redraw_row.size:
        out[redraw_row, redraw_pos] = rng.integers(0, n, size=redraw_row.size, dtype=np.int64)
        copies = (out[redraw_row] == out[redraw_row, redraw_pos][:, None]).sum(axis=1)
        redraw_row, redraw_pos = redraw_row[copies > 1], redraw_pos[copies > 1]
    return out


@dataclass
class DrawChunk:
    """The random draws of a few consecutive iterations (rows = mini batches)."""

    members: np.ndarray  # [R, M] rows of the mined table, in mini-batch order
    anchor_pos: np.ndarray  # [R, A] positions of the anchors within their mini batch
    semi_hard: np.ndarray  # [R, A] True: look for a semi-hard negative
    iterations: int


def effective_sizes(n_studies: int, config: MiningConfig) -> tuple[int, int]:
    """(big, mini) batch sizes, shrunk to the table when it is smaller (with a warning)."""
    big = min(config.big_batch_size, n_studies)
    mini = min(config.mini_batch_size, big)
    if big < config.big_batch_size:
        warnings.warn(f"only {n_studies} studies to mine: big batch shrunk from {config.big_batch_size} to {big}"
                      + (f", mini batch from {config.mini_batch_size} to {mini}" if mini < config.mini_batch_size else ""),
                      stacklevel=2)
    if mini < 2:
        raise ValueError(f"only {n_studies} studies to mine; triplets need at least 2 per mini batch.")
    return big, mini


def schedule_draws(n_studies: int, config: MiningConfig,
                   chunk_iterations: int = DRAW_CHUNK_ITERATIONS) -> Iterator[DrawChunk]:
    """All random draws of the schedule, chunk by chunk; a function of (seed, schedule) only.

    Shared by the vectorised miner and the per-pair reference, so the two can be compared
    triplet for triplet.
    """
    config.validate()
    big, mini = effective_sizes(n_studies, config)
    rng = np.random.default_rng(config.seed)
    for start in range(0, config.total_iter, chunk_iterations):
        iters = min(chunk_iterations, config.total_iter - start)
        big_batches = sample_distinct(rng, n_studies, big, iters)
        rows = iters * mini
        positions = sample_distinct(rng, big, mini, rows)
        members = big_batches[np.repeat(np.arange(iters), mini)[:, None], positions]
        if config.all_anchors:
            anchor_pos = np.tile(np.arange(mini, dtype=np.int64), (rows, 1))
        else:
            anchor_pos = rng.integers(0, mini, size=(rows, 1), dtype=np.int64)
        semi_hard = rng.random(anchor_pos.shape) < config.semi_hard_prob
        yield DrawChunk(members, anchor_pos, semi_hard, iters)


# -------------------------------------------------------------------------------- selection

@dataclass
class Selection:
    """Per anchor: positive and negative positions in the mini batch, and whether it is kept."""

    positive: torch.Tensor  # [R, A] positions
    negative: torch.Tensor  # [R, A]
    keep: torch.Tensor  # [R, A] bool
    weak_positive: torch.Tensor  # [R, A] bool: skipped, best match below min_positive_score
    no_candidate: torch.Tensor  # [R, A] bool: skipped, nothing left for a negative


def select_triplets(
    keys: torch.Tensor,
    anchor_pos: torch.Tensor,
    same_subject: torch.Tensor,
    semi_hard: torch.Tensor,
    config: MiningConfig,
) -> Selection:
    """Apply the seed's selection rule to score keys [R, A, M] (`similarity.score_keys`).

    `anchor_pos` [R, A]: the anchor's own position (never chosen); `same_subject` [R, A, M]:
    members never allowed as negatives; `semi_hard` [R, A]: the coin flips.
    """
    r, a, m = keys.shape
    positions = torch.arange(m, device=keys.device)
    is_self = positions == anchor_pos[:, :, None]
    others = keys.masked_fill(is_self, -1)
    positive = others.argmax(-1)  # first maximum: the seed's stable descending sort
    positive_key = others.gather(-1, positive[..., None])[..., 0]
    if config.min_positive_score is not None:
        weak = positive_key < score_key(config.min_positive_score)
    else:
        weak = torch.zeros_like(positive_key, dtype=torch.bool)
    candidate = ~is_self & (positions != positive[..., None]) & (keys < score_key(config.positive_cap)) & ~same_subject
    has_candidate = candidate.any(-1)
    big = torch.iinfo(torch.int64).max
    semi = candidate & (keys >= score_key(config.threshold))
    semi_idx = torch.where(semi, keys, big).argmin(-1)  # least similar above threshold, earliest
    fallback_idx = torch.where(candidate, keys, -1).argmax(-1)  # most similar remaining, earliest
    easy_idx = (m - 1) - torch.where(candidate, keys, big).flip(-1).argmin(-1)  # least similar, latest
    negative = torch.where(semi_hard, torch.where(semi.any(-1), semi_idx, fallback_idx), easy_idx)
    return Selection(positive, negative, has_candidate & ~weak, weak, ~has_candidate & ~weak)


# ----------------------------------------------------------------------------------- mining

@contextlib.contextmanager
def _cpu_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch CPU threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def mine_encoded(
    enc: EncodedStudies,
    subjects: Sequence[Any],
    config: MiningConfig = MiningConfig(),
    device: str | torch.device = "auto",
    progress: bool = True,
    cpu_threads: int = 1,
) -> MiningResult:
    """Run the schedule over already encoded studies (all of them are mined).

    On CPU the tensor ops run on `cpu_threads` threads (default 1): each op touches ~10^5
    elements, too few to gain from intra-op threads, and on a shared machine OpenMP's
    spin-waiting threads made the default schedule over 10x slower (measured with 2 threads
    on 2 busy cores).
    """
    with _cpu_threads(cpu_threads):
        return _mine_encoded(enc, subjects, config, device, progress)


def _mine_encoded(enc: EncodedStudies, subjects: Sequence[Any], config: MiningConfig,
                  device: str | torch.device, progress: bool) -> MiningResult:
    config.validate()
    if enc.uncertain_weight != config.uncertain_weight:
        raise ValueError(f"studies were encoded with uncertain_weight={enc.uncertain_weight}, "
                         f"the config says {config.uncertain_weight}; encode with the config's value.")
    n = len(enc)
    if len(subjects) != n:
        raise ValueError(f"{len(subjects)} subject ids for {n} studies.")
    dev = resolve_device(device)
    start = time.perf_counter()
    enc_dev = enc.to(dev)
    codes = pack_slots(enc_dev)
    tables = score_tables(codes, config.uncertain_weight)
    subject_codes = torch.as_tensor(pd.factorize(pd.Series(list(subjects), dtype=object))[0], device=dev)
    weights = config.weights()

    kept: List[torch.Tensor] = []
    n_anchors = n_weak = n_none = 0
    bar = tqdm(total=config.total_iter, desc="Mining triplets", unit="iter", disable=not progress)
    for chunk in schedule_draws(n, config):
        members = torch.from_numpy(chunk.members).to(dev)
        anchor_pos = torch.from_numpy(chunk.anchor_pos).to(dev)
        anchors = members.gather(1, anchor_pos)
        scores = slot_pair_scores(codes, tables, anchors, members, config.scoring, weights)
        keys = score_keys(scores)
        same_subject = subject_codes[members][:, None, :] == subject_codes[anchors][:, :, None]
        sel = select_triplets(keys, anchor_pos, same_subject, torch.from_numpy(chunk.semi_hard).to(dev), config)
        n_anchors += sel.keep.numel()
        n_weak += int(sel.weak_positive.sum())
        n_none += int(sel.no_candidate.sum())
        pos_rows = members.gather(1, sel.positive.view(len(members), -1)).view_as(sel.positive)
        neg_rows = members.gather(1, sel.negative.view(len(members), -1)).view_as(sel.negative)
        pos_score = scores.gather(-1, sel.positive[..., None])[..., 0]
        neg_score = scores.gather(-1, sel.negative[..., None])[..., 0]
        keep = sel.keep
        kept.append(torch.stack([anchors[keep].double(), pos_rows[keep].double(), neg_rows[keep].double(),
                                 pos_score[keep], neg_score[keep]], dim=1).cpu())
        bar.update(chunk.iterations)
    bar.close()
    table = torch.cat(kept) if kept else torch.zeros((0, 5), dtype=torch.float64)
    ids = np.asarray(enc.study_ids, dtype=object)
    rows = table[:, :3].to(torch.int64).numpy()
    triplets = pd.DataFrame({
        "anchor": ids[rows[:, 0]], "positive": ids[rows[:, 1]], "negative": ids[rows[:, 2]],
        "pos_score": table[:, 3].numpy(), "neg_score": table[:, 4].numpy(),
    }, columns=TRIPLET_COLUMNS)
    return MiningResult(triplets, n_anchors, n_none, n_weak, n, time.perf_counter() - start, str(dev), config)


def mine_triplets(
    table: pd.DataFrame,
    config: MiningConfig = MiningConfig(),
    device: str | torch.device = "auto",
    progress: bool = True,
    modality: str = "",
    cpu_threads: int = 1,
) -> MiningResult:
    """Mine triplets from an entity table (`ober.parquet` rows: study_id, subject_id, split,
    findings); only the train split is mined, and only `modality` (cxr | ct) when given.
    Studies with missing findings are not mined; `result.skips` counts them."""
    from workbench.mining.table import train_rows

    train = train_rows(table, modality)
    enc = encode_findings(train["findings"].tolist(), train["study_id"].astype(str).tolist(),
                          uncertain_weight=config.uncertain_weight)
    result = mine_encoded(enc, train["subject_id"].astype(str).tolist(), config, device, progress, cpu_threads)
    result.skips = dict(train.attrs.get("skips", {}))
    return result
