"""A 2.5D CT encoder: a pretrained 2D CNN on axial slices, attention pooling across depth.

Why 2.5D: no 3D weights ship offline, and a random-init 3D CNN gives nearly the same pooled
feature for every volume (the demo's CT runs sat at chance). The only offline image weights
are ImageNet EfficientNet-Lite0; running it on slices reuses them as they are, the approach
of 2.5D CT models (e.g. the "slices as channels" input of Yan et al. 2018, DeepLesion) and of
attention-based multiple-instance pooling over slices (Ilse et al. 2018, Eq. 9). Each 2D input
is three adjacent slices as the RGB channels, so every image still sees a little depth.

Inputs are [B, 1, X, Y, Z] in [0, 1] (the volume cache, RAS: the last axis is superior, so
slices along it are axial). Tokens are slice x feature-map cells, ordered like the volume's
axes, with `grid` = (x, y, z) cells, so MedFinder's view cross-attention and the attention
maps (`workbench.viz.heatmaps.resize_map`) read them as any 3D feature map.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from workbench.models.registry import EncoderOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# `channels="windows"`: the centre slice under three HU windows as RGB, the multi-window input
# of 2D CT classifiers. The cache maps data.ct_window (default [-1000, 1000] HU) onto [0, 1],
# where aerated lung (-860) and emphysema (-950) differ by 0.05: under the full window an
# ImageNet CNN barely sees it, under a low-attenuation window it spans a third of the range.
HU_WINDOWS = ((-1000.0, -600.0), (-1000.0, 1000.0), (-160.0, 240.0))  # low-attenuation lung, full, mediastinum
CHANNEL_MODES = ("neighbours", "windows")


class DepthAttentionPool(nn.Module):
    """Gated attention over slices (Ilse et al. 2018, Eq. 9), started as a plain mean: the last
    layer is zero, so at init every slice weighs the same and the pretrained features average."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.value = nn.Linear(dim, hidden)
        self.gate = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def weights(self, slices: torch.Tensor) -> torch.Tensor:
        """[B, S, D] slice features -> [B, S] weights summing to 1 over slices."""
        x = self.norm(slices)
        return self.score(torch.tanh(self.value(x)) * torch.sigmoid(self.gate(x))).squeeze(-1).softmax(-1)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        return (self.weights(slices).unsqueeze(-1) * slices).sum(1)


class SliceEncoder25D(nn.Module):
    """A 2D encoder (`TimmImageEncoder`) run on 3-slice stacks every `slice_stride` slices.

    `slice_size` resizes each slice (None: as stored). `chunk` caps how many 2D images go
    through the backbone at once (memory); with `grad_checkpointing` each chunk's activations
    are recomputed in the backward pass instead of kept.
    """

    def __init__(self, backbone: nn.Module, slice_stride: int = 2, slice_size: Optional[int] = None,
                 chunk: int = 256, channels: str = "neighbours",
                 input_window: Tuple[float, float] = (-1000.0, 1000.0)) -> None:
        super().__init__()
        if slice_stride < 1:
            raise ValueError(f"slice_stride must be >= 1, got {slice_stride}.")
        if channels not in CHANNEL_MODES:
            raise ValueError(f"Unknown slice channel mode {channels!r}; use one of {CHANNEL_MODES}.")
        self.channels = channels
        lo, hi = float(input_window[0]), float(input_window[1])
        # per-channel affine map from cached [0, 1] intensities to each window's [0, 1]
        scale = [(hi - lo) / (w1 - w0) for w0, w1 in HU_WINDOWS]
        shift = [(lo - w0) / (w1 - w0) for w0, w1 in HU_WINDOWS]
        self.register_buffer("window_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("window_shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)
        self.backbone = backbone
        self.slice_stride = int(slice_stride)
        self.slice_size = slice_size
        self.chunk = int(chunk)
        self.grad_checkpointing = False
        self.out_dim = int(backbone.out_dim)
        self.token_dim = int(backbone.out_dim)
        self.depth_pool = DepthAttentionPool(self.out_dim)
        # the backbone's own input statistics (timm's pretrained_cfg; workbench.models.preprocess)
        prep = getattr(backbone, "preprocessing", None)
        mean, std = (prep.mean, prep.std) if prep is not None else (IMAGENET_MEAN, IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def model(self) -> nn.Module:
        """The timm model (where `models.img_weights` load, as for the 2D encoders)."""
        return self.backbone.model

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = bool(enable)

    def slice_stacks(self, volumes: torch.Tensor) -> torch.Tensor:
        """[B, 1, X, Y, Z] -> [B, S, 3, X, Y] at centres z = stride // 2, stride // 2 + stride, ...:
        slices z-1, z, z+1 (edges repeated) as RGB, or with `channels="windows"` slice z under
        the three `HU_WINDOWS`."""
        if volumes.ndim != 5 or volumes.shape[1] != 1:
            raise ValueError(f"SliceEncoder25D expects volumes [B, 1, X, Y, Z], got shape {tuple(volumes.shape)}.")
        z = volumes.shape[-1]
        centres = torch.arange(self.slice_stride // 2, z, self.slice_stride, device=volumes.device)
        offsets = torch.arange(-1, 2, device=volumes.device) if self.channels == "neighbours" else \
            torch.zeros(3, dtype=torch.long, device=volumes.device)
        index = (centres[:, None] + offsets[None]).clamp(0, z - 1)
        stacks = volumes[:, 0][..., index.flatten()]  # [B, X, Y, S*3]
        b, x, y = stacks.shape[:3]
        return stacks.view(b, x, y, len(centres), 3).permute(0, 3, 4, 1, 2)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] cached intensities -> the pretrained network's input: each channel under
        its HU window (`channels="windows"`), then the backbone's own mean and std."""
        if self.channels == "windows":
            images = (images * self.window_scale.to(images.dtype) + self.window_shift.to(images.dtype)).clamp(0, 1)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.model.forward_features(images)

    def forward(self, volumes: torch.Tensor) -> EncoderOutput:
        stacks = self.slice_stacks(volumes)
        b, s = stacks.shape[:2]
        images = stacks.reshape(b * s, *stacks.shape[2:])
        if self.slice_size and tuple(images.shape[-2:]) != (self.slice_size, self.slice_size):
            images = F.interpolate(images, size=(self.slice_size, self.slice_size), mode="bilinear",
                                   align_corners=False)
        images = self.normalise(images)
        maps: List[torch.Tensor] = []
        for part in images.split(self.chunk):
            if self.grad_checkpointing and torch.is_grad_enabled():
                maps.append(checkpoint(self._features, part, use_reentrant=False))
            else:
                maps.append(self._features(part))
        fmap = torch.cat(maps)  # [B*S, C, h, w]
        c, h, w = fmap.shape[1:]
        per_slice = fmap.mean((2, 3)).view(b, s, c)
        pooled = self.depth_pool(per_slice)
        # tokens in the volume's axis order (x, y, z): [B, h, w, S, C] flattened
        tokens = fmap.view(b, s, c, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * s, c)
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=None, grid=(int(h), int(w), int(s)))

    def layer_groups(self) -> List[nn.Module]:
        """The 2D backbone's groups (stem first), then the depth pooling last."""
        return list(self.backbone.layer_groups()) + [self.depth_pool]


def build_slice_encoder(cfg, name: str) -> SliceEncoder25D:
    """EfficientNet-Lite0 (ImageNet weights from the pip package when `img_pretrained`; a local
    `img_weights` file holds 2D timm weights) as a 2.5D encoder with the config's slicing."""
    from workbench.models.image2d import timm_encoder

    if cfg.slice_stride < 1:
        raise ValueError(f"models.slice_stride must be >= 1 (got {cfg.slice_stride}); 1 encodes every slice.")
    backbone = timm_encoder("tf_efficientnet_lite0", pretrained=cfg.img_pretrained, weights=cfg.img_weights)
    return SliceEncoder25D(backbone, slice_stride=cfg.slice_stride, slice_size=cfg.slice_size or None,
                           channels=cfg.slice_channels)
