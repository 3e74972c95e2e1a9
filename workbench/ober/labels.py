"""Label sets and aggregation of mentions into per-report labels.

Per report and label: 1 if any mapped mention is present, else -1 if any is uncertain, else 0
if any is absent, else NaN (not mentioned) -- the CheXpert labeler's aggregation (Irvin et
al. 2019, sec. "Labeler: aggregation"). Derived labels (`normal`, `No Finding`) follow their
rule in the label-set file.

An empty report (NaN, None, blank text) states nothing, so it gets no label at all, derived
ones included: reading "no abnormal mention" as `normal` = 1 would turn a missing report into
a normal study. Such reports are counted as `empty_report` (`workbench.data.skips`) in the
result's `attrs["skips"]`, never silently labelled.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench.data.skips import SkipCounter
from workbench.ober.extractor import analyse
from workbench.ober.meta import Mention
from workbench.ober.ontology import LabelSet, Ontology, load_ontology

NAN = math.nan
# Precedence of label values when several mentions map to one label.
_RANK = {1.0: 3, -1.0: 2, 0.0: 1}


def list_label_sets() -> List[str]:
    """Names of the label sets shipped with the ontology."""
    return load_ontology().label_set_names()


def get_label_set(name: str) -> LabelSet:
    """A label set by name; an unknown name fails with the list of known ones."""
    return load_ontology().label_set(name)


def is_empty_report(text: Any) -> bool:
    """Whether a report holds no text to label (NaN, None, not a string, blank)."""
    return not isinstance(text, str) or not text.strip()


def count_empty_reports(texts: Sequence[Any], ids: Optional[Sequence] = None,
                        skips: Optional[SkipCounter] = None) -> SkipCounter:
    """Count the empty reports of `texts` as `empty_report` (named by `ids`, else by row number)."""
    skips = skips if skips is not None else SkipCounter()
    for i, text in enumerate(texts):
        if is_empty_report(text):
            skips.skip("empty_report", f"report {ids[i] if ids is not None else i}",
                       "left unlabelled: every label, normal included, is empty")
    return skips


def aggregate(mentions: Sequence[Mention], labelset: LabelSet, onto: Ontology) -> List[float]:
    """One report's label values (1 / 0 / -1 / NaN) from its mentions."""
    row = [NAN] * len(labelset.labels)
    mapping = labelset.concept_labels
    abnormal = False
    kinds = onto.concept_kind
    present_hedges = labelset.present_hedges
    for m in mentions:
        a = m.assertion
        if a and kinds[m.concept] == "finding":
            abnormal = True
        targets = mapping.get(m.concept)
        if targets is None:
            continue
        if a == -1 and m.hedge in present_hedges:
            a = 1
        value = float(a)
        for li in targets:
            cur = row[li]
            if cur != cur or _RANK[value] > _RANK[cur]:
                row[li] = value
    for li, rule in labelset.rules.items():
        if rule.ignore:
            ignored = [labelset.labels.index(x) for x in rule.ignore]
            abnormal_here = any(kinds[m.concept] == "finding" and m.assertion
                                and not all(t in ignored for t in mapping.get(m.concept, (-1,)))
                                for m in mentions)
        else:
            abnormal_here = abnormal
        row[li] = (NAN if rule.otherwise is None else rule.otherwise) if abnormal_here else 1.0
    return row


def label_reports(texts: Iterable[Any], label_set: str = "chestxray14", index: Optional[Sequence] = None,
                  progress: bool = False, onto: Optional[Ontology] = None) -> pd.DataFrame:
    """One row per report, one column per label: 1 present, 0 absent, -1 uncertain, NaN unmentioned.

    Empty reports (NaN, None, blank) give an all-NaN row, derived labels included, and are
    counted in the result's `attrs["skips"]` ({"empty_report": n}).
    """
    onto = onto or load_ontology()
    labelset = onto.label_set(label_set)
    texts = list(texts)
    empty_row = [NAN] * len(labelset.labels)
    rows = [list(empty_row) if is_empty_report(t) else aggregate(analyse(t, onto), labelset, onto)
            for t in tqdm(texts, desc=f"OBER {label_set}", unit="report", disable=not progress)]
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(labelset.labels))
    out = pd.DataFrame(data, columns=labelset.labels, index=index if index is not None else None)
    out.attrs["skips"] = count_empty_reports(texts, list(index) if index is not None else None).as_dict()
    return out
