"""Anatomical region features and region-sentence contrast (ASG's ARSA, Li et al. 2024, Sec. 3.2).

Region features are the patch feature map pooled inside each anatomical box by RoI-align
(He et al. 2017, Mask R-CNN Sec. 3, `torchvision.ops.roi_align`), then averaged over the
output bins. Each region is matched to the report sentence that describes it; the contrast is
WITHIN one image (the other regions of the same image are the negatives), so it teaches
where in the image a sentence points rather than which study it belongs to.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def region_features(feature_map: Tensor, boxes: Sequence[Tensor], image_size: Sequence[int],
                    output_size: int = 3) -> Tensor:
    """Mean RoI-aligned feature of every box.

    feature_map [B, D, h, w] (tokens reshaped to their grid); boxes: one [R_i, 4] tensor per
    image with [x0, y0, x1, y1] in pixels of an image of `image_size` (H, W). Returns
    [sum R_i, D], regions in image order. Boxes are rescaled per axis to feature-map cells
    first, so non-square grids and images work (roi_align takes one scale for both axes).
    """
    from torchvision.ops import roi_align

    if len(boxes) != feature_map.shape[0]:
        raise ValueError(f"Got boxes for {len(boxes)} images but a feature map of {feature_map.shape[0]}.")
    height, width = image_size
    h, w = feature_map.shape[-2:]
    scale = torch.tensor([w / width, h / height, w / width, h / height], dtype=feature_map.dtype,
                         device=feature_map.device)
    scaled = [b.to(feature_map.device, feature_map.dtype).reshape(-1, 4) * scale for b in boxes]
    pooled = roi_align(feature_map, scaled, output_size=output_size, spatial_scale=1.0, sampling_ratio=2,
                       aligned=True)
    return pooled.mean(dim=(2, 3))


def region_sentence_loss(region_emb: Tensor, sentence_emb: Tensor, image_index: Tensor,
                         temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE between regions [R, E] and their sentences [R, E] where only pairs of
    the SAME image (`image_index` [R]) are candidates. Images with a single region have no
    negative and are left out; with none left the loss is zero (and keeps the graph)."""
    r = F.normalize(region_emb.float(), dim=-1)
    s = F.normalize(sentence_emb.float(), dim=-1)
    image_index = image_index.to(r.device)
    counts = torch.bincount(image_index)
    keep = counts[image_index] > 1
    if not keep.any():
        return (r.sum() + s.sum()) * 0.0
    r, s, idx = r[keep], s[keep], image_index[keep]
    logits = r @ s.t() / temperature
    other_image = idx.unsqueeze(0) != idx.unsqueeze(1)
    logits = logits.masked_fill(other_image, float("-inf"))
    targets = torch.arange(r.shape[0], device=r.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
