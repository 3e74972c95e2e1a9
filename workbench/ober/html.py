"""Reports as HTML with entities highlighted by assertion (used by notebooks 01, 02 and 05)."""

from __future__ import annotations

import html as _html
from typing import Any, Iterable, List, Mapping, Union

# Colour per assertion: present red, absent green, uncertain amber (colour-blind safe enough
# with the legend's words; the title tooltip repeats the assertion).
ASSERTION_COLOURS = {"present": "#f8c6c6", "absent": "#c8ecc8", "uncertain": "#fde7a9"}
ASSERTION_BORDERS = {"present": "#c0392b", "absent": "#27ae60", "uncertain": "#d68910"}


def _get(entity: Any, key: str, default: Any = None) -> Any:
    if isinstance(entity, Mapping):
        return entity.get(key, default)
    return getattr(entity, key, default)


def highlight_html(text: str, entities: Iterable[Union[Mapping[str, Any], Any]]) -> str:
    """`text` as HTML with each entity's span wrapped in a coloured <span>.

    Entities are `Entity` objects or their dicts (as stored in ober.parquet's `entities`).
    Overlapping spans: the earlier-starting (then longer) one wins; the others are skipped.
    The tooltip shows concept, assertion, severity, location and change.
    """
    if not isinstance(text, str):
        text = ""
    spans: List[tuple] = []
    for e in entities:
        start, end = int(_get(e, "start", 0)), int(_get(e, "end", 0))
        if 0 <= start < end <= len(text):
            spans.append((start, -end, e))
    spans.sort(key=lambda s: (s[0], s[1]))
    out: List[str] = []
    pos = 0
    for start, neg_end, e in spans:
        end = -neg_end
        if start < pos:
            continue
        assertion = str(_get(e, "assertion", "present"))
        location = _get(e, "location") or []
        tip = [f"{_get(e, 'concept', '')}: {assertion}"]
        if _get(e, "hedge"):
            tip.append(f"hedge: {_get(e, 'hedge')}")
        if _get(e, "severity"):
            tip.append(f"severity: {_get(e, 'severity')}")
        if location:
            tip.append("location: " + ", ".join(str(x) for x in location))
        if _get(e, "change"):
            tip.append(f"change: {_get(e, 'change')}")
        style = (f"background:{ASSERTION_COLOURS.get(assertion, '#ddd')};"
                 f"border-bottom:2px solid {ASSERTION_BORDERS.get(assertion, '#888')};padding:0 1px")
        out.append(_html.escape(text[pos:start]))
        out.append(f'<span class="ober-{_html.escape(assertion)}" style="{style}" '
                   f'title="{_html.escape("; ".join(tip))}">{_html.escape(text[start:end])}</span>')
        pos = end
    out.append(_html.escape(text[pos:]))
    return '<div class="ober-report" style="white-space:pre-wrap;line-height:1.6">' + "".join(out) + "</div>"


def legend_html() -> str:
    """A one-line legend of the assertion colours."""
    items = [f'<span style="background:{ASSERTION_COLOURS[a]};border-bottom:2px solid {ASSERTION_BORDERS[a]};'
             f'padding:0 4px;margin-right:8px">{a}</span>' for a in ("present", "absent", "uncertain")]
    return "<div>" + "".join(items) + "</div>"
