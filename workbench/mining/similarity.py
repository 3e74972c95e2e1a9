"""MedTrim's meta-entity similarity between two studies, vectorised (torch, any device).

MedTrim (Sec. "Triplet mining", the seed's `TripletGenerator.calculate_total_score`) scores a
pair of studies a, b as

    s(a, b) = w_f * J(a, b) + w_s * SEV(a, b) + w_l * LOC(a, b),   (w_f, w_s, w_l) = (0.85, 0.10, 0.05)

- J: Jaccard over the multi-hot of findings. Here it is the *weighted* Jaccard
  sum_f min(w_a(f), w_b(f)) / sum_f max(w_a(f), w_b(f)), with w = 1 for a present finding and
  `uncertain_weight` (default 0.5) for an uncertain one; with uncertain_weight = 1 it is the
  seed's plain Jaccard.
- SEV (LOC): for every finding both studies have, the IoU of their severity (location) word
  sets (IoU of two empty sets = 1, as in the seed), summed and divided by a finding count D.

The count D is where we deliberately differ from the seed. The seed divides by the anchor's
number of findings, so s(a, b) != s(b, a) and a study scores 1 against any study that merely
contains its findings. The default `scoring="union"` divides by |findings(a) u findings(b)|:
the score is symmetric and equals 1 only for identical entity sets. `scoring="seed"` keeps
the seed's D = |findings(a)| (a is the anchor).

A study with no present/uncertain finding carries the virtual finding `No_Finding` (see
`workbench.mining.encode`), so two such studies score exactly 1, as in the seed, and such a
study scores 0 against any abnormal one.

Scores are compared on a grid of 2**-32 (`score_keys`): genuinely equal scores reached through
different float operation orders then tie exactly, so tie-breaks (and the pure-Python
reference) agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from workbench.mining.encode import FINDING_BITS, LS_BITS, EncodedStudies, SlotCodes, check_uncertain_weight

SCORINGS = ("union", "seed")
SCORE_GRID = float(2**32)  # scores are compared as round(score * 2**32)


@dataclass(frozen=True)
class ScoreWeights:
    """Weights of the three terms (the seed's `--w_dis`, `--w_adj`, `--w_dir`)."""

    findings: float = 0.85
    severity: float = 0.10
    location: float = 0.05


def check_scoring(scoring: str) -> str:
    if scoring not in SCORINGS:
        raise ValueError(f"Unknown scoring {scoring!r}; use one of {list(SCORINGS)}.")
    return scoring


def score_key(score: float) -> int:
    """The integer a score is compared by (Python float; same rounding as `score_keys`)."""
    return int(round(float(score) * SCORE_GRID))


def score_keys(scores: torch.Tensor) -> torch.Tensor:
    """Scores -> int64 comparison keys on the 2**-32 grid (round half to even, as Python's round)."""
    return torch.round(scores * SCORE_GRID).to(torch.int64)


def _combine(weights: ScoreWeights, jaccard: torch.Tensor, sev_sum: torch.Tensor, loc_sum: torch.Tensor,
             count: torch.Tensor) -> torch.Tensor:
    return weights.findings * jaccard + weights.severity * (sev_sum / count) + weights.location * (loc_sum / count)


def _set_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of word sets per finding: a [n, F, W], b [m, F, W] bool -> [n, m, F] (empty vs empty = 1)."""
    inter = torch.einsum("afw,bfw->abf", a.to(torch.float64), b.to(torch.float64))
    union = a.sum(-1)[:, None, :] + b.sum(-1)[None, :, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def pairwise_scores(
    rows: EncodedStudies,
    cols: Optional[EncodedStudies] = None,
    scoring: str = "union",
    weights: ScoreWeights = ScoreWeights(),
    max_elements: int = 1 << 22,
) -> torch.Tensor:
    """All scores s(row, col) as a [len(rows), len(cols)] float64 tensor (rows are anchors).

    Dense tensor ops over [n, m, F] blocks (rows processed in chunks of at most
    `max_elements` entries); for histograms and whole-batch inspection. Both encodings must
    share one vocabulary (encode them together).
    """
    check_scoring(scoring)
    cols = rows if cols is None else cols
    if rows.findings != cols.findings or rows.severities != cols.severities or rows.locations != cols.locations:
        raise ValueError("rows and cols were encoded with different vocabularies; encode them in one call.")
    n, f = rows.weights.shape
    m = cols.weights.shape[0]
    out = torch.empty((n, m), dtype=torch.float64, device=rows.device)
    step = max(1, max_elements // max(1, m * f))
    wb = cols.weights[None]
    pb = wb > 0
    for start in range(0, n, step):
        sl = slice(start, start + step)
        wa = rows.weights[sl][:, None, :]
        pa = wa > 0
        inter_w = torch.minimum(wa, wb).sum(-1)
        union_w = torch.maximum(wa, wb).sum(-1)
        jaccard = inter_w / union_w
        shared = (pa & pb).to(torch.float64)
        sev_sum = (_set_iou(rows.severity[sl], cols.severity) * shared).sum(-1)
        loc_sum = (_set_iou(rows.location[sl], cols.location) * shared).sum(-1)
        if scoring == "union":
            count = (pa | pb).sum(-1).to(torch.float64)
        else:
            count = pa.sum(-1).to(torch.float64).expand_as(jaccard)
        out[sl] = _combine(weights, jaccard, sev_sum, loc_sum, count)
    return out


# ----------------------------------------------------------------------- the schedule's hot path

@dataclass
class ScoreTables:
    """Small lookup tables for `slot_pair_scores`.

    `level_severity` [C*C, 3] (C = 3 * 2**S): for one finding, a pair of (assertion level,
    severity set) codes -> (min of the two presence weights, 1 if both studies have the
    finding, severity IoU if both have it). `location_iou` [(V+1)**2]: a pair of location-set
    ids -> IoU, 0 where either id is 0 (the study lacks the finding); None when the data has
    more than `max_location_sets` distinct sets, and the IoU is then counted from bitmasks
    (`popcount` [2**16] counts the bits of 16-bit chunks).
    """

    level_severity: torch.Tensor
    n_codes: int
    location_iou: Optional[torch.Tensor]
    n_location_ids: int
    popcount: torch.Tensor
    location_chunks: int


def _bits(x: int) -> int:
    return bin(x).count("1")


def _popcount(x: torch.Tensor, popcount: torch.Tensor, chunks: int) -> torch.Tensor:
    total = popcount.index_select(0, (x & 0xFFFF).reshape(-1)).view_as(x)
    for c in range(1, chunks):
        total = total + popcount.index_select(0, ((x >> (16 * c)) & 0xFFFF).reshape(-1)).view_as(x)
    return total


def _iou_from_counts(inter: torch.Tensor, count_a: torch.Tensor, count_b: torch.Tensor) -> torch.Tensor:
    union = count_a + count_b - inter
    return torch.where(union > 0, inter.to(torch.float64) / union.clamp(min=1), 1.0)


def score_tables(codes: SlotCodes, uncertain_weight: float, max_location_sets: int = 2048) -> ScoreTables:
    """Build the lookup tables for the vocabulary and location sets of `codes` (on its device)."""
    uncertain_weight = check_uncertain_weight(uncertain_weight)
    device = codes.anchor_code.device
    per_level = 1 << codes.n_severities
    n_codes = 3 * per_level
    level_weight = (0.0, uncertain_weight, 1.0)
    rows = []
    for ca in range(n_codes):
        la, sa = divmod(ca, per_level)
        for cb in range(n_codes):
            lb, sb = divmod(cb, per_level)
            if level_weight[la] == 0 or level_weight[lb] == 0:
                rows.append((0.0, 0.0, 0.0))
                continue
            union = _bits(sa | sb)
            rows.append((min(level_weight[la], level_weight[lb]), 1.0, _bits(sa & sb) / union if union else 1.0))
    level_severity = torch.tensor(rows, dtype=torch.float64, device=device)
    chunk_values = np.arange(1 << 16, dtype=">u2").view(np.uint8)
    popcount = torch.from_numpy(np.unpackbits(chunk_values).reshape(-1, 16).sum(1).astype(np.int64)).to(device)
    chunks = (codes.n_locations + 15) // 16
    n_ids = int(codes.location_sets.numel())
    location_iou = None
    if n_ids - 1 <= max_location_sets:
        sets = codes.location_sets
        counts = _popcount(sets, popcount, chunks)
        inter = _popcount(sets[:, None] & sets[None, :], popcount, chunks)
        location_iou = _iou_from_counts(inter, counts[:, None], counts[None, :])
        location_iou[0, :] = 0.0
        location_iou[:, 0] = 0.0
        location_iou = location_iou.reshape(-1).contiguous()
    return ScoreTables(level_severity, n_codes, location_iou, n_ids, popcount, chunks)


def _rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """table[rows] for a 1D/2D table and any-shaped row ids (index_select: far faster than indexing)."""
    return table.index_select(0, rows.reshape(-1)).view(*rows.shape, *table.shape[1:])


def _order_by_count(counts: torch.Tensor) -> torch.Tensor:
    """Stable order of small non-negative counts, largest first (a radix sort on CPU)."""
    top = int(counts.max())
    if counts.device.type == "cpu":
        dtype = np.uint8 if top < 256 else np.uint16
        return torch.from_numpy(np.argsort((top - counts.numpy()).astype(dtype), kind="stable"))
    return torch.sort(top - counts, stable=True).indices


def slot_pair_scores(
    codes: SlotCodes,
    tables: ScoreTables,
    anchors: torch.Tensor,
    members: torch.Tensor,
    scoring: str = "union",
    weights: ScoreWeights = ScoreWeights(),
) -> torch.Tensor:
    """Scores of anchors [R, A] against members [R, M] (study rows) -> [R, A, M] float64.

    Pairs are ordered by their member's number of findings, so slot j (the member's j-th
    finding) concerns a prefix of them: the work is ~1.7 passes over the pairs on MIMIC-like
    data, not K. Each pass gathers the anchor's code of that finding from a small,
    cache-resident block and looks both pairs of codes up in `ScoreTables`. Per pair the sums
    run in vocabulary order: the same float operations as the reference's `reference_score`.
    """
    check_scoring(scoring)
    r, a = anchors.shape
    m = members.shape[1]
    n_pairs = r * a * m
    device = anchors.device
    if n_pairs == 0:
        return torch.zeros((r, a, m), dtype=torch.float64, device=device)
    fc = codes.n_finding_columns
    member_flat, anchor_flat = members.reshape(-1), anchors.reshape(-1)
    pair = torch.arange(n_pairs, device=device)
    pair_member = pair if a == 1 else (pair // (a * m)) * m + pair % m  # index into member_flat
    pair_nf = codes.n_findings.index_select(0, member_flat.index_select(0, pair_member))
    order = _order_by_count(pair_nf)
    n_slots = int(pair_nf.max())
    active = torch.bincount(pair_nf, minlength=n_slots + 1).flip(0).cumsum(0).flip(0)[1:].tolist()  # pairs with > j
    o_anchor = order // m  # index into anchor_flat
    o_member = order if a == 1 else pair_member.index_select(0, order)

    use_table = tables.location_iou is not None
    anchor_code = _rows(codes.anchor_code, anchor_flat).reshape(-1)  # [R*A*(F+1)]
    # Table row offsets of the anchor's codes, so a lookup is one add per pair.
    anchor_ls_row = (anchor_code & ((1 << LS_BITS) - 1)) * tables.n_codes
    anchor_loc_row = (anchor_code >> LS_BITS) * tables.n_location_ids if use_table else None
    slot_code = _rows(codes.slot_code, member_flat)[:, :n_slots].T.contiguous()  # [K, R*M]
    if not use_table:
        anchor_loc = _rows(codes.loc, anchor_flat).reshape(-1)
        anchor_cnt = _rows(codes.loc_count, anchor_flat).reshape(-1)
        slot_loc = _rows(codes.slot_loc, member_flat)[:, :n_slots].T.contiguous()
        slot_cnt = _rows(codes.slot_loc_count, member_flat)[:, :n_slots].T.contiguous()

    acc = torch.zeros((n_pairs, 3), dtype=torch.float64, device=device)  # min weight, shared, severity IoU
    loc_sum = torch.zeros(n_pairs, dtype=torch.float64, device=device)
    o_anchor_base = o_anchor * fc
    for j in range(n_slots):
        c = active[j]
        p_member = o_member[:c]
        mcode = slot_code[j].index_select(0, p_member)
        idx = o_anchor_base[:c] + (mcode & ((1 << FINDING_BITS) - 1))
        m_ls = (mcode >> FINDING_BITS) & ((1 << LS_BITS) - 1)
        term = tables.level_severity.index_select(0, anchor_ls_row.index_select(0, idx) + m_ls)
        if use_table:
            loc = tables.location_iou.index_select(
                0, anchor_loc_row.index_select(0, idx) + (mcode >> (FINDING_BITS + LS_BITS)))
        else:
            inter = _popcount(anchor_loc.index_select(0, idx) & slot_loc[j].index_select(0, p_member),
                              tables.popcount, tables.location_chunks)
            loc = _iou_from_counts(inter, anchor_cnt.index_select(0, idx), slot_cnt[j].index_select(0, p_member))
            loc = loc * term[:, 1]
        acc[:c] += term
        loc_sum[:c] += loc

    inter_w, n_shared, sev_sum = acc.T.contiguous()
    s_anchor = anchor_flat.index_select(0, o_anchor)
    s_member = member_flat.index_select(0, o_member)
    sum_a = codes.weight_sum.index_select(0, s_anchor)
    sum_b = codes.weight_sum.index_select(0, s_member)
    jaccard = inter_w / (sum_a + sum_b - inter_w)
    n_a = codes.finding_count.index_select(0, s_anchor)
    if scoring == "union":
        count = n_a + codes.finding_count.index_select(0, s_member) - n_shared
    else:
        count = n_a
    scores = _combine(weights, jaccard, sev_sum, loc_sum, count)
    return torch.empty_like(scores).index_copy_(0, order, scores).view(r, a, m)
