"""MGCA-style local token-patch alignment (Wang et al. 2022, "Multi-Granularity Cross-modal
Alignment", Sec. 3.3), the base CM-CGNS builds on.

Each report token attends over the patches of ITS OWN image (and each patch over its own
report's tokens); a contrastive loss then asks every feature to be closest to its own
cross-modal counterpart: image side = patch i vs the text-attended feature of patch i among
the patches of that image; text side = token t vs the image-attended feature of token t.
The text side of CM-CGNS contrasts all tokens of the batch and adds cluster-guided negatives
(`workbench.methods.parts.clustering`).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.methods.parts.clustering import ClusterNegatives, bounded_margin_loss


class LocalCrossAttention(nn.Module):
    """Parameter-free scaled cosine attention inside each sample (MGCA Eq. 5-6).

    weights = softmax_k(cos(q_n, k_m) / temperature) over the keys of the same sample (masked
    keys excluded); output_n = sum_m weights_nm * k_m. Learnable parts are the projections in
    front of it, so the attention cannot mix samples or cheat by itself.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """queries [B, N, D], keys [B, M, D], key_mask [B, M] (True = real) -> ([B, N, D], [B, N, M])."""
        scores = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).transpose(1, 2) / self.temperature
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.bool().unsqueeze(1), float("-inf"))
        weights = scores.softmax(dim=-1)
        return weights @ keys, weights


def token_contrast(features: Tensor, counterparts: Tensor, mask: Optional[Tensor] = None,
                   temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE inside each sample between features [B, N, D] and their cross-modal
    counterparts [B, N, D]: position n is the positive of n, the sample's other positions are
    negatives (MGCA Eq. 7-8). `mask` [B, N] drops padding from rows and columns."""
    f = F.normalize(features.float(), dim=-1)
    c = F.normalize(counterparts.float(), dim=-1)
    logits = f @ c.transpose(1, 2) / temperature  # [B, N, N]
    n = logits.shape[1]
    targets = torch.arange(n, device=logits.device).expand(logits.shape[0], n)
    if mask is None:
        mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    mask = mask.bool()
    col_mask = ~mask.unsqueeze(1)
    rows = logits.masked_fill(col_mask, float("-inf"))
    cols = logits.transpose(1, 2).masked_fill(col_mask, float("-inf"))
    loss_rows = F.cross_entropy(rows[mask], targets[mask])
    loss_cols = F.cross_entropy(cols[mask], targets[mask])
    return 0.5 * (loss_rows + loss_cols)


def local_image_loss(patch_features: Tensor, text_attended_patches: Tensor, temperature: float = 0.1) -> Tensor:
    """Image side: each patch against the text-attended feature at the same patch (per image)."""
    return token_contrast(patch_features, text_attended_patches, None, temperature)


def _weighted_info_nce(anchors: Tensor, candidates: Tensor, temperature: float,
                       hard_negatives: Optional[Tensor], hard_negative_weight: float,
                       false_negatives: Optional[Tensor]) -> Tensor:
    """InfoNCE of anchors [T, D] vs candidates [T, D] (diagonal positive) with an optional extra
    hard-negative logit per anchor, counted `hard_negative_weight` times in the denominator
    (its logit gets + log w), and false-negative pairs [T, T] removed from the denominator."""
    logits = anchors @ candidates.t() / temperature
    if false_negatives is not None:
        logits = logits.masked_fill(false_negatives, float("-inf"))
    if hard_negatives is not None:
        hard = (anchors * hard_negatives).sum(-1, keepdim=True) / temperature
        logits = torch.cat([logits, hard + torch.log(torch.tensor(float(hard_negative_weight)))], dim=1)
    targets = torch.arange(anchors.shape[0], device=anchors.device)
    return F.cross_entropy(logits, targets)


def local_text_loss(token_features: Tensor, image_attended_tokens: Tensor, token_mask: Optional[Tensor] = None,
                    temperature: float = 0.1, clusters: Optional[ClusterNegatives] = None,
                    hard_negative_weight: float = 3.0, max_tokens: int = 4096,
                    margin: Tuple[float, float] = (0.2, 0.5)) -> Tuple[Tensor, Optional[Tensor]]:
    """Text side of CM-CGNS: every real token of the batch against every image-attended token.

    Returns (contrastive loss, false-negative margin loss or None). With `clusters` started
    (see `ClusterNegatives.observe`), each anchor also gets its nearest OTHER cluster's
    centroid as a weighted hard negative, and pairs whose image-attended features share a
    cluster are masked out of the denominator as likely false negatives and pulled into a
    band below the positive by the bounded margin loss (ClusterNS, Deng et al. 2023, Eq. 6).
    The public code keeps same-cluster pairs in the denominator and applies the margin loss
    to every pair (unmasked pairs add a constant); here both follow the issue's text.
    """
    if token_mask is None:
        token_mask = torch.ones(token_features.shape[:2], dtype=torch.bool, device=token_features.device)
    z1 = F.normalize(token_features[token_mask.bool()].float(), dim=-1)
    z2 = F.normalize(image_attended_tokens[token_mask.bool()].float(), dim=-1)
    if z1.shape[0] > max_tokens:  # bound the [T, T] matrix on long reports / big batches
        keep = torch.randperm(z1.shape[0], device=z1.device)[:max_tokens]
        z1, z2 = z1[keep], z2[keep]
    hard_1 = hard_2 = fn_mask = None
    if clusters is not None:
        clusters.observe(z2.detach())
        if clusters.started:
            cluster_of = clusters.assign(z2.detach())
            fn_mask = cluster_of.unsqueeze(0) == cluster_of.unsqueeze(1)
            fn_mask.fill_diagonal_(False)
            hard_1 = clusters.nearest_other_centroid(z1.detach())
            hard_2 = clusters.nearest_other_centroid(z2.detach())
    loss = 0.5 * (_weighted_info_nce(z1, z2, temperature, hard_1, hard_negative_weight, fn_mask)
                  + _weighted_info_nce(z2, z1, temperature, hard_2, hard_negative_weight,
                                       fn_mask.t() if fn_mask is not None else None))
    margin_loss = None
    if fn_mask is not None:
        delta = (z1 @ z2.t()) - (z1 * z2).sum(-1, keepdim=True)  # cos(x_i, fn_j) - cos(x_i, pos_i)
        margin_loss = bounded_margin_loss(delta[fn_mask], *margin) if fn_mask.any() else delta.sum() * 0.0
    return loss, margin_loss
