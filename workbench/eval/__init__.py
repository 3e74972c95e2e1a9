"""The evaluation suite every method is judged by: retrieval, class-aware retrieval, zero-shot,
linear probe, the frozen/locked baselines and the leaderboard. Knows no training method.
"""

from workbench.eval.classaware import class_aware_precision, keyword_precision  # noqa: F401
from workbench.eval.retrieval import (  # noqa: F401
    chance_retrieval_metrics,
    naive_retrieval_metrics,
    retrieval_metrics,
    retrieval_ranks,
)
from workbench.eval.stats import bootstrap_ci, roc_auc  # noqa: F401

__all__ = ["retrieval_metrics", "retrieval_ranks", "naive_retrieval_metrics", "chance_retrieval_metrics",
           "class_aware_precision", "keyword_precision", "roc_auc", "bootstrap_ci"]
