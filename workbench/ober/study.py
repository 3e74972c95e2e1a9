"""Per-study output: label columns, the entities JSON and the findings structure the miner reads.

`findings` (MedTrim's OBER output, sec. "Triplet mining"): label -> {assertion, severity,
location, source} over present and (flagged) uncertain findings. Where the dataset ships
its own labels (the manifest's `label_<Name>` columns, e.g. MIMIC-CXR's CheXpert CSVs), they
are merged in: a finding only the dataset names gets source "dataset", one both name gets
"ober+dataset". The label columns themselves are OBER's alone, so scoring them against the
dataset's labels stays a test.

An empty report gets no labels (all NaN, `normal` too) and, unless the dataset's own labels say
something, no findings (null, not "{}": "{}" is a normal study, and the miner drops nulls);
it is counted as `empty_report` in `attrs["skips"]`.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench.data.labels import label_column
from workbench.data.skips import SkipCounter
from workbench.ober.context import ASSERTION_NAMES
from workbench.ober.extractor import analyse, mention_dict
from workbench.ober.labels import aggregate, count_empty_reports, is_empty_report
from workbench.ober.meta import Mention, location_terms, normalise_laterality, normalise_severity
from workbench.ober.ontology import LabelSet, Ontology, load_ontology
from workbench.ober.text import join_sections

OBER_COLUMNS = ["study_id", "subject_id", "split"]
# Inputs at least this large are split over worker processes (below, start-up costs more).
PARALLEL_MIN_REPORTS = 4000
CHUNK = 1000


def study_findings(mentions: Sequence[Mention], labelset: LabelSet, onto: Ontology,
                   dataset_labels: Optional[Mapping[str, float]] = None) -> Dict[str, Dict[str, Any]]:
    """label -> {assertion, severity: [...], location: [...], source} for one study."""
    found: Dict[str, Dict[str, Any]] = {}
    for m in mentions:
        targets = labelset.concept_labels.get(m.concept)
        if not targets or m.assertion == 0:
            continue
        assertion = 1 if (m.assertion == 1 or m.hedge in labelset.present_hedges) else -1
        sev = normalise_severity(m.severity)
        loc = location_terms(normalise_laterality(m.laterality), m.zone, m.lobe)
        for li in targets:
            name = labelset.labels[li]
            rec = found.setdefault(name, {"assertion": assertion, "severity": set(), "location": set(),
                                          "source": "ober"})
            if assertion == 1:
                rec["assertion"] = 1
            if sev:
                rec["severity"].add(sev)
            rec["location"].update(loc)
    for name, value in (dataset_labels or {}).items():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == 0:
            continue
        if name in found:
            found[name]["source"] = "ober+dataset"
        else:
            found[name] = {"assertion": 1 if value == 1 else -1, "severity": set(), "location": set(),
                           "source": "dataset"}
    return {name: {"assertion": ASSERTION_NAMES[rec["assertion"]], "severity": sorted(rec["severity"]),
                   "location": sorted(rec["location"]), "source": rec["source"]}
            for name, rec in sorted(found.items())}


def _entities_json(text: Any, mentions: Sequence[Mention], onto: Ontology) -> str:
    return json.dumps([mention_dict(m, text, onto) for m in mentions], separators=(",", ":"))


def _process(texts: Sequence[Any], label_set: str, dataset_labels: Optional[Sequence[Mapping[str, float]]],
             with_findings: bool) -> Tuple[List[List[float]], List[str], List[Optional[str]]]:
    onto = load_ontology()
    labelset = onto.label_set(label_set)
    empty_row = [math.nan] * len(labelset.labels)
    rows, entities, findings = [], [], []
    for i, text in enumerate(texts):
        empty = is_empty_report(text)
        mentions = [] if empty else analyse(text, onto)
        rows.append(list(empty_row) if empty else aggregate(mentions, labelset, onto))
        entities.append(_entities_json(text, mentions, onto))
        if with_findings:
            ds = dataset_labels[i] if dataset_labels is not None else None
            if empty and not _says_something(ds):
                findings.append(None)
            else:
                findings.append(json.dumps(study_findings(mentions, labelset, onto, ds), separators=(",", ":")))
    return rows, entities, findings


def _says_something(dataset_labels: Optional[Mapping[str, float]]) -> bool:
    """Whether a study's dataset labels hold any value (not all NaN / None)."""
    return any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in (dataset_labels or {}).values())


def _process_chunk(args: Tuple) -> Tuple[List[List[float]], List[str], List[str]]:
    return _process(*args)


def run_reports(texts: Sequence[Any], label_set: str, dataset_labels: Optional[Sequence[Mapping[str, float]]] = None,
                with_findings: bool = True, workers: int = 1, progress: bool = True,
                skips: Optional[SkipCounter] = None, ids: Optional[Sequence[Any]] = None,
                ) -> Tuple[np.ndarray, List[str], List[Optional[str]]]:
    """Labels (n x labels array), entities JSON and findings JSON (None: nothing known) for many reports.

    With `workers` > 1 and at least PARALLEL_MIN_REPORTS reports, chunks go to a process
    pool (ordered results, so the output does not depend on scheduling). Empty reports are
    counted into `skips` (named by `ids`) when given.
    """
    onto = load_ontology()
    labelset = onto.label_set(label_set)  # fail early on an unknown name
    n = len(texts)
    if skips is not None:
        count_empty_reports(texts, ids, skips)
    chunks = [(list(texts[i:i + CHUNK]), label_set,
               list(dataset_labels[i:i + CHUNK]) if dataset_labels is not None else None, with_findings)
              for i in range(0, n, CHUNK)]
    rows: List[List[float]] = []
    entities: List[str] = []
    findings: List[str] = []
    bar = tqdm(total=n, desc=f"OBER {label_set}", unit="report", disable=not progress)
    workers = max(1, min(int(workers or 1), os.cpu_count() or 1))
    if workers > 1 and n >= PARALLEL_MIN_REPORTS:
        with mp.get_context().Pool(workers) as pool:
            for r, e, f in pool.imap(_process_chunk, chunks):
                rows += r
                entities += e
                findings += f
                bar.update(len(r))
    else:
        for chunk in chunks:
            r, e, f = _process(*chunk)
            rows += r
            entities += e
            findings += f
            bar.update(len(r))
    bar.close()
    data = np.array(rows, dtype=np.float64).reshape(n, len(labelset.labels))
    return data, entities, findings


def manifest_texts(manifest: pd.DataFrame) -> List[str]:
    """The text OBER reads per study: the `report` column, else findings + impression."""
    texts = []
    reports = manifest["report"] if "report" in manifest.columns else [None] * len(manifest)
    for rep, fin, imp in zip(reports, manifest.get("findings", [None] * len(manifest)),
                             manifest.get("impression", [None] * len(manifest))):
        if isinstance(rep, str) and rep.strip():
            texts.append(rep)
        else:
            texts.append(join_sections(fin if isinstance(fin, str) else "", imp if isinstance(imp, str) else ""))
    return texts


def label_manifest(manifest_df: pd.DataFrame, label_set: str = "demo", merge_dataset_labels: bool = True,
                   workers: int = 1, progress: bool = True) -> pd.DataFrame:
    """The `ober.parquet` table for a manifest: study_id, subject_id, split, one column per
    label (1 / 0 / -1 / NaN), `entities` (JSON list of mentions) and `findings` (JSON; null
    for an empty report the dataset's labels say nothing about). Empty reports are counted in
    `attrs["skips"]`.

    Used by notebook 01 and by the CLI when its input is a manifest.
    """
    missing = [c for c in ("study_id",) if c not in manifest_df.columns]
    if missing or not ({"report", "findings", "impression"} & set(manifest_df.columns)):
        raise ValueError(f"manifest lacks {missing or ['report (or findings/impression)']}; "
                         f"build it with workbench.data.build_manifest (notebook 00).")
    labelset = load_ontology().label_set(label_set)
    dataset_labels = None
    if merge_dataset_labels:
        cols = {name: label_column(name) for name in labelset.labels if label_column(name) in manifest_df.columns}
        if cols:
            values = {name: pd.to_numeric(manifest_df[col], errors="coerce").to_numpy() for name, col in cols.items()}
            dataset_labels = [{name: float(v[i]) for name, v in values.items()} for i in range(len(manifest_df))]
    skips = SkipCounter()
    data, entities, findings = run_reports(manifest_texts(manifest_df), label_set, dataset_labels,
                                           with_findings=True, workers=workers, progress=progress, skips=skips,
                                           ids=manifest_df["study_id"].astype(str).tolist())
    out = pd.DataFrame({c: manifest_df[c].astype(str).to_numpy() if c in manifest_df.columns else "" for c in OBER_COLUMNS})
    labels = pd.DataFrame(data, columns=labelset.labels)
    out = pd.concat([out, labels], axis=1)
    out["entities"] = entities
    out["findings"] = findings
    out.attrs["skips"] = skips.as_dict()
    return out


def join_manifest(ober: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """Give an OBER table without subject_id / split those columns from the manifest (by study_id)."""
    need = [c for c in ("subject_id", "split") if c not in ober.columns]
    if not need:
        return ober
    extra = manifest[["study_id", *need]].astype({"study_id": str})
    return ober.astype({"study_id": str}).merge(extra, on="study_id", how="left")
