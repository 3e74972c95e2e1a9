"""Report text: robust decoding and FINDINGS / IMPRESSION section parsing.

Radiology exports are messy: sections may be missing or lower-case ("impression:"), a CSV cell
may be NaN (about 9k NaN rows crashed MGCA's MIMIC loader), and legacy files hold a few
cp1252 bytes. Every function here accepts such input and returns plain strings; deciding to
skip a study with no text at all is the reader's job (via `SkipCounter`).
"""

from __future__ import annotations

import io
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import pandas as pd

from workbench.data.skips import SkipCounter

# Section headers seen in MIMIC-CXR, IU X-ray and CT reports. Only FINDINGS and IMPRESSION
# are kept; the others end the section before them.
_HEADERS = [
    "findings and impression", "findings/impression", "findings", "impressions?", "conclusions?",
    "indications?", "clinical (?:history|information|indication)", "history", "reason for (?:exam|examination|study)",
    "comparisons?", "technique", "examination", "exam", "procedure", "recommendations?", "notification",
    "wet read", "final report", "addendum", "provisional findings impression \\(pfi\\)", "type of examination",
]
_HEADER_RE = re.compile(r"(?im)^[ \t]*(" + "|".join(_HEADERS) + r")[ \t]*:")
# Mid-line headers are accepted only in capitals ("... normal. IMPRESSION: ..."), so prose such
# as "no change in findings: stable" is not cut.
_INLINE_HEADER_RE = re.compile(r"(?<=\s)(" + "|".join(h.upper() for h in _HEADERS) + r")[ \t]*:")
_WS_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class ReportSections:
    """The parts of a report a model reads."""

    findings: str
    impression: str
    report: str  # findings + impression, or the whole cleaned text when neither section exists


def clean_text(value: Any) -> str:
    """Whitespace-collapsed string; None, NaN and pandas NA become ''."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, bytes):
        value = decode_bytes(value)[0]
    return _WS_RE.sub(" ", str(value)).strip()


def decode_bytes(raw: bytes) -> Tuple[str, bool]:
    """Decode as UTF-8; on failure fall back to cp1252, then latin-1 (never fails).

    Returns (text, used_fallback). A report is not worth losing for one stray byte.
    """
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), True
    except UnicodeDecodeError:
        return raw.decode("latin-1"), True


def read_text_file(path: str | Path, skips: Optional[SkipCounter] = None) -> str:
    """Read a report file, decoding with a counted fallback for non-UTF-8 bytes."""
    text, fallback = decode_bytes(Path(path).read_bytes())
    if fallback and skips is not None:
        skips.keep("non_utf8_text", path)
    return text.lstrip("\ufeff")


class TableError(ValueError):
    """A table that cannot be read at all (empty, corrupt compression); names the file and the fix."""


def _decompressed_bytes(path: Path) -> bytes:
    """The table's bytes after pandas' own decompression (inferred from .gz/.bz2/.xz/.zip/.zst)."""
    from pandas.io.common import get_handle

    with get_handle(path, "rb", compression="infer", is_text=False) as handles:
        return handles.handle.read()


def read_csv_text(path: str | Path, skips: Optional[SkipCounter] = None, *, required: Sequence[str] = (),
                  table: str = "this table", **kwargs: Any) -> pd.DataFrame:
    """`pd.read_csv` for released tables: plain or compressed (`.csv.gz` as MIMIC-CXR ships
    them; pandas infers the codec from the suffix), a UTF-8 BOM dropped, and a few non-UTF-8
    bytes survived: bad lines are decoded with the fallback and counted once per line (as
    `non_utf8_text`). An empty or corrupt file, or one without the `required` columns, raises
    `TableError` naming the file, what it lacks and what `table` (e.g. "IU's report table") needs."""
    frame = _read_csv_frame(Path(path), skips, **kwargs)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise TableError(f"{path} lacks columns {missing} (it has {list(map(str, frame.columns))}); "
                         f"{table} needs {list(required)}: use the dataset's released table or rename its columns.")
    return frame


def _read_csv_frame(path: Path, skips: Optional[SkipCounter], **kwargs: Any) -> pd.DataFrame:
    try:
        try:
            return pd.read_csv(path, encoding="utf-8-sig", compression="infer", **kwargs)
        except UnicodeDecodeError:
            raw = _decompressed_bytes(path)
        lines = []
        for line in raw.splitlines(keepends=True):
            decoded, bad = decode_bytes(line)
            if bad and skips is not None:
                skips.keep("non_utf8_text", path, "a CSV line")
            lines.append(decoded)
        return pd.read_csv(io.StringIO("".join(lines).lstrip("\ufeff")), **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise TableError(f"{path} is empty (no header row); restore the table from the dataset's release.") from exc
    except (OSError, EOFError, zlib.error, pd.errors.ParserError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise TableError(f"{path} cannot be read as a CSV table ({type(exc).__name__}: {exc}); "
                         "re-download or re-extract it.") from exc


def read_csv_header(path: str | Path) -> list:
    """The column names of a (possibly compressed) CSV table, reading only its first row;
    [] when the file is empty or unreadable (callers sniff many candidate tables)."""
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig", encoding_errors="replace",
                                             compression="infer").columns]
    except Exception:  # noqa: BLE001 - a table that does not parse is simply not a candidate
        return []


def split_sections(text: Any) -> dict:
    """Header (lower-case, normalised) -> section text, plus '' -> text before the first header."""
    raw = "" if clean_text(text) == "" else str(text)
    sections: dict = {}
    matches = sorted({m.start(1): m for m in [*_HEADER_RE.finditer(raw), *_INLINE_HEADER_RE.finditer(raw)]}.values(),
                     key=lambda m: m.start(1))
    sections[""] = raw[: matches[0].start()] if matches else raw
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(raw)
        name = _WS_RE.sub(" ", match.group(1).lower())
        body = raw[match.end():end]
        sections[name] = (sections.get(name, "") + " " + body) if name in sections else body
    return {k: clean_text(v) for k, v in sections.items()}


def parse_report(text: Any, findings: Any = None, impression: Any = None) -> ReportSections:
    """FINDINGS / IMPRESSION of a free-text report (or of given section columns).

    When the caller already has section columns (IU, CT-RATE) they are used as they are;
    otherwise the headers are found case-insensitively. A report without either header keeps
    its whole text (minus administrative headers' labels) as `report`.
    """
    f, i = clean_text(findings), clean_text(impression)
    if not f and not i and clean_text(text):
        sections = split_sections(text)
        f = sections.get("findings", "")
        i = " ".join(s for s in (sections.get("impression", ""), sections.get("impressions", ""),
                                 sections.get("conclusion", ""), sections.get("conclusions", "")) if s)
        joint = sections.get("findings and impression") or sections.get("findings/impression", "")
        if joint and not f:
            f = joint
    report = " ".join(s for s in (f, i) if s)
    if not report:
        report = _strip_headers(text)
    return ReportSections(findings=f, impression=i, report=report)


def _strip_headers(text: Any) -> str:
    """Whole text with 'FINAL REPORT' and similar header labels removed, whitespace collapsed."""
    cleaned = clean_text(text)
    if not cleaned:
        return ""
    return clean_text(re.sub(r"(?i)\bfinal report\b", " ", cleaned))
