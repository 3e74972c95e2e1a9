"""ASG's label-guided parts (Li et al. 2024, Sec. 3.3): image tag recognition (IRL) and
soft-label alignment of images and reports (ERL).

IRL: one learnable query per entity label is decoded over the image's patch tokens by a
small transformer decoder (as Query2Label / ASG's IRL head) and classified with BCE against
the study's entity labels. ERL: studies that share findings should not be pure negatives;
the target distribution over reports for image i is softmax_j(cos(l_i, l_j) / tau) of the
label vectors, matched by KL to softmax_j(s(image_i, report_j)).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TagQueryDecoder(nn.Module):
    """Learnable tag queries [L, dim] cross-attending to patch tokens -> one logit per tag."""

    def __init__(self, num_tags: int, token_dim: int, dim: int = 128, num_layers: int = 1, num_heads: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError("The tag decoder needs at least one entity label column (label_<Name>).")
        heads = max(h for h in range(1, num_heads + 1) if dim % h == 0)
        self.queries = nn.Parameter(torch.randn(num_tags, dim) * 0.02)
        self.memory_proj = nn.Linear(token_dim, dim)
        layer = nn.TransformerDecoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(dim))
        self.classifier = nn.Linear(dim, 1)

    def forward(self, patch_tokens: Tensor) -> Tensor:
        """patch_tokens [B, N, token_dim] -> logits [B, L]."""
        memory = self.memory_proj(patch_tokens)
        queries = self.queries.unsqueeze(0).expand(patch_tokens.shape[0], -1, -1)
        return self.classifier(self.decoder(queries, memory)).squeeze(-1)


def tag_targets(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Labels in the manifest's coding (1 present, 0 absent, -1 uncertain, NaN unmentioned) ->
    (targets in {0, 1}, weights): unmentioned counts as absent, uncertain is left out."""
    labels = labels.float()
    targets = (labels == 1).float()
    weights = (labels != -1).float()  # NaN != -1 is True: unmentioned is a negative
    return targets, weights


def tag_bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of tag logits [B, L] against entity labels [B, L] (uncertain masked)."""
    targets, weights = tag_targets(labels)
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (loss * weights).sum() / weights.sum().clamp_min(1.0)


def label_similarity(labels: Tensor) -> Tensor:
    """Cosine similarity of studies' positive-finding vectors [B, L] -> [B, B]. A study with no
    positive finding gets a 'no finding' indicator, so normal studies resemble each other."""
    positives, _ = tag_targets(labels)
    normal = (positives.sum(-1, keepdim=True) == 0).float()
    vectors = F.normalize(torch.cat([positives, normal], dim=-1), dim=-1)
    return vectors @ vectors.t()


def soft_label_alignment_loss(image_emb: Tensor, text_emb: Tensor, labels: Tensor, logit_scale: Tensor | float,
                              target_temperature: float = 0.1, label_sim: Optional[Tensor] = None) -> Tensor:
    """KL(target || prediction), averaged over both directions (image->reports, report->images).

    prediction_i = softmax_j(exp(logit_scale) * cos(image_i, text_j)); target_i =
    softmax_j(cos(l_i, l_j) / target_temperature). Zero when the image-report similarities
    reproduce the label similarities.
    """
    sim = label_similarity(labels) if label_sim is None else label_sim
    targets = (sim.float() / target_temperature).softmax(-1)
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=image_emb.device).exp().clamp(max=100.0)
    logits = scale * F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).t()
    i2t = F.kl_div(logits.log_softmax(-1), targets, reduction="batchmean")
    # label similarity is symmetric, so report j's target over images is row j of `targets`
    t2i = F.kl_div(logits.t().log_softmax(-1), targets, reduction="batchmean")
    return 0.5 * (i2t + t2i)
