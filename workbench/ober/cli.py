"""`python -m workbench.ober`: label a table of reports (the seed's `run_ober.py`, rebuilt).

    python -m workbench.ober --input reports.csv.gz --output labels.parquet \\
        --label-set chestxray14 --id-column uid --text-columns findings,impression --workers 2

IN and OUT may be .csv, .csv.gz or .parquet. OUT keeps the id column and adds one column per
label (1 / 0 / -1 / empty) and `entities` (JSON). When IN is a run folder's manifest.parquet
(or any manifest), OUT is in the `ober.parquet` format (study_id, subject_id, split, labels,
entities, findings).

Before any labelling the output is checked: a supported suffix, an existing writable folder,
and not the input itself (labels written over the reports would destroy them). Empty reports
get no labels and are counted in the closing line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import pandas as pd

from workbench.data.skips import SkipCounter, format_skips
from workbench.io import atomic_path
from workbench.ober.ontology import load_ontology
from workbench.ober.study import label_manifest, run_reports

SUFFIXES = (".csv", ".csv.gz", ".parquet")


class OberInputError(ValueError):
    """Input the labeler cannot read; the message names the file and the fix."""


class OutputPathError(ValueError):
    """An output path a run must not write to; the message names the path and the fix."""


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links, case-insensitive file systems
    except OSError:
        return False


def check_output_path(output: str | Path, reads: Iterable[str | Path | None], suffixes: Sequence[str],
                      option: str = "--output") -> Path:
    """Refuse an output before any work is done, with one sentence naming the path.

    Refused: a suffix none of `suffixes` ends, a path that is (or links to) a file the run
    reads (`reads`: writing it would replace the input), a folder that is missing or not
    writable (found only at the end, it would cost the whole run), a path that is a folder.
    Writability is tried with a real temporary file, which also holds for root and for
    read-only mounts.
    """
    out = Path(output)
    if not out.name.lower().endswith(tuple(suffixes)):
        raise OutputPathError(f"{out}: unsupported output type; give {option} a name ending in "
                              f"{', '.join(suffixes)}.")
    for src in reads:
        if src is not None and _same_file(out, Path(src)):
            raise OutputPathError(f"{out}: the output is the input {src} itself, which writing would destroy; "
                                  f"give {option} another file.")
    folder = out.parent
    if not folder.is_dir():
        raise OutputPathError(f"{out}: the folder {folder} does not exist; create it or give {option} "
                              "a path in an existing folder.")
    if out.is_dir():
        raise OutputPathError(f"{out}: this is a folder; give {option} a file name in it.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"{out}: the folder {folder} is not writable ({exc.strerror}); "
                              f"give {option} a path in a folder you can write.") from None
    return out


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".csv.gz", ".csv", ".parquet"):
        if name.endswith(s):
            return s
    return ""


def read_table(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read .csv / .csv.gz / .parquet; any failure becomes one OberInputError naming the fix."""
    path = Path(path)
    kind = _suffix(path)
    if not kind:
        raise OberInputError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}.")
    if not path.is_file():
        raise OberInputError(f"{path}: no such file; check the --input path.")
    if path.stat().st_size == 0:
        raise OberInputError(f"{path}: the file is empty (0 bytes); give a table with a header row and "
                             "one report per row.")
    try:
        if kind == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, encoding=encoding, dtype=str, keep_default_na=True)
    except UnicodeDecodeError as exc:
        raise OberInputError(f"{path}: not valid {encoding} text (byte {exc.start}); re-save it as UTF-8 "
                             f"or pass --encoding (e.g. latin-1).") from exc
    except pd.errors.EmptyDataError as exc:
        raise OberInputError(f"{path}: the file is empty; give a table with a header row and one report per row.") from exc
    except Exception as exc:  # noqa: BLE001 - parquet / csv parser errors have many types
        raise OberInputError(f"{path}: cannot be read as {kind} ({type(exc).__name__}: {exc}); "
                             f"check the file is a valid {kind}.") from exc
    if len(df) == 0:
        raise OberInputError(f"{path}: the table has no rows; give at least one report.")
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically as .csv / .csv.gz / .parquet (by the name)."""
    path = Path(path)
    kind = _suffix(path)
    if not kind:
        raise OberInputError(f"{path}: unsupported output type; use one of {', '.join(SUFFIXES)}.")
    with atomic_path(path) as tmp:
        if kind == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, compression="gzip" if kind == ".csv.gz" else None)
    return path


def is_manifest(df: pd.DataFrame, path: Path) -> bool:
    return path.name == "manifest.parquet" or {"study_id", "subject_id", "split", "report"} <= set(df.columns)


def label_table(df: pd.DataFrame, label_set: str, id_column: str, text_columns: Sequence[str],
                workers: int = 1, progress: bool = True, source: str = "input") -> pd.DataFrame:
    """Label a generic report table: id column + label columns + `entities` JSON.

    Empty reports (every text column blank or NaN) are counted in `attrs["skips"]`.
    """
    missing = [c for c in [id_column, *text_columns] if c not in df.columns]
    if missing:
        raise OberInputError(f"{source}: missing columns {missing}; it has {list(df.columns)}. "
                             f"Pass --id-column / --text-columns naming existing columns.")
    if len(text_columns) == 1:
        texts = [t if isinstance(t, str) else None for t in df[text_columns[0]]]
    else:
        texts = []
        for row in zip(*(df[c] for c in text_columns)):
            parts = [p for p in row if isinstance(p, str) and p.strip()]
            texts.append("\n\n".join(p.strip() for p in parts) if parts else None)
    skips = SkipCounter()
    data, entities, _ = run_reports(texts, label_set, with_findings=False, workers=workers, progress=progress,
                                    skips=skips, ids=df[id_column].astype(str).tolist())
    labels = load_ontology().label_set(label_set).labels
    out = pd.DataFrame({id_column: df[id_column].to_numpy()})
    out = pd.concat([out, pd.DataFrame(data, columns=labels)], axis=1)
    out["entities"] = entities
    out.attrs["skips"] = skips.as_dict()
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.ober", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="reports table (.csv, .csv.gz, .parquet) or manifest.parquet")
    parser.add_argument("--output", required=True, help="output table (.csv, .csv.gz, .parquet)")
    parser.add_argument("--label-set", default="chestxray14", help="chexpert14 | chestxray14 | ctrate18 | demo")
    parser.add_argument("--id-column", default="uid")
    parser.add_argument("--text-columns", default="findings,impression",
                        help="comma-separated columns joined (blank line between) into the report text")
    parser.add_argument("--workers", type=int, default=1, help="processes for large inputs")
    parser.add_argument("--encoding", default="utf-8", help="CSV text encoding")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        load_ontology().label_set(args.label_set)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    try:
        check_output_path(args.output, [args.input], SUFFIXES)
        df = read_table(args.input, args.encoding)
        if is_manifest(df, Path(args.input)):
            out = label_manifest(df, args.label_set, workers=args.workers, progress=not args.no_progress)
        else:
            cols = [c.strip() for c in args.text_columns.split(",") if c.strip()]
            out = label_table(df, args.label_set, args.id_column, cols, workers=args.workers,
                              progress=not args.no_progress, source=str(args.input))
        write_table(out, args.output)
    except (OberInputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    skipped = out.attrs.get("skips", {})
    note = f"; not labelled (all labels empty): {format_skips(skipped)}" if skipped else ""
    print(f"[ober] {len(out)} reports -> {args.output}{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
