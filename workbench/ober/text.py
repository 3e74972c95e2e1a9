"""Report text handling: lower-casing with spans kept, de-identification tokens, sections,
sentence splitting (a regex; nothing is downloaded, unlike nltk's punkt).

Spans everywhere refer to the ORIGINAL text: lower-casing keeps the length for all but a
handful of Unicode characters, and for those we lower-case character by character.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

# A sentence ends at . ! ; (not a decimal point), a bullet, a quote mark used as an item
# separator (CT-RATE's impressions), or a blank line. '?' also ends one (matcher.py).
SENTENCE_END_ALTERNATIVES = [r"\.(?!\d)", "!", ";", '"', "\u2022", r"\n[ \t\r]*\n"]
SENTENCE_END_CHARS = '.!;"\u2022\n'
_SENTENCE_RE = re.compile("|".join(SENTENCE_END_ALTERNATIVES + [r"\?"]))

# De-identification placeholders of public report sets (Open-i writes XXXX; MIMIC ___).
DEID_RE = re.compile(r"\b[Xx]{2,}\b|_{3,}")

# Section headers. Findings-like sections are read; history-like sections are not (a
# "history of pneumonia" is not a finding of this study).
_HEADER_RE = re.compile(
    r"(?im)^[ \t]*(findings?|impressions?|conclusions?|summary|opinion|interpretation|result|"
    r"report|final report|indications?|clinical indications?|history|clinical history|"
    r"clinical information|clinical details|reason for (?:exam|examination|study)|comparisons?|"
    r"technique|examination|exam|procedure|notifications?|recommendations?|addendum|"
    r"wet read|dictated by|signed by|attending)[ \t]*:")
READ_SECTIONS = ("finding", "impression", "conclusion", "summary", "opinion", "interpretation", "result",
                 "report", "final report")


def lower_text(text: str) -> str:
    """Lower-cased text with exactly the same length as `text` (spans stay valid)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c) == 1 else o for c, o in ((ch.lower(), ch) for ch in text))


def deid_spans(text: str) -> List[Tuple[int, int]]:
    """Character spans of de-identification tokens (XXXX, ___)."""
    return [m.span() for m in DEID_RE.finditer(text)]


def sections(text: str) -> List[Tuple[str, int, int]]:
    """(name, start, end) of each section; text before the first header is named ''."""
    heads = list(_HEADER_RE.finditer(text))
    if not heads:
        return [("", 0, len(text))]
    out: List[Tuple[str, int, int]] = []
    if heads[0].start() > 0:
        out.append(("", 0, heads[0].start()))
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        out.append((m.group(1).lower(), m.end(), end))
    return out


def skipped_ranges(text: str) -> Optional[List[Tuple[int, int]]]:
    """Ranges of sections that are not read (history, indication, ...), or None if none.

    Text before the first header is read unless a findings/impression header exists (then
    it is a preamble such as "EXAMINATION: ..."). Without any findings/impression header the
    body of the report is unlabelled, so a history-like header covers only its own line up to
    the first sentence end ("Comparison: CT dated 25.12.2019. Trachea ... are open.").
    """
    if ":" not in text:
        return None
    secs = sections(text)
    if len(secs) == 1 and secs[0][0] == "":
        return None
    has_read = any(name.startswith(READ_SECTIONS) for name, _, _ in secs if name)
    skip: List[Tuple[int, int]] = []
    for name, start, end in secs:
        read = name.startswith(READ_SECTIONS) if name else not has_read
        if not read:
            if name and not has_read:
                stop = _SENTENCE_RE.search(text, start, end)
                newline = text.find("\n", start, end)
                if stop is not None:
                    end = stop.end()
                if 0 <= newline < end:
                    end = newline
            skip.append((start, end))
    return skip or None


def split_sentences(text: str) -> List[Tuple[int, int]]:
    """Sentence spans (start, end) of `text`, stripped of surrounding whitespace; empty ones dropped."""
    spans: List[Tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_RE.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s and any(ch.isalnum() for ch in text[s:e]):
            out.append((s, e))
    return out


def join_sections(findings: str, impression: str) -> str:
    """One report text from its two sections (a blank line between keeps sentences apart)."""
    parts = [p.strip() for p in (findings, impression) if isinstance(p, str) and p.strip()]
    return "\n\n".join(parts)
