"""Atomic file writing: an interrupted run never leaves a half-written artifact behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, List

# `atomic_path`'s temporary names: ".<name>.<8 random chars from mkstemp>.tmp<name's suffixes>"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>.*)$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the final suffix(es) so writers that infer a format from the
    name (pandas' compression, `to_parquet`) behave as for the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def is_atomic_temp(name: str) -> bool:
    """Whether a file name is one of `atomic_path`'s temporary names."""
    match = _TEMP_NAME.match(name)
    return bool(match) and match["suffix"] == "".join(Path(match["name"]).suffixes)


def remove_orphaned_temps(folder: str | os.PathLike) -> List[Path]:
    """Delete the temporary files that writes killed before their rename left in `folder`
    (not recursive); returns what was removed. Call it only where no write is in flight, e.g.
    when the one process that writes a folder starts."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if is_atomic_temp(entry.name) and (entry.is_file() or entry.is_symlink()):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON (sorted keys, so diffs between runs are readable)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_figure_atomic(fig: Any, path: str | os.PathLike, dpi: int = 120, close: bool = True) -> Path:
    """Save a matplotlib figure as PNG through a temporary file, then (by default) close it so
    notebooks that save many figures do not pile them up in memory."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return Path(path)
