"""Multi-scale feature maps of a trained image encoder, for dense heads (U-Net, FPN detectors).

The pooled/token output of an image encoder (`EncoderOutput`) is one scale; segmentation and
detection fine-tuning (MGCA §4.1, followed by CM-CGNS and ASG) need the encoder's feature
pyramid. `FeaturePyramid` wraps the very modules a checkpoint trained, so weights are shared,
not copied: timm CNNs through timm's `forward_intermediates`, the tiny CNN (2D or 3D) through
its stages. Each level halves the resolution of the one before (strides 2, 4, 8, ...).
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn


class FeaturePyramid(nn.Module):
    """`forward(images) -> [feature maps]`, finest first, with `channels` and `strides` per level."""

    def __init__(self, image_encoder: nn.Module, spatial_dims: int = 2) -> None:
        super().__init__()
        self.encoder = image_encoder
        self.spatial_dims = spatial_dims
        self.kind = self._kind(image_encoder)
        probe = torch.zeros((1, self._in_channels()) + (64,) * spatial_dims)
        was_training = image_encoder.training
        image_encoder.eval()
        with torch.no_grad():
            maps = self.forward(probe.to(next(image_encoder.parameters()).device))
        image_encoder.train(was_training)
        self.channels: List[int] = [int(m.shape[1]) for m in maps]
        self.strides: List[int] = [int(round(64 / m.shape[-1])) for m in maps]
        bad = [s for a, s in zip(self.strides, self.strides[1:]) if s != 2 * a]
        if bad or self.strides[0] != 2:
            raise ValueError(f"{type(image_encoder).__name__} gives feature strides {self.strides}; a U-Net / FPN "
                             f"head needs strides 2, 4, 8, ... (a CNN). Use a CNN image encoder for dense evaluations.")

    @staticmethod
    def _kind(encoder: nn.Module) -> str:
        if hasattr(encoder, "model") and hasattr(encoder.model, "forward_intermediates") \
                and not hasattr(encoder.model, "patch_embed"):
            return "timm"
        if hasattr(encoder, "stages") and isinstance(encoder.stages, nn.ModuleList):
            return "stages"
        raise ValueError(f"Image encoder {type(encoder).__name__} exposes no multi-scale feature maps (timm CNNs and "
                         f"the tiny CNN do; ViT patch tokens are one scale); dense evaluations need a CNN encoder.")

    def _in_channels(self) -> int:
        first = next(m for m in self.encoder.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
        return int(first.in_channels)

    @property
    def in_channels(self) -> int:
        return self._in_channels()

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        if self.kind == "timm":
            return list(self.encoder.model.forward_intermediates(images, intermediates_only=True))
        maps, x = [], images
        for stage in self.encoder.stages:
            x = stage(x)
            maps.append(x)
        return maps


def freeze_module(module: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) every parameter of `module`."""
    for param in module.parameters():
        param.requires_grad_(not frozen)


def pyramid_levels(pyramid: FeaturePyramid, strides: Sequence[int]) -> List[int]:
    """Indices of the pyramid levels with the given strides (those that exist)."""
    return [i for i, s in enumerate(pyramid.strides) if s in set(strides)]
