"""Figures for notebook 02: score histograms and a gallery of mined triplets.

The gallery shows each triplet's images and reports with OBER's entities highlighted
(`workbench.ober.highlight_html`), as one HTML block so it renders in JupyterLab and in the
executed notebook saved by papermill.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from workbench.mining.encode import EncodedStudies
from workbench.mining.similarity import ScoreWeights, pairwise_scores


def sampled_pair_scores(enc: EncodedStudies, n_studies: int = 400, scoring: str = "union",
                        weights: ScoreWeights = ScoreWeights(), seed: int = 0) -> np.ndarray:
    """Scores of all ordered pairs (a != b) of up to `n_studies` randomly chosen studies."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(enc), size=min(n_studies, len(enc)), replace=False))
    scores = pairwise_scores(enc.subset(rows), scoring=scoring, weights=weights).cpu()
    off_diagonal = ~torch.eye(len(rows), dtype=torch.bool)
    return scores[off_diagonal].numpy()


def plot_pair_score_histogram(scores: np.ndarray, threshold: float, positive_cap: float,
                              ax: Optional[plt.Axes] = None) -> plt.Figure:
    """Histogram of pairwise scores with the semi-hard threshold and the positive cap marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(scores, bins=50, range=(0, 1), color="#4c72b0")
    ax.axvline(threshold, color="#dd8452", ls="--", label=f"threshold {threshold:g}")
    ax.axvline(positive_cap, color="#c44e52", ls=":", label=f"positive cap {positive_cap:g}")
    ax.set_yscale("log")
    ax.set_xlabel("similarity score")
    ax.set_ylabel("pairs")
    ax.set_title(f"Pairwise scores of {len(scores):,} study pairs")
    ax.legend()
    return ax.figure


def plot_triplet_scores(triplets: pd.DataFrame, threshold: float, positive_cap: float,
                        ax: Optional[plt.Axes] = None) -> plt.Figure:
    """Distributions of the anchor's score with its chosen positive and negative."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(0, 1, 41)
    ax.hist(triplets["pos_score"], bins=bins, alpha=0.6, color="#55a868", label="positive")
    ax.hist(triplets["neg_score"], bins=bins, alpha=0.6, color="#c44e52", label="negative")
    ax.axvline(threshold, color="#dd8452", ls="--", label=f"threshold {threshold:g}")
    ax.axvline(positive_cap, color="#8172b3", ls=":", label=f"positive cap {positive_cap:g}")
    ax.set_xlabel("score with the anchor")
    ax.set_ylabel("triplets")
    ax.set_title(f"Chosen positives and negatives ({len(triplets):,} triplets)")
    ax.legend()
    return ax.figure


def _image_2d(path: str) -> Optional[np.ndarray]:
    """A study's image as a 2D array (middle axial slice of a volume); None if unreadable."""
    p = Path(path)
    if not p.is_file():
        return None
    name = p.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            vol = np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)
            return vol[:, :, vol.shape[2] // 2].T if vol.ndim >= 3 else vol
        if name.endswith(".dcm"):
            import pydicom

            return pydicom.dcmread(str(p)).pixel_array.astype(np.float32)
        from PIL import Image

        with Image.open(p) as img:
            return np.asarray(img.convert("L"), dtype=np.float32)
    except Exception:  # an unreadable image must not break the gallery; it shows a note instead
        return None


def _thumbnail_html(path: str, size: int = 160) -> str:
    image = _image_2d(path)
    if image is None:
        return f"<div style='width:{size}px;color:#888'>(image not readable: {html.escape(Path(path).name)})</div>"
    lo, hi = np.percentile(image, [1, 99])
    scaled = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    from PIL import Image

    img = Image.fromarray((scaled * 255).astype(np.uint8))
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return f"<img src='data:image/png;base64,{data}' style='max-width:{size}px'/>"


def _report_html(text: str, entities_json: object) -> str:
    try:
        from workbench.ober import highlight_html
    except ImportError:  # OBER absent: plain text
        return html.escape(text)
    entities = json.loads(entities_json) if isinstance(entities_json, str) and entities_json else []
    return highlight_html(text, entities)


def triplet_gallery_html(triplets: pd.DataFrame, manifest: pd.DataFrame, entity_table: pd.DataFrame,
                         n: int = 3, seed: int = 0, roles: Sequence[str] = ("anchor", "positive", "negative")) -> str:
    """HTML: `n` random triplets, one row each; per study its image, id, score and report with
    OBER's entities highlighted (the text OBER read: the manifest's report)."""
    from workbench.ober.study import manifest_texts

    if triplets.empty:
        return "<p>No triplets to show.</p>"
    picked = triplets.sample(n=min(n, len(triplets)), random_state=seed)
    man = manifest.assign(study_id=manifest["study_id"].astype(str)).set_index("study_id")
    texts = dict(zip(man.index, manifest_texts(man.reset_index())))
    entities = dict(zip(entity_table["study_id"].astype(str),
                        entity_table["entities"] if "entities" in entity_table.columns else [None] * len(entity_table)))
    rows = []
    for _, t in picked.iterrows():
        cells = []
        for role in roles:
            sid = str(t[role])
            score = "" if role == "anchor" else f" &middot; score {t['pos_score' if role == 'positive' else 'neg_score']:.3f}"
            image = _thumbnail_html(str(man.at[sid, "image_path"])) if sid in man.index else ""
            report = _report_html(texts.get(sid, ""), entities.get(sid))
            cells.append(f"<td style='vertical-align:top;width:33%;padding:6px'><b>{role}</b> {html.escape(sid)}{score}"
                         f"<br/>{image}<div style='font-size:90%;margin-top:4px'>{report}</div></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table style='border-collapse:collapse'>" + "".join(rows) + "</table>"
