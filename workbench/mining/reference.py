"""A straightforward per-pair, pure-Python implementation of the score and the selection rule.

It exists to check the vectorised miner (tests compare them triplet for triplet) and to
measure its speedup (the benchmark). It follows the definitions literally: Python sets and
dicts per pair, a stably sorted score list per anchor, as in the seed's `APNFinder`. It reads
the same random draws (`schedule.schedule_draws`), so both miners see the same mini batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from workbench.mining.encode import NO_FINDING, assertion_weight, check_uncertain_weight, parse_findings
from workbench.mining.schedule import MiningConfig, schedule_draws
from workbench.mining.similarity import ScoreWeights, check_scoring, score_key

Study = Dict[str, Tuple[float, frozenset, frozenset]]  # finding -> (weight, severities, locations)


def reference_study(findings: Any, uncertain_weight: float = 0.5) -> Study:
    """Findings JSON/dict -> {finding: (weight, severity set, location set)} over counted findings."""
    check_uncertain_weight(uncertain_weight)
    study: Study = {}
    for name, attrs in parse_findings(findings).items():
        weight = assertion_weight(attrs["assertion"], uncertain_weight)
        if weight > 0:
            study[name] = (weight, frozenset(attrs["severity"]), frozenset(attrs["location"]))
    if not study:
        study[NO_FINDING] = (1.0, frozenset(), frozenset())
    return study


def _iou(a: frozenset, b: frozenset) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def reference_score(anchor: Study, other: Study, scoring: str = "union",
                    weights: ScoreWeights = ScoreWeights()) -> float:
    """s(anchor, other) by the definitions in `workbench.mining.similarity`."""
    check_scoring(scoring)
    union = sorted(set(anchor) | set(other))
    shared = sorted(set(anchor) & set(other))
    inter_w = 0.0
    union_w = 0.0
    for f in union:
        wa = anchor[f][0] if f in anchor else 0.0
        wb = other[f][0] if f in other else 0.0
        inter_w += min(wa, wb)
        union_w += max(wa, wb)
    jaccard = inter_w / union_w
    sev_sum = 0.0
    loc_sum = 0.0
    for f in shared:
        sev_sum += _iou(anchor[f][1], other[f][1])
        loc_sum += _iou(anchor[f][2], other[f][2])
    count = float(len(union) if scoring == "union" else len(anchor))
    return weights.findings * jaccard + weights.severity * (sev_sum / count) + weights.location * (loc_sum / count)


@dataclass
class ReferenceResult:
    triplets: List[Tuple[int, int, int, float, float]]  # anchor, positive, negative rows; scores
    anchors: int
    skipped_no_candidate: int
    skipped_weak_positive: int


def reference_select(
    anchor: int,
    members: Sequence[int],
    anchor_position: int,
    studies: Sequence[Study],
    subjects: Sequence[Any],
    semi_hard: bool,
    config: MiningConfig,
) -> Tuple[str, Optional[Tuple[int, int, float, float]]]:
    """One anchor's (positive, negative) by the seed's list logic; ('ok'|'weak'|'none', result)."""
    weights = config.weights()
    scored = [(members[p], reference_score(studies[anchor], studies[members[p]], config.scoring, weights))
              for p in range(len(members)) if p != anchor_position]
    scored.sort(key=lambda item: -score_key(item[1]))  # stable: ties keep mini-batch order
    positive, positive_score = scored[0]
    if config.min_positive_score is not None and score_key(positive_score) < score_key(config.min_positive_score):
        return "weak", None
    cap = score_key(config.positive_cap)
    rest = [(row, s) for row, s in scored[1:] if score_key(s) < cap and subjects[row] != subjects[anchor]]
    if not rest:
        return "none", None
    if semi_hard:
        threshold = score_key(config.threshold)
        semi = [(row, s) for row, s in rest if score_key(s) >= threshold]
        if semi:
            negative, negative_score = min(semi, key=lambda item: score_key(item[1]))
        else:
            negative, negative_score = max(rest, key=lambda item: score_key(item[1]))
    else:
        negative, negative_score = rest[-1]
    return "ok", (positive, negative, positive_score, negative_score)


def reference_mine(findings: Sequence[Any], subjects: Sequence[Any], config: MiningConfig = MiningConfig(),
                   max_iterations: Optional[int] = None) -> ReferenceResult:
    """The whole schedule (or its first `max_iterations`), one pair at a time."""
    config.validate()
    studies = [reference_study(f, config.uncertain_weight) for f in findings]
    return reference_mine_studies(studies, subjects, config, max_iterations)


def reference_mine_studies(studies: Sequence[Study], subjects: Sequence[Any], config: MiningConfig,
                           max_iterations: Optional[int] = None) -> ReferenceResult:
    """`reference_mine` on studies already turned into `reference_study` dicts."""
    result = ReferenceResult([], 0, 0, 0)
    done = 0
    for chunk in schedule_draws(len(studies), config):
        if max_iterations is not None and done >= max_iterations:
            break
        mini = chunk.members.shape[1]
        rows = chunk.members.shape[0] if max_iterations is None else min(
            chunk.members.shape[0], (max_iterations - done) * mini)
        for r in range(rows):
            members = [int(x) for x in chunk.members[r]]
            for i, pos in enumerate(chunk.anchor_pos[r]):
                anchor = members[int(pos)]
                status, picked = reference_select(anchor, members, int(pos), studies, subjects,
                                                  bool(chunk.semi_hard[r, i]), config)
                result.anchors += 1
                if status == "weak":
                    result.skipped_weak_positive += 1
                elif status == "none":
                    result.skipped_no_candidate += 1
                else:
                    result.triplets.append((anchor, *picked))
        done += chunk.iterations
    return result
