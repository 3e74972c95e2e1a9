"""Label sets and aggregation of mentions into per-report labels.

Per report and label: 1 if any mapped mention is present, else -1 if any is uncertain, else 0
if any is absent, else NaN (not mentioned) -- the CheXpert labeler's aggregation (Irvin et
al. 2019, sec. "Labeler: aggregation"). Derived labels (`normal`, `No Finding`) follow their
rule in the label-set file.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

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

    Non-text entries (NaN, None) give an all-NaN row (derived labels aside).
    """
    onto = onto or load_ontology()
    labelset = onto.label_set(label_set)
    texts = list(texts)
    rows = [aggregate(analyse(t, onto), labelset, onto)
            for t in tqdm(texts, desc=f"OBER {label_set}", unit="report", disable=not progress)]
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(labelset.labels))
    return pd.DataFrame(data, columns=labelset.labels, index=index if index is not None else None)
