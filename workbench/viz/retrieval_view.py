"""Retrieval inspector: a query (free text or a study's image) -> the top-K candidates.

Ranks follow the evaluation suite's definition exactly (`workbench.eval.retrieval_metrics`):
rank = 1 + the number of candidates scoring strictly higher than the best-scoring true match,
where a candidate is a true match when it is the query's own study or carries the very same
report text (duplicate texts are not punished). What the inspector shows is what the leaderboard
counted.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from workbench.eval.retrieval import l2_normalize
from workbench.viz.report_view import highlighted_report


def rank_of_best_match(scores: np.ndarray, true_mask: np.ndarray) -> Optional[int]:
    """1 + candidates scoring strictly higher than the best true match; None without a true match."""
    scores = np.asarray(scores, dtype=np.float32)
    true_mask = np.asarray(true_mask, dtype=bool)
    if not true_mask.any():
        return None
    best_true = scores[true_mask].max()
    return int(1 + np.sum(scores > best_true))


def true_matches(study_ids: Sequence[str], texts: Sequence[str], query_index: int) -> np.ndarray:
    """Candidates that count as the query study's true match: the same study or an identical report."""
    ids = np.asarray([str(s) for s in study_ids])
    reports = np.asarray([str(t) for t in texts])
    return (ids == ids[query_index]) | (reports == reports[query_index])


def all_ranks(image_emb: np.ndarray, text_emb: np.ndarray, study_ids: Sequence[str],
              texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every study's image->text and text->image rank by cosine similarity, one query at a time as
    the inspector does (embeddings normalised as `retrieval_metrics` normalises them)."""
    image_emb, text_emb = l2_normalize(image_emb), l2_normalize(text_emb)
    i2t = np.empty(len(study_ids), dtype=np.int64)
    t2i = np.empty(len(study_ids), dtype=np.int64)
    for q in range(len(study_ids)):
        match = true_matches(study_ids, texts, q)
        i2t[q] = rank_of_best_match(text_emb @ image_emb[q], match)
        t2i[q] = rank_of_best_match(image_emb @ text_emb[q], match)
    return i2t, t2i


@dataclass
class Hit:
    """One retrieved candidate."""

    position: int  # 1-based place in the top-K list
    index: int  # row of the candidate in the session
    study_id: str
    score: float
    report: str
    is_true_match: bool


@dataclass
class RetrievalResult:
    """Top-K candidates of one query and, when the query has one, the rank of its true match."""

    kind: str  # "text->image" or "image->text"
    query: str  # the query text, or the query study's id
    hits: List[Hit] = field(default_factory=list)
    true_rank: Optional[int] = None
    query_index: Optional[int] = None  # the query study's row for image queries


def thumbnail_uri(image: np.ndarray, size: int = 96) -> str:
    """A small PNG data URI of a uint8 image (a volume shows its middle axial slice)."""
    from PIL import Image

    from workbench.viz.heatmaps import axial_slice

    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = np.ascontiguousarray(axial_slice(arr, arr.shape[-1] // 2))
    pil = Image.fromarray(arr.astype(np.uint8))
    pil.thumbnail((size, size))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class RetrievalInspector:
    """Top-K retrieval over a session's studies, with the eval suite's rank of the true match."""

    def __init__(self, session) -> None:
        self.session = session
        self.study_ids = session.study_ids()
        self.texts = [str(t) for t in session.frame["report"]]
        # cosine scores, exactly as the evaluation suite ranks (float64 unit rows)
        self.image_emb, self.text_emb = l2_normalize(session.image_emb), l2_normalize(session.text_emb)

    def query_text(self, text: str, k: int = 5) -> RetrievalResult:
        """Free text -> images. Studies whose report is exactly this text are its true match."""
        from workbench.eval.embed import embed_texts

        query = l2_normalize(embed_texts(self.session.model, [text]))[0]
        scores = self.image_emb @ query
        match = np.asarray([t == text for t in self.texts])
        return self._result("text->image", text, scores, match, k)

    def query_image(self, study: int | str, k: int = 5) -> RetrievalResult:
        """A study's image -> reports. Its own report (and identical texts) are the true match."""
        q = self.session.index_of(study) if isinstance(study, str) else int(study)
        scores = self.text_emb @ self.image_emb[q]
        result = self._result("image->text", self.study_ids[q], scores, true_matches(self.study_ids, self.texts, q), k)
        result.query_index = q
        return result

    def query_report(self, study: int | str, k: int = 5) -> RetrievalResult:
        """A study's report -> images (the eval suite's text->image direction, same rank)."""
        q = self.session.index_of(study) if isinstance(study, str) else int(study)
        scores = self.image_emb @ self.text_emb[q]
        result = self._result("text->image", self.texts[q], scores, true_matches(self.study_ids, self.texts, q), k)
        result.query_index = q
        return result

    def _result(self, kind: str, query: str, scores: np.ndarray, match: np.ndarray, k: int) -> RetrievalResult:
        k = max(1, min(int(k), len(scores)))
        order = np.argsort(-scores, kind="stable")[:k]
        hits = [Hit(position=p + 1, index=int(i), study_id=self.study_ids[i], score=float(scores[i]),
                    report=self.texts[i], is_true_match=bool(match[i])) for p, i in enumerate(order)]
        return RetrievalResult(kind=kind, query=query, hits=hits, true_rank=rank_of_best_match(scores, match))

    def ranks(self) -> tuple[np.ndarray, np.ndarray]:
        """(image->text, text->image) rank of every inspected study."""
        return all_ranks(self.image_emb, self.text_emb, self.study_ids, self.texts)

    def to_html(self, result: RetrievalResult, thumbnails: bool = True, highlight: bool = True) -> str:
        """Results as an HTML table: thumbnail, score, report with OBER highlights, true match marked."""
        if result.kind == "image->text" and result.query_index is not None and thumbnails:
            head = (f"<p>Query image of study <b>{html.escape(result.query)}</b>: "
                    f"<img src='{thumbnail_uri(self.session.display_image(result.query_index))}' "
                    f"style='vertical-align:middle'/></p>")
        else:
            head = f"<p>Query text: <i>{html.escape(result.query)}</i></p>"
        rank = (f"rank of the true match: <b class='wb-true-rank'>{result.true_rank}</b> of {len(self.study_ids)}"
                if result.true_rank is not None else "no study has exactly this text (no true match to rank)")
        rows = []
        for hit in result.hits:
            mark = "&#10004; true match" if hit.is_true_match else ""
            style = "background:#e8f5e9;" if hit.is_true_match else ""
            thumb = (f"<img src='{thumbnail_uri(self.session.display_image(hit.index))}'/>" if thumbnails else "")
            report = highlighted_report(hit.report) if highlight else html.escape(hit.report)
            rows.append(f"<tr style='{style}'><td>{hit.position}</td><td>{thumb}</td><td>{hit.score:.3f}</td>"
                        f"<td>{html.escape(hit.study_id)}<br/><b>{mark}</b></td>"
                        f"<td style='text-align:left;max-width:520px'>{report}</td></tr>")
        table = ("<table class='wb-retrieval'><tr><th>#</th><th>image</th><th>score</th><th>study</th>"
                 f"<th>report</th></tr>{''.join(rows)}</table>")
        return f"<div>{head}<p>{result.kind}, top {len(result.hits)}; {rank}</p>{table}</div>"
