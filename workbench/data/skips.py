"""Per-reason counting of bad input, so a broken file costs one study and a visible line.

Real exports always hold a few broken files (a truncated JPEG, a NaN report, a stray byte in a
legacy encoding). By default a reader skips such a study, logs the first few cases and counts
the rest per reason; `strict=True` turns the first one into an error naming the file and the
fix. Some problems are repaired rather than dropped (a report with a few non-UTF-8 bytes is
decoded with a fallback): those are counted as *kept* reasons, never raised.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Dict, Mapping

import pandas as pd

log = logging.getLogger("workbench.data")

# Reason -> how to fix it (shown in strict-mode errors).
SKIP_REASONS: Dict[str, str] = {
    "missing_image": "restore the image file or remove the study from the source listing",
    "empty_image_file": "the file has zero bytes; re-download or re-export it",
    "unreadable_image": "the image cannot be decoded (corrupt or truncated); re-export it",
    "oversized_image": "the image is larger than Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS); "
                       "downscale it, or raise that limit if the file is trusted",
    "unreadable_volume": "the volume cannot be read (corrupt or truncated NIfTI/DICOM); re-export it",
    "missing_report": "add the report file/row for this study or drop the study",
    "empty_report": "the report is empty or NaN; fill in FINDINGS/IMPRESSION or drop the study",
    "duplicate_study": "two sources give the same study id; remove the duplicate",
    "unreadable_dicom": "the DICOM file cannot be parsed by pydicom; re-export it",
    "missing_metadata": "add the volume's row (RescaleSlope, RescaleIntercept, XYSpacing, ZSpacing) to the metadata table",
    "duplicate_volume": "one volume name sits in several folders and the report table's path does not say which; "
                        "remove the copy or give the full path in the report table",
}
# Reasons for which the study is repaired and kept (counted, never raised).
KEPT_REASONS: Dict[str, str] = {
    "non_utf8_text": "text decoded with a cp1252/latin-1 fallback for a few bytes",
    "image_absent_kept": "no image folder given: the report is kept without an image",
    "subject_from_filename": "the subject regex did not match: the file stem is the subject id",
    "official_split_conflict": "one subject had several official splits: the strictest (test > val > train) is used",
    "nan_voxels_repaired": "NaN voxels were set to the window's lower bound (air) before caching",
    "volume_4d_first_kept": "a 4D NIfTI (time or channel axis): its first 3D volume is cached",
}


class BadInputError(ValueError):
    """A bad input file met in strict mode; the message names the file, the problem and the fix."""


class SkipCounter:
    """Counts skipped (and repaired-but-kept) studies per reason; raises on skips when strict."""

    def __init__(self, strict: bool = False, log_first: int = 3) -> None:
        self.strict = strict
        self.log_first = log_first
        self.skipped: Counter[str] = Counter()
        self.kept: Counter[str] = Counter()
        self.examples: Dict[str, str] = {}

    def skip(self, reason: str, path: object, detail: str = "") -> None:
        """Record a dropped study; in strict mode raise instead."""
        fix = SKIP_REASONS.get(reason, "")
        message = f"{path}: {reason.replace('_', ' ')}" + (f" ({detail})" if detail else "") + (f"; fix: {fix}" if fix else "")
        if self.strict:
            raise BadInputError(message + ". (Pass strict=False to skip such studies and count them.)")
        self.skipped[reason] += 1
        self.examples.setdefault(reason, str(path))
        if self.skipped[reason] <= self.log_first:
            log.warning("skipping study: %s", message)

    def keep(self, reason: str, path: object, detail: str = "") -> None:
        """Record a repaired problem; the study stays in the manifest."""
        self.kept[reason] += 1
        self.examples.setdefault(reason, str(path))
        if self.kept[reason] <= self.log_first:
            log.info("kept with repair (%s): %s %s", reason, path, detail)

    def merge(self, other: "SkipCounter | Mapping[str, int]") -> None:
        """Add another counter's counts (or an `attrs['skips']`-style dict) into this one."""
        if isinstance(other, SkipCounter):
            self.skipped.update(other.skipped)
            self.kept.update(other.kept)
            for k, v in other.examples.items():
                self.examples.setdefault(k, v)
            return
        for reason, count in other.items():
            (self.kept if reason in KEPT_REASONS else self.skipped)[reason] += int(count)

    def as_dict(self) -> Dict[str, int]:
        """reason -> count, skipped and kept reasons together (what `df.attrs['skips']` holds)."""
        out = {k: int(v) for k, v in sorted(self.skipped.items()) if v}
        out.update({k: int(v) for k, v in sorted(self.kept.items()) if v})
        return out

    @property
    def total_skipped(self) -> int:
        return int(sum(self.skipped.values()))


def skip_summary(source: "pd.DataFrame | Mapping[str, int] | SkipCounter") -> pd.DataFrame:
    """A table of reason, count and action (skipped / kept) from a manifest, a dict or a counter."""
    if isinstance(source, SkipCounter):
        counts = source.as_dict()
    elif isinstance(source, pd.DataFrame):
        counts = dict(source.attrs.get("skips", {}))
    else:
        counts = dict(source)
    rows = [
        {"reason": reason, "count": int(count), "action": "kept" if reason in KEPT_REASONS else "skipped",
         "meaning": KEPT_REASONS.get(reason) or SKIP_REASONS.get(reason, "")}
        for reason, count in sorted(counts.items())
    ]
    return pd.DataFrame(rows, columns=["reason", "count", "action", "meaning"])


def format_skips(counts: Mapping[str, int]) -> str:
    """One line for logs: 'missing_image=3 empty_report=1' (or 'none')."""
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"

