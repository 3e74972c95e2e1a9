"""Embedding map (UMAP caching, colourings), retrieval inspector (ranks = eval suite's) and report view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.viz.embedding_map import load_embedding_map, plot_embedding_map
from workbench.viz.retrieval_view import RetrievalInspector, rank_of_best_match, true_matches
from workbench.viz.session import InspectionSession, parse_splits, present_findings, select_studies

REPORTS = [
    "Small left pleural effusion.",
    "No acute cardiopulmonary process.",
    "Moderate cardiomegaly.",
    "No acute cardiopulmonary process.",  # duplicate text of study 1
    "Right upper lobe nodule.",
    "Large right pneumothorax.",
    "Mild pulmonary edema.",
    "Small left pleural effusion.",  # duplicate text of study 0
]


def _frame(n: int = len(REPORTS)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "study_id": [f"s{i}" for i in range(n)],
        "report": [REPORTS[i % len(REPORTS)] for i in range(n)],
        "modality": ["cxr"] * n,
        "split": ["val"] * (n - 2) + ["test"] * 2,
        "label_Effusion": rng.choice([1.0, 0.0, -1.0, np.nan], size=n),
        "label_Cardiomegaly": rng.choice([1.0, 0.0, np.nan], size=n),
    })


def _session(run_dir: Path, image_emb: np.ndarray, text_emb: np.ndarray, frame: pd.DataFrame) -> InspectionSession:
    """A session over given embeddings (no model: these views only read embeddings and rows)."""
    return InspectionSession(run_dir=run_dir, checkpoint=run_dir / "train" / "tiny-0", split="val", modality="cxr",
                             model=None, frame=frame, dataset=None, image_emb=image_emb, text_emb=text_emb,
                             key="k0")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_rank_is_one_plus_strictly_higher_scores_than_best_true_match():
    scores = np.array([0.9, 0.5, 0.7, 0.7, 0.1])
    assert rank_of_best_match(scores, np.array([0, 0, 1, 0, 0], bool)) == 2  # the tie at 0.7 does not count
    assert rank_of_best_match(scores, np.array([0, 1, 0, 0, 1], bool)) == 4  # best of the true matches: 0.5
    assert rank_of_best_match(scores, np.zeros(5, bool)) is None


def test_duplicate_report_texts_count_as_true_matches():
    match = true_matches([f"s{i}" for i in range(len(REPORTS))], REPORTS, 1)
    assert list(np.flatnonzero(match)) == [1, 3]


def test_retrieval_inspector_ranks_equal_the_evaluation_suite(run_dir):
    from workbench.eval import retrieval_metrics, retrieval_ranks
    from workbench.eval.retrieval import summarize_ranks

    rng = np.random.default_rng(3)
    n = 40
    frame = _frame(n)
    # Coarse values make exact score ties, the case where rank definitions usually disagree.
    image_emb = np.round(rng.normal(size=(n, 6)) * 2) / 2
    text_emb = image_emb + np.round(rng.normal(size=(n, 6))) / 2
    inspector = RetrievalInspector(_session(run_dir, image_emb, text_emb, frame))
    texts = list(frame["report"])
    i2t, t2i = inspector.ranks()
    ref_i2t, ref_t2i = retrieval_ranks(image_emb, text_emb, text_groups=texts)
    assert np.array_equal(i2t, ref_i2t) and np.array_equal(t2i, ref_t2i)
    assert {**summarize_ranks(i2t, "i2t_"), **summarize_ranks(t2i, "t2i_")} == retrieval_metrics(
        image_emb, text_emb, text_groups=texts)
    # The per-query view reports the same rank as the table it is drawn from.
    for q in (0, 3, 17):
        assert inspector.query_image(q, k=5).true_rank == ref_i2t[q]
        assert inspector.query_report(q, k=5).true_rank == ref_t2i[q]


def test_retrieval_top_k_is_sorted_and_marks_the_true_match(run_dir):
    rng = np.random.default_rng(1)
    n = len(REPORTS)
    image_emb = _unit(rng.normal(size=(n, 8)))
    text_emb = image_emb.copy()
    text_emb[2] = _unit(rng.normal(size=(1, 8)))[0]  # study 2's report no longer matches its image
    inspector = RetrievalInspector(_session(run_dir, image_emb, text_emb, _frame()))
    result = inspector.query_image(5, k=3)
    assert [h.position for h in result.hits] == [1, 2, 3]
    assert result.hits[0].study_id == "s5" and result.hits[0].is_true_match and result.true_rank == 1
    assert all(a.score >= b.score for a, b in zip(result.hits, result.hits[1:]))
    dup = inspector.query_image(0, k=n)
    assert {h.study_id for h in dup.hits if h.is_true_match} == {"s0", "s7"}  # identical report text
    html = inspector.to_html(dup, thumbnails=False, highlight=False)
    assert html.count("true match") >= 2 and "rank of the true match" in html


def test_split_selection_and_present_findings():
    frame = _frame(20)
    rows = select_studies(frame, parse_splits("val"), "cxr", max_points=5)
    assert len(rows) == 5 and set(rows["split"]) == {"val"}
    assert list(rows["study_id"]) == list(select_studies(frame, ["val"], "cxr", 5)["study_id"])  # seeded
    assert len(select_studies(frame, parse_splits("all"), "cxr", 0)) == 20
    with pytest.raises(ValueError, match="Unknown split"):
        parse_splits("validation")
    row = pd.Series({"label_Effusion": 1.0, "label_Edema": -1.0, "label_Mass": 1.0, "report": "x"})
    assert present_findings(row) == ["Effusion", "Mass"]


@pytest.fixture(scope="module")
def computed_map(tmp_path_factory):
    """A session over three clusters of studies and its UMAP, computed once for this module."""
    rng = np.random.default_rng(0)
    n = 24
    centres = rng.normal(size=(3, 16)) * 4
    image_emb = _unit(centres[np.arange(n) % 3] + rng.normal(size=(n, 16)) * 0.3)
    text_emb = _unit(image_emb + rng.normal(size=(n, 16)) * 0.1)
    session = _session(tmp_path_factory.mktemp("run"), image_emb, text_emb, _frame(n))
    return session, load_embedding_map(session)


def test_umap_is_cached_and_the_second_call_does_not_recompute(computed_map, monkeypatch):
    import workbench.viz.embedding_map as em

    session, first = computed_map
    assert first.computed
    cached = list((session.run_dir / "inspect").glob("umap-k0-*.parquet"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    assert len(first.table) == 2 * len(session) and set(first.table["kind"]) == {"image", "report"}

    def must_not_run(*args, **kwargs):
        raise AssertionError("UMAP was recomputed although its coordinates are cached")

    monkeypatch.setattr(em, "umap_coordinates", must_not_run)
    second = load_embedding_map(session)
    assert not second.computed
    assert cached[0].stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(first.table, second.table)


def test_umap_keeps_matched_pairs_closer_than_random_pairs(computed_map):
    session, emap = computed_map
    images = emap.table[emap.table["kind"] == "image"][["x", "y"]].to_numpy()
    reports = emap.table[emap.table["kind"] == "report"][["x", "y"]].to_numpy()
    paired = np.linalg.norm(images - reports, axis=1).mean()
    shuffled = np.linalg.norm(images - np.roll(reports, 5, axis=0), axis=1).mean()
    assert paired < shuffled


def test_embedding_map_colourings_and_png(computed_map):
    session, emap = computed_map
    assert emap.colourings()[:3] == ["finding", "modality", "split"]
    assert {"assertion: Effusion", "assertion: Cardiomegaly"} <= set(emap.colourings())
    assert set(emap.table["assertion: Effusion"]) <= {"present", "absent", "uncertain", "unmentioned"}
    path = emap.save_png("assertion: Effusion", join_pairs=True)
    assert path.parent == session.run_dir / "inspect" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="choose one of"):
        plot_embedding_map(emap.table, "colour")


def test_joined_pairs_draw_one_segment_per_study(computed_map):
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    session, emap = computed_map
    fig = emap.plot("split", join_pairs=True)
    segments = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    assert len(segments) == 1 and len(segments[0].get_segments()) == len(session)
    images = emap.table[emap.table["kind"] == "image"]
    assert np.allclose(segments[0].get_segments()[0][0], images[["x", "y"]].to_numpy()[0])
    plt.close(fig)
