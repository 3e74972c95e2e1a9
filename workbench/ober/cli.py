"""`python -m workbench.ober`: label a table of reports (the seed's `run_ober.py`, rebuilt).

    python -m workbench.ober --input reports.csv.gz --output labels.parquet \\
        --label-set chestxray14 --id-column uid --text-columns findings,impression --workers 2

IN and OUT may be .csv, .csv.gz or .parquet. OUT keeps the id column and adds one column per
label (1 / 0 / -1 / empty) and `entities` (JSON). When IN is a run folder's manifest.parquet
(or any manifest), OUT is in the `ober.parquet` format (study_id, subject_id, split, labels,
entities, findings).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd

from workbench.io import atomic_path
from workbench.ober.ontology import load_ontology
from workbench.ober.study import label_manifest, run_reports

SUFFIXES = (".csv", ".csv.gz", ".parquet")


class OberInputError(ValueError):
    """Input the labeler cannot read; the message names the file and the fix."""


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
    """Label a generic report table: id column + label columns + `entities` JSON."""
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
    data, entities, _ = run_reports(texts, label_set, with_findings=False, workers=workers, progress=progress)
    labels = load_ontology().label_set(label_set).labels
    out = pd.DataFrame({id_column: df[id_column].to_numpy()})
    out = pd.concat([out, pd.DataFrame(data, columns=labels)], axis=1)
    out["entities"] = entities
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
    print(f"[ober] {len(out)} reports -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
