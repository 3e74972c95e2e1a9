"""OBER: ontology-based entity and meta-entity recognition over radiology reports.

MedTrim (sec. "Ontology-based entity recognition") labels each report's findings with their
meta-entities before mining triplets; this is that stage, rebuilt: an ontology shipped as
data (`ontology/*.yaml`), one compiled regex pass per report, NegEx/ConText-style negation
and uncertainty scopes, severity / location / change normalisation, label sets with each
gold's conventions as data, and scoring against gold labels.

    >>> from workbench.ober import extract, label_reports
    >>> [(e.concept, e.assertion) for e in extract("No effusion or pneumothorax. Mild cardiomegaly.")]
    [('effusion', 'absent'), ('pneumothorax', 'absent'), ('cardiomegaly', 'present')]
"""

from workbench.ober.extractor import Entity, extract
from workbench.ober.html import highlight_html, legend_html
from workbench.ober.labels import get_label_set, label_reports, list_label_sets
from workbench.ober.ontology import OntologyError, load_ontology
from workbench.ober.scoring import evaluate
from workbench.ober.study import join_manifest, label_manifest, study_findings

__all__ = [
    "Entity", "extract", "label_reports", "evaluate", "study_findings", "highlight_html", "legend_html",
    "label_manifest", "join_manifest", "get_label_set", "list_label_sets", "load_ontology", "OntologyError",
]
