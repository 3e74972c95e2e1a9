"""A report as OBER reads it: entities highlighted by assertion, with severity and location.

The extraction and the span highlighting belong to `workbench.ober` (`extract`,
`highlight_html`); this module lays them out for the inspectors: the highlighted text, a
legend and one table row per mention, so a reader can check each reading against the words.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, List, Optional, Sequence

import pandas as pd

ENTITY_FIELDS = ("concept", "assertion", "severity", "location", "change")


def entity_field(entity: Any, name: str, default: Any = None) -> Any:
    """A field of an OBER entity, whether it is a mapping or an object with attributes."""
    if isinstance(entity, dict):
        return entity.get(name, default)
    return getattr(entity, name, default)


def entity_span(entity: Any) -> Optional[tuple]:
    """(start, end) characters of a mention: its `span`, or its `start` and `end`."""
    span = entity_field(entity, "span")
    if span is not None and len(span) == 2:
        return int(span[0]), int(span[1])
    start, end = entity_field(entity, "start"), entity_field(entity, "end")
    if start is None or end is None:
        return None
    return int(start), int(end)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, set)):
        return ", ".join(str(v) for v in value if v not in (None, ""))
    return str(value)


def entity_table(text: str, entities: Optional[Sequence[Any]] = None) -> pd.DataFrame:
    """One row per mention: the words (from its span), concept, assertion, severity, location, change."""
    if entities is None:
        entities = extract_entities(text)
    rows = []
    for entity in entities:
        span = entity_span(entity)
        words = text[span[0]:span[1]] if span else ""
        rows.append({"text": words, **{f: _as_text(entity_field(entity, f)) for f in ENTITY_FIELDS}})
    return pd.DataFrame(rows, columns=["text", *ENTITY_FIELDS])


def extract_entities(text: str) -> List[Any]:
    """OBER's mentions of a report (`workbench.ober.extract`)."""
    from workbench.ober import extract

    return list(extract(text))


def highlighted_report(text: str, entities: Optional[Sequence[Any]] = None) -> str:
    """The report as HTML with each mention highlighted by its assertion (`workbench.ober.highlight_html`)."""
    from workbench.ober import highlight_html

    if entities is None:
        entities = extract_entities(text)
    return highlight_html(text, list(entities))


def entity_choices(text: str, entities: Optional[Iterable[Any]] = None) -> List[str]:
    """Distinct phrases of a report's mentions (the words as written), for a phrase dropdown."""
    if entities is None:
        entities = extract_entities(text)
    seen: List[str] = []
    for entity in entities:
        span = entity_span(entity)
        words = text[span[0]:span[1]].strip() if span else ""
        words = words or _as_text(entity_field(entity, "concept"))
        if words and words not in seen:
            seen.append(words)
    return seen


def report_html(text: str, study_id: str = "", entities: Optional[Sequence[Any]] = None) -> str:
    """The report inspector's view: title, highlighted report, legend and the entity table."""
    if entities is None:
        entities = extract_entities(text)
    table = entity_table(text, entities)
    title = f"<h4 style='margin:4px 0'>Study {html.escape(study_id)}</h4>" if study_id else ""
    body = (f"<div class='wb-report' style='line-height:1.6;border:1px solid #ddd;padding:6px;border-radius:4px'>"
            f"{highlighted_report(text, entities)}</div>")
    rows = (table.to_html(index=False, escape=True, border=0, classes="wb-entities")
            if not table.empty else "<p><i>OBER found no entities in this report.</i></p>")
    from workbench.ober import legend_html

    return f"{title}{body}{legend_html()}{rows}"
