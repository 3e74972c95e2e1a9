"""Per-study `findings` JSON -> dense tensors, so that many pairwise scores are a few tensor ops.

OBER writes, per study, `findings` = {finding: {"assertion": present|uncertain|absent,
"severity": [...], "location": [...], "source": ...}}. The miner needs, for every study:

- presence weights `[N, F]`: 1 for present, `uncertain_weight` for uncertain, 0 otherwise
  (absent findings are ignored, as MedTrim mines on asserted findings only);
- severity multi-hot `[N, F, S]` and location multi-hot `[N, F, L]` per finding.

A study without any present or uncertain finding gets the virtual finding `No_Finding`
(weight 1, no severity, no location), the last column. This reproduces the seed, where
"no finding" is one of the disease labels: two normal studies then score exactly 1 and a
normal study shares nothing with an abnormal one, without special cases in the vectorised code.
Explicit "no finding" keys in the JSON are folded into that virtual column.

`SlotCodes` is a compact view of the same information for the schedule's hot loop: per
(study, finding) one small integer (assertion level and severity set) and one location
bitmask, plus each study's findings as padded "slots", so a score costs a few gathers per
finding of the candidate instead of work proportional to the whole vocabulary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch

NO_FINDING = "No_Finding"
ASSERTIONS = ("absent", "uncertain", "present")  # index = assertion level
SEVERITY_ORDER = ("mild", "moderate", "severe")
MAX_SEVERITY_WORDS = 6  # severity sets are table-looked-up: (3 * 2**S)**2 entries
MAX_LOCATION_WORDS = 62  # location sets are int64 bitmasks


class FindingsFormatError(ValueError):
    """A `findings` value that is not OBER's JSON object; the message says what and how to fix it."""


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def is_missing_findings(value: Any) -> bool:
    """Whether a study's `findings` value is missing (None, NaN, blank), not an empty object."""
    return _is_missing(value)


def _words(value: Any, what: str, finding: str, source: str) -> List[str]:
    if _is_missing(value):
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise FindingsFormatError(
            f"{source}: {what} of finding {finding!r} is {type(value).__name__}; write it as a list of words."
        )
    return sorted({str(w).strip().lower() for w in value if str(w).strip()})


def _is_no_finding(name: str) -> bool:
    return name.strip().lower().replace("_", " ") in ("no finding", "no findings")


def parse_findings(value: Any, source: str = "findings") -> Dict[str, Dict[str, Any]]:
    """One study's `findings` (JSON text or dict; None/NaN/'' = none) -> normalised dict.

    Result: finding -> {"assertion", "severity" (sorted lower-case words), "location" (same)}.
    """
    if _is_missing(value):
        return {}
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise FindingsFormatError(
                f"{source}: cannot read findings JSON ({exc.msg}); expected an object such as "
                '{"Effusion": {"assertion": "present", "severity": ["mild"], "location": ["left"]}}.'
            ) from None
    if not isinstance(value, Mapping):
        raise FindingsFormatError(
            f"{source}: findings must be a JSON object finding -> attributes, got {type(value).__name__}; "
            "write it with workbench.ober (ober.parquet's `findings` column)."
        )
    out: Dict[str, Dict[str, Any]] = {}
    for name, attrs in value.items():
        name = str(name).strip()
        if not name or _is_no_finding(name):
            continue
        if attrs is None:
            attrs = {}
        if not isinstance(attrs, Mapping):
            raise FindingsFormatError(
                f"{source}: finding {name!r} maps to {type(attrs).__name__}; it must map to an object with "
                "assertion/severity/location."
            )
        assertion = str(attrs.get("assertion", "present")).strip().lower()
        if assertion not in ASSERTIONS:
            raise FindingsFormatError(
                f"{source}: finding {name!r} has assertion {assertion!r}; use one of {list(ASSERTIONS)}."
            )
        out[name] = {
            "assertion": assertion,
            "severity": _words(attrs.get("severity"), "severity", name, source),
            "location": _words(attrs.get("location"), "location", name, source),
        }
    return out


def assertion_weight(assertion: str, uncertain_weight: float) -> float:
    """Weight of a finding in the weighted Jaccard: present 1, uncertain `uncertain_weight`, absent 0."""
    return {"present": 1.0, "uncertain": float(uncertain_weight)}.get(assertion, 0.0)


def check_uncertain_weight(uncertain_weight: float) -> float:
    if not 0.0 <= float(uncertain_weight) <= 1.0:
        raise ValueError(f"uncertain_weight must lie in [0, 1] (a present finding weighs 1); got {uncertain_weight}.")
    return float(uncertain_weight)


@dataclass
class EncodedStudies:
    """Dense tensors of N studies over a finding vocabulary (last entry: `No_Finding`)."""

    study_ids: List[str]
    findings: List[str]
    severities: List[str]
    locations: List[str]
    level: torch.Tensor  # [N, F] int8: 0 absent/not mentioned, 1 uncertain, 2 present
    weights: torch.Tensor  # [N, F] float64 presence weights
    severity: torch.Tensor  # [N, F, S] bool
    location: torch.Tensor  # [N, F, L] bool
    uncertain_weight: float = 0.5

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def to(self, device: torch.device | str) -> "EncodedStudies":
        return EncodedStudies(
            self.study_ids, self.findings, self.severities, self.locations,
            self.level.to(device), self.weights.to(device), self.severity.to(device), self.location.to(device),
            self.uncertain_weight,
        )

    def subset(self, rows: Sequence[int] | np.ndarray | torch.Tensor) -> "EncodedStudies":
        """The studies at `rows` (same vocabulary)."""
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.weights.device)
        ids = [self.study_ids[int(i)] for i in idx.tolist()]
        return EncodedStudies(ids, self.findings, self.severities, self.locations, self.level[idx],
                              self.weights[idx], self.severity[idx], self.location[idx], self.uncertain_weight)


def encode_findings(
    values: Iterable[Any],
    study_ids: Optional[Sequence[str]] = None,
    uncertain_weight: float = 0.5,
    device: torch.device | str = "cpu",
) -> EncodedStudies:
    """Encode a column of per-study `findings` (JSON text or dicts) into dense tensors.

    The finding vocabulary is sorted by name (the order the reference sums in), with
    `No_Finding` appended; severities keep mild < moderate < severe first, then any other
    word sorted; locations are sorted. A missing value (None, NaN, blank) is refused: it would
    become a normal study; drop such studies first (`table.train_rows` does, counting them).
    """
    uncertain_weight = check_uncertain_weight(uncertain_weight)
    values = list(values)
    for i, v in enumerate(values):
        if _is_missing(v):
            raise FindingsFormatError(
                f"findings of study {study_ids[i] if study_ids is not None else i} are missing ({v!r}); a study "
                "without findings information is not a normal study: drop it (train_rows does) or write '{}'."
            )
    parsed = [parse_findings(v, source=f"findings of study {study_ids[i] if study_ids is not None else i}")
              for i, v in enumerate(values)]
    n = len(parsed)
    ids = [str(s) for s in study_ids] if study_ids is not None else [str(i) for i in range(n)]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} study ids for {n} findings values.")

    names, sev_words, loc_words = set(), set(), set()
    for study in parsed:
        for name, attrs in study.items():
            if attrs["assertion"] == "absent":
                continue
            names.add(name)
            sev_words.update(attrs["severity"])
            loc_words.update(attrs["location"])
    findings = sorted(names) + [NO_FINDING]
    severities = [w for w in SEVERITY_ORDER if w in sev_words] + sorted(sev_words - set(SEVERITY_ORDER))
    locations = sorted(loc_words)
    if len(severities) > MAX_SEVERITY_WORDS:
        raise FindingsFormatError(
            f"findings use {len(severities)} severity words {severities}; at most {MAX_SEVERITY_WORDS} are "
            "supported: normalise severities to mild/moderate/severe (as workbench.ober does)."
        )
    if len(locations) > MAX_LOCATION_WORDS:
        raise FindingsFormatError(
            f"findings use {len(locations)} location words; at most {MAX_LOCATION_WORDS} are supported: "
            "normalise locations to laterality/zone/lobe words (as workbench.ober does)."
        )
    f_index = {f: i for i, f in enumerate(findings)}
    s_index = {w: i for i, w in enumerate(severities)}
    l_index = {w: i for i, w in enumerate(locations)}
    level = np.zeros((n, len(findings)), dtype=np.int8)
    sev_rows: List[tuple] = []
    loc_rows: List[tuple] = []
    for row, study in enumerate(parsed):
        for name, attrs in study.items():
            lv = ASSERTIONS.index(attrs["assertion"])
            if lv == 0:
                continue
            f = f_index[name]
            level[row, f] = lv
            sev_rows.extend((row, f, s_index[w]) for w in attrs["severity"])
            loc_rows.extend((row, f, l_index[w]) for w in attrs["location"])
    weight_of_level = np.array([0.0, uncertain_weight, 1.0])
    weights = weight_of_level[level]
    # Uncertain findings at weight 0 do not count either: such a study is a "no finding" study.
    empty = ~(weights > 0).any(axis=1)
    level[empty, -1] = 2
    weights[empty, -1] = 1.0
    severity = np.zeros((n, len(findings), len(severities)), dtype=bool)
    location = np.zeros((n, len(findings), len(locations)), dtype=bool)
    if sev_rows:
        r, f, s = np.array(sev_rows).T
        severity[r, f, s] = True
    if loc_rows:
        r, f, l = np.array(loc_rows).T
        location[r, f, l] = True
    # A finding that does not count (weight 0) carries no attributes either.
    severity &= (weights > 0)[:, :, None]
    location &= (weights > 0)[:, :, None]
    return EncodedStudies(
        ids, findings, severities, locations,
        torch.from_numpy(level).to(device), torch.from_numpy(weights).to(device),
        torch.from_numpy(severity).to(device), torch.from_numpy(location).to(device), uncertain_weight,
    )


def _bitmask(multi_hot: torch.Tensor) -> torch.Tensor:
    """[..., B] bool -> [...] int64 with bit b set where multi_hot[..., b]."""
    bits = torch.tensor([1 << b for b in range(multi_hot.shape[-1])], dtype=torch.int64, device=multi_hot.device)
    return (multi_hot.to(torch.int64) * bits).sum(-1)


LS_BITS = 8  # (assertion level, severity set) code: < 3 * 2**MAX_SEVERITY_WORDS = 192
FINDING_BITS = 12  # finding column index
MAX_FINDINGS = (1 << FINDING_BITS) - 2  # + No_Finding + the padding column


@dataclass
class SlotCodes:
    """Compact per-study codes for the schedule's hot loop (see module docstring).

    A finding's "ls" code is assertion level * 2**S + severity bitmask (0: the study lacks the
    finding); its location id numbers its location set among the distinct sets in the data
    (0: the study lacks the finding; `location_sets[id]` is the set's bitmask).

    Anchor side, dense over findings plus one padding column that no study has:
      `anchor_code` [N, F+1] = ls | location id << 8.
    Candidate side, each study's own findings as padded slots, in vocabulary order:
      `slot_code` [N, K] = finding column | ls << 12 | location id << 20 (padding: column F).
    Bitmask view of locations (used when there are too many distinct sets for a table):
      `loc`, `loc_count` [N, F+1]; `slot_loc`, `slot_loc_count` [N, K].
    Per study: `weight_sum` [N] (sum of presence weights), `n_findings` [N] (also as float64).
    """

    anchor_code: torch.Tensor
    slot_code: torch.Tensor
    loc: torch.Tensor
    loc_count: torch.Tensor
    slot_loc: torch.Tensor
    slot_loc_count: torch.Tensor
    weight_sum: torch.Tensor
    n_findings: torch.Tensor
    finding_count: torch.Tensor  # n_findings as float64
    location_sets: torch.Tensor
    n_severities: int
    n_locations: int
    n_finding_columns: int  # F + 1 (with the padding column)

    @property
    def n_slots(self) -> int:
        return int(self.slot_code.shape[1])


def pack_slots(enc: EncodedStudies) -> SlotCodes:
    """Derive `SlotCodes` from dense encodings (on the encodings' device)."""
    n, f = enc.weights.shape
    if f > MAX_FINDINGS:
        raise FindingsFormatError(f"{f} distinct findings; the miner supports at most {MAX_FINDINGS}.")
    device = enc.weights.device
    s = enc.severity.shape[-1]
    present = enc.weights > 0
    ls = torch.where(present, enc.level.to(torch.int64) * (1 << s) + _bitmask(enc.severity), 0)
    loc = _bitmask(enc.location)
    loc_count = enc.location.sum(-1).to(torch.int64)
    location_sets, inverse = torch.unique(loc[present], return_inverse=True)
    loc_id = torch.zeros_like(loc)
    loc_id[present] = inverse + 1
    location_sets = torch.cat([torch.zeros(1, dtype=torch.int64, device=device), location_sets])
    pad = torch.zeros((n, 1), dtype=torch.int64, device=device)
    ls, loc_id, loc, loc_count = (torch.cat([t, pad], dim=1) for t in (ls, loc_id, loc, loc_count))

    n_findings = present.sum(1)
    k = int(n_findings.max().item()) if n else 1
    # Stable sort puts each study's findings first, in vocabulary order, then the padding.
    order = torch.sort((~present).to(torch.int8), dim=1, stable=True).indices[:, :k]
    is_slot = torch.arange(k, device=device)[None, :] < n_findings[:, None]
    slot_finding = torch.where(is_slot, order, torch.full_like(order, f))
    slot_code = (slot_finding | (torch.gather(ls, 1, slot_finding) << FINDING_BITS)
                 | (torch.gather(loc_id, 1, slot_finding) << (FINDING_BITS + LS_BITS)))

    # Sequential sum in vocabulary order: the same float operations as the reference.
    weight_sum = torch.zeros(n, dtype=torch.float64, device=device)
    for j in range(k):
        weight_sum = weight_sum + torch.where(is_slot[:, j], enc.weights.gather(1, order[:, j:j + 1])[:, 0], 0.0)
    return SlotCodes(
        anchor_code=(ls | (loc_id << LS_BITS)).contiguous(), slot_code=slot_code.contiguous(),
        loc=loc.contiguous(), loc_count=loc_count.contiguous(),
        slot_loc=torch.gather(loc, 1, slot_finding), slot_loc_count=torch.gather(loc_count, 1, slot_finding),
        weight_sum=weight_sum, n_findings=n_findings.to(torch.int64), finding_count=n_findings.to(torch.float64),
        location_sets=location_sets,
        n_severities=s, n_locations=int(enc.location.shape[-1]), n_finding_columns=f + 1,
    )
