"""Reading the miner's input (`ober.parquet`) and writing its output (`triplets.csv.xz`).

A study whose `findings` is missing (NaN, None, blank: OBER writes null for an empty report)
says nothing about the study; read as "no finding" it would be mined as a normal study, so
`train_rows` drops it and counts it as `missing_findings` in `attrs["skips"]`. "{}" is a
study without findings and is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from workbench.data.reports import read_csv_text
from workbench.data.skips import SkipCounter
from workbench.io import atomic_path
from workbench.mining.encode import is_missing_findings

REQUIRED = ("study_id", "findings")
JOINED = ("subject_id", "split")
TRIPLET_SUFFIXES = (".csv", ".csv.gz", ".csv.xz", ".csv.bz2")  # what write_triplets / read_triplets infer


class EntityTableError(ValueError):
    """An entity table the miner cannot use; the message names the file and the fix."""


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"No entity table at {path}; run notebooks/01_ober.ipynb (or python -m workbench.ober) first.")
    name = path.name.lower()
    if not name.endswith((".parquet", ".csv", ".csv.gz", ".csv.xz")):
        raise EntityTableError(f"{path}: unknown format; give a .parquet or .csv(.gz) table (ober.parquet).")
    if path.stat().st_size == 0:
        raise EntityTableError(f"{path}: the file is empty (0 bytes); write it again with python -m workbench.ober "
                               "(or notebooks/01_ober.ipynb).")
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"study_id": str, "subject_id": str})
    except pd.errors.EmptyDataError:
        raise EntityTableError(f"{path}: the table has no header row; write it again with python -m workbench.ober.") from None
    except Exception as exc:  # noqa: BLE001 - parquet / csv parser errors have many types
        raise EntityTableError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); check it is a valid "
                               "ober.parquet (or .csv) table.") from None


def load_entity_table(path: str | Path, manifest: str | Path | None = None) -> pd.DataFrame:
    """Read an entity table (one row per study with `study_id` and `findings`).

    Without `subject_id`/`split` columns the table is joined on `study_id` to a manifest:
    `manifest` if given, else `manifest.parquet` beside the table (the run folder's). The
    manifest's `modality` is joined too when there is one, so mining can keep to one modality.
    """
    path = Path(path)
    table = _read_table(path)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise EntityTableError(f"{path} lacks columns {missing}; the miner reads OBER's output (ober.parquet) "
                               "with study_id and findings (JSON) per study.")
    table = table.assign(study_id=table["study_id"].astype(str))
    need = [c for c in JOINED if c not in table.columns]
    manifest_path = Path(manifest) if manifest else path.parent / "manifest.parquet"
    if need and not manifest_path.is_file():
        raise EntityTableError(f"{path} lacks {need} and there is no manifest at {manifest_path} to join on "
                               "study_id; pass --manifest PATH or write subject_id/split into the table.")
    if manifest_path.is_file():
        man = pd.read_parquet(manifest_path)
        # The manifest's modality too, so mining can keep to one modality.
        join = [c for c in (*need, "modality") if c in man.columns and c not in table.columns]
        if join:
            man = man[["study_id", *join]].assign(study_id=man["study_id"].astype(str))
            table = table.merge(man, on="study_id", how="left")
        if need:
            unmatched = table[need[0]].isna()
            if unmatched.any():
                raise EntityTableError(f"{int(unmatched.sum())} studies of {path} (e.g. {table.loc[unmatched, 'study_id'].iloc[0]!r}) "
                                       f"are not in {manifest_path}; use the manifest the table was built from.")
    if table["study_id"].duplicated().any():
        dup = table.loc[table["study_id"].duplicated(), "study_id"].iloc[0]
        raise EntityTableError(f"{path} has duplicate study_id {dup!r}; one row per study.")
    return table


def train_rows(table: pd.DataFrame, modality: str = "") -> pd.DataFrame:
    """The train-split rows (of one modality when given): val/test studies are never mined
    (they would leak into training), and a CT study is never a chest X-ray's positive.

    Rows with missing findings are dropped and counted in the result's `attrs["skips"]`
    ({"missing_findings": n}; see the module docstring).
    """
    missing = [c for c in ("study_id", "subject_id", "split", "findings") if c not in table.columns]
    if missing:
        raise EntityTableError(f"entity table lacks columns {missing}; load it with load_entity_table, which "
                               "joins subject_id/split from the run's manifest.")
    keep = table["split"].astype(str) == "train"
    if modality:
        if "modality" not in table.columns:
            raise EntityTableError(f"modality {modality!r} asked for, but the entity table has no modality column; "
                                   "load it with load_entity_table beside the run's manifest, or mine all studies.")
        keep &= table["modality"].astype(str) == modality
    train = table[keep].reset_index(drop=True)
    skips = SkipCounter()
    missing = train["findings"].map(is_missing_findings).to_numpy(dtype=bool)
    for study in train.loc[missing, "study_id"]:
        skips.skip("missing_findings", f"study {study}", "no findings information (NaN); not mined as a normal study")
    train = train[~missing].reset_index(drop=True)
    train.attrs["skips"] = skips.as_dict()
    if len(train) < 2:
        dropped = f" once {int(missing.sum())} with missing findings are dropped" if missing.any() else ""
        raise EntityTableError(f"the entity table has {len(train)} train studies{f' of modality {modality!r}' if modality else ''}"
                               f"{dropped}; mining needs at least 2 (splits present: "
                               f"{sorted(table['split'].astype(str).unique())}).")
    return train


def write_triplets(triplets: pd.DataFrame, path: str | Path) -> Path:
    """Write triplets atomically; `.xz` at preset 1 (the default preset is ~10x slower for ~10% smaller)."""
    path = Path(path)
    compression: Optional[dict | str] = "infer"
    if path.name.endswith(".xz"):
        compression = {"method": "xz", "preset": 1}
    with atomic_path(path) as tmp:
        triplets.to_csv(tmp, index=False, compression=compression, float_format="%.6f")
    return path


def read_triplets(path: str | Path) -> pd.DataFrame:
    """Read a triplet CSV written by `write_triplets` (study ids as strings)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No triplets at {path}; run notebooks/02_triplet_mining.ipynb or python -m workbench.mining "
                                "into this run folder first, or set data.triplet_csv to a CSV with anchor, positive, negative.")
    members = ("anchor", "positive", "negative")
    return read_csv_text(path, required=members, table="a triplet file", dtype={c: str for c in members})
