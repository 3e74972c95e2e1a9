"""Plots and widgets for inspecting a trained run (notebook 05): embedding maps, heat maps,
retrieval and report inspectors. Sits on top of models/, eval/, ober/ and data/; knows no method.

    session = open_session(run_dir, method, split, max_points)   # encoders + embeddings, cached
    load_embedding_map(session).save_png()                        # UMAP, cached in inspect/
    AttentionInspector(session).figure(i, phrase, "similarity")   # heat maps in [0, 1]
    RetrievalInspector(session).query_text("left effusion")       # top-K, eval-suite ranks
    report_html(text)                                             # OBER entities highlighted
    finding_peak_rate(session)                                    # phrase peak inside its mask vs chance
"""

from workbench.viz.embedding_map import EmbeddingMap, load_embedding_map, plot_embedding_map, umap_coordinates
from workbench.viz.heatmaps import (
    AttentionInspector,
    PeakInMask,
    attention_rollout,
    available_methods,
    cls_attention,
    finding_peak_rate,
    grad_cam_map,
    heatmap,
    overlay_figure,
    peak_in_mask_rate,
    token_similarity_map,
)
from workbench.viz.report_view import entity_table, report_html
from workbench.viz.retrieval_view import RetrievalInspector, RetrievalResult, rank_of_best_match
from workbench.viz.session import InspectionSession, open_session

__all__ = [
    "open_session", "InspectionSession", "load_embedding_map", "EmbeddingMap", "plot_embedding_map", "umap_coordinates",
    "AttentionInspector", "heatmap", "available_methods", "attention_rollout", "cls_attention", "grad_cam_map",
    "token_similarity_map", "overlay_figure", "peak_in_mask_rate", "PeakInMask", "finding_peak_rate",
    "RetrievalInspector", "RetrievalResult", "rank_of_best_match", "report_html", "entity_table",
]
