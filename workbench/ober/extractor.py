"""Entity extraction: report text -> mentions with assertion and meta-entities."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from workbench.ober.context import ASSERTION_NAMES, sentence_mentions
from workbench.ober.matcher import scan
from workbench.ober.meta import Mention, location_terms, normalise_laterality, normalise_severity
from workbench.ober.ontology import HEDGE_NAMES, Ontology, load_ontology
from workbench.ober.text import lower_text, skipped_ranges


@dataclass(frozen=True)
class Entity:
    """One finding mention: what, whether, how severe, where, how it changed, and its span."""

    concept: str
    assertion: str  # present | absent | uncertain
    severity: Optional[str]  # mild | moderate | severe
    laterality: Optional[str]  # right | left | bilateral
    zone: List[str] = field(default_factory=list)  # upper / middle / lower / apical / basilar / ...
    lobe: List[str] = field(default_factory=list)
    change: Optional[str] = None  # new | increased | decreased | stable | resolved
    hedge: Optional[str] = None  # uncertain only: possible | probable | alternative
    start: int = 0
    end: int = 0
    text: str = ""

    @property
    def location(self) -> List[str]:
        return location_terms(self.laterality, self.zone, self.lobe)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["location"] = self.location
        return d


def analyse(text: Any, onto: Optional[Ontology] = None) -> List[Mention]:
    """Raw mentions of one report (fast path used by the labeler). Non-text (NaN, None) -> []."""
    if not isinstance(text, str) or not text:
        return []
    onto = onto or load_ontology()
    low = lower_text(text)
    out: List[Mention] = []
    for tokens in scan(onto, low, skipped_ranges(low)):
        sentence_mentions(onto, low, tokens, out)
    return out


def to_entity(m: Mention, text: str, onto: Ontology) -> Entity:
    return Entity(
        concept=onto.concepts[m.concept],
        assertion=ASSERTION_NAMES[m.assertion],
        severity=normalise_severity(m.severity),
        laterality=normalise_laterality(m.laterality),
        zone=sorted(m.zone) if m.zone else [],
        lobe=sorted(m.lobe) if m.lobe else [],
        change=m.change[0] if m.change else None,
        hedge=HEDGE_NAMES.get(m.hedge),
        start=m.start,
        end=m.end,
        text=text[m.start:m.end],
    )


def mention_dict(m: Mention, text: str, onto: Ontology) -> Dict[str, Any]:
    """The JSON-ready form of a mention (same keys as `Entity.to_dict`), built without dataclasses."""
    lat = normalise_laterality(m.laterality)
    zone = sorted(m.zone) if m.zone else []
    lobe = sorted(m.lobe) if m.lobe else []
    return {"concept": onto.concepts[m.concept], "assertion": ASSERTION_NAMES[m.assertion],
            "severity": normalise_severity(m.severity), "laterality": lat, "zone": zone, "lobe": lobe,
            "change": m.change[0] if m.change else None, "hedge": HEDGE_NAMES.get(m.hedge),
            "start": m.start, "end": m.end, "text": text[m.start:m.end],
            "location": location_terms(lat, zone, lobe)}


def extract(text: Any, onto: Optional[Ontology] = None) -> List[Entity]:
    """Entities of one report, in text order.

    >>> [(e.concept, e.assertion) for e in extract("No effusion. Mild cardiomegaly.")]
    [('effusion', 'absent'), ('cardiomegaly', 'present')]
    """
    onto = onto or load_ontology()
    return [to_entity(m, text, onto) for m in analyse(text, onto)]
