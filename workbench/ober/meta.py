"""Meta-entities of a mention: severity, location (laterality / zone / lobe) and change.

Normalisation is data (modifiers.yaml): "trace", "small", "mild" -> mild; "large",
"severe" -> severe; "bibasilar" -> bilateral + basilar; "unchanged" -> stable. Here we only
decide which mention a modifier word belongs to: the next finding of its clause when it is
close ("small left effusion"), else the previous one ("effusion, unchanged"); phrases marked
`attach: back` ("on the right", "bilaterally") go to the previous finding first.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from workbench.ober.ontology import ATTACH_BACK

SEVERITY_ORDER = ("mild", "moderate", "severe")
# A modifier is read as pre-modifying the next mention when at most this many characters
# separate them ("small right-sided pleural effusion").
FORWARD_GAP = 40


class Mention:
    """One finding mention: concept index, assertion (1 / 0 / -1), span, meta-entities."""

    __slots__ = ("concept", "assertion", "hedge", "start", "end", "first", "last", "severity", "laterality",
                 "zone", "lobe", "change")

    def __init__(self, concept: int, assertion: Tuple[int, int], start: int, end: int, first: int,
                 last: int) -> None:
        self.concept = concept
        self.assertion, self.hedge = assertion  # hedge: kind of uncertainty (0 unless uncertain)
        self.start = start
        self.end = end
        self.first = first  # token indices (within the sentence) the mention spans
        self.last = last
        self.severity: Optional[List[str]] = None
        self.laterality: Optional[List[str]] = None
        self.zone: Optional[List[str]] = None
        self.lobe: Optional[List[str]] = None
        self.change: Optional[List[str]] = None


def _add(mention: Mention, attr: str, value: Optional[str]) -> None:
    if value is None:
        return
    current = getattr(mention, attr)
    if current is None:
        setattr(mention, attr, [value])
    elif value not in current:
        current.append(value)


def attach_modifiers(low: str, tokens: Sequence, lo: int, hi: int, mentions: Sequence[Mention],
                     back_preposition: Optional["re.Pattern[str]"] = None) -> None:
    """Give each modifier token of tokens[lo:hi] to one mention of the same clause.

    A location word right after a preposition ("in the lingula") follows its finding.

    `mentions` are in order of their first token (as `context._clause` gives them). A
    modifier's neighbours, the last mention (in list order) that ends before it and the first
    that starts after it, are tracked by two pointers while the tokens are walked, so a clause
    costs O(tokens + mentions log mentions), not modifiers x mentions (issue 14).
    """
    n = len(mentions)
    lasts = [m.last for m in mentions]
    by_last = sorted(range(n), key=lasts.__getitem__) if n > 1 else range(n)
    ended = 0  # mentions by_last[:ended] end before the current token
    prev_index = -1  # the greatest list index among them
    started = 0  # mentions[:started] start at or before the current token
    for i in range(lo, hi):
        start, end, entry = tokens[i]
        if not entry.has_meta:
            continue
        while ended < n and lasts[by_last[ended]] < i:
            if by_last[ended] > prev_index:
                prev_index = by_last[ended]
            ended += 1
        while started < n and mentions[started].first <= i:
            started += 1
        prev = mentions[prev_index] if prev_index >= 0 else None
        nxt = mentions[started] if started < n else None
        back = entry.attach == ATTACH_BACK
        if not back and back_preposition is not None and (entry.laterality or entry.zone or entry.lobe):
            back = back_preposition.search(low, max(0, start - 16), start) is not None
        if back:
            target = prev or nxt
        elif nxt is not None and nxt.start - end <= FORWARD_GAP:
            target = nxt
        else:
            target = prev or nxt
        if target is None:
            continue
        if entry.severity is not None:
            _add(target, "severity", entry.severity)
        if entry.laterality is not None:
            _add(target, "laterality", entry.laterality)
        if entry.zone is not None:
            _add(target, "zone", entry.zone)
        if entry.lobe is not None:
            _add(target, "lobe", entry.lobe)
        if entry.change is not None:
            _add(target, "change", entry.change)


def normalise_laterality(values: Optional[Sequence[str]]) -> Optional[str]:
    """right + left (or any bilateral word) -> bilateral."""
    if not values:
        return None
    if "bilateral" in values or ("right" in values and "left" in values):
        return "bilateral"
    return values[0]


def normalise_severity(values: Optional[Sequence[str]]) -> Optional[str]:
    """Several severity words on one mention ("mild to moderate" split): the highest."""
    if not values:
        return None
    return max(values, key=SEVERITY_ORDER.index)


def location_terms(laterality: Optional[str], zone: Optional[Sequence[str]],
                   lobe: Optional[Sequence[str]]) -> List[str]:
    """A mention's location as a sorted list of terms (laterality, zones, lobes)."""
    terms = set()
    if laterality:
        terms.add(laterality)
    terms.update(zone or ())
    terms.update(lobe or ())
    return sorted(terms)
