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
        # mkstemp (and writers that recreate the file) make 0600; an artifact is shared like any file
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


# run folders whose writer lock this process holds (path -> depth): the lock is re-entrant
_HELD_LOCKS: dict = {}


class RunFolderBusyError(RuntimeError):
    """Another process holds a run folder's writer lock; the message names it."""


@contextlib.contextmanager
def run_folder_lock(folder: str | os.PathLike, what: str = "a writer") -> Iterator[Path]:
    """Hold `folder/.writer.lock` exclusively while preparing the run folder's shared artifacts.

    Why: two notebook-00 runs into one folder used to crash each other with cryptic errors or
    silently replace each other's manifest. The lock is an OS advisory lock (`fcntl.flock`), so
    it is released by a crash or a kill as well; a second writer fails at once naming the holder
    (its process id, host and what it does) instead of waiting. Re-entrant within a process
    (notebook 00 holds it around its record and `prepare_run_data` takes it again).
    """
    import fcntl
    import socket

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".writer.lock"
    key = str(path.resolve())
    if _HELD_LOCKS.get(key):
        _HELD_LOCKS[key] += 1
        try:
            yield path
        finally:
            _HELD_LOCKS[key] -= 1
        return
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderBusyError(f"Run folder {folder} is being written by {holder}; wait for it to finish or "
                                     "use another run_dir.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({what})")
        handle.flush()
        _HELD_LOCKS[key] = 1
        try:
            yield path
        finally:
            _HELD_LOCKS.pop(key, None)
    finally:
        handle.close()  # closing releases the lock
