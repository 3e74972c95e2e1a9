"""Cross-modal masked image reconstruction (CM-MIR of CM-CGNS, Sec. 3.4).

Input patches are masked (ratio 0.5) BEFORE the encoder, so the same code serves CNNs and
ViTs: a patch is the input region under one output token (grid cell). The encoder sees the
masked image; every token is fused with its text-to-image feature (the report tokens it
attends to) and a head predicts the pixels of its patch. As in MAE (He et al. 2022, Sec. 3,
"normalized pixels"), targets are each patch's pixels normalised by the patch's own mean and
std, and the loss is the mean squared error over MASKED patches only. The head ends in a
plain linear layer: normalised targets are negative about half the time, which the public
code's head cannot output (issue 8).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


def patch_size_for(image_hw: Sequence[int], grid: Sequence[int]) -> Tuple[int, int]:
    """Pixels per token along (H, W) for a token grid (h, w) over an image (H, W)."""
    (height, width), (h, w) = image_hw, grid
    if height < h or width < w:
        raise ValueError(f"Token grid {tuple(grid)} is finer than the image {tuple(image_hw)}.")
    return height // h, width // w


def patchify(images: Tensor, grid: Sequence[int]) -> Tensor:
    """[B, C, H, W] -> [B, h*w, C*ph*pw], patches in row-major grid order (the token order);
    rows/columns beyond h*ph / w*pw (sizes not divisible by the grid) are dropped."""
    b, c = images.shape[:2]
    h, w = grid
    ph, pw = patch_size_for(images.shape[-2:], grid)
    x = images[:, :, : h * ph, : w * pw].reshape(b, c, h, ph, w, pw)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * ph * pw)


def random_patch_mask(batch: int, num_patches: int, ratio: float = 0.5, device: torch.device | str = "cpu",
                      generator: Optional[torch.Generator] = None) -> Tensor:
    """Bool [B, N], True = masked; exactly round(ratio * N) patches per sample (at least one
    masked and one visible), chosen uniformly at random."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"Mask ratio must be in (0, 1), got {ratio} (method.params.mask_ratio).")
    n_masked = min(max(1, round(ratio * num_patches)), num_patches - 1)
    noise = torch.rand(batch, num_patches, generator=generator)
    order = noise.argsort(dim=1)
    mask = torch.zeros(batch, num_patches, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_masked], True)
    return mask.to(device)


def mask_input_patches(images: Tensor, mask: Tensor, grid: Sequence[int], fill: float = 0.0) -> Tensor:
    """Images with the masked grid cells set to `fill` (0 = the mean pixel after ImageNet
    normalisation). mask [B, h*w] in row-major order."""
    h, w = grid
    ph, pw = patch_size_for(images.shape[-2:], grid)
    cell = mask.view(-1, 1, h, w).to(images.dtype)
    pixel = cell.repeat_interleave(ph, dim=2).repeat_interleave(pw, dim=3)
    full = torch.zeros(images.shape[0], 1, *images.shape[-2:], dtype=images.dtype, device=images.device)
    full[:, :, : h * ph, : w * pw] = pixel
    return images * (1 - full) + fill * full


class ReconstructionHead(nn.Module):
    """Fused token [.., D] -> patch pixels [.., P]: LayerNorm, MLP with GELU, linear output
    (unbounded, so it can produce the negative values normalised pixels take)."""

    def __init__(self, in_dim: int, patch_pixels: int, hidden_dim: Optional[int] = None) -> None:
        super().__init__()
        hidden = hidden_dim or max(in_dim, 64)
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, patch_pixels))
        self.patch_pixels = patch_pixels

    def forward(self, fused_tokens: Tensor) -> Tensor:
        return self.net(fused_tokens)


def normalised_patches(images: Tensor, grid: Sequence[int], eps: float = 1e-6) -> Tensor:
    """Patch targets normalised per patch: (x - mean) / sqrt(var + eps) (MAE's norm_pix_loss)."""
    patches = patchify(images.float(), grid)
    mean = patches.mean(-1, keepdim=True)
    var = patches.var(-1, keepdim=True, unbiased=False)
    return (patches - mean) / (var + eps).sqrt()


def masked_patch_loss(predicted: Tensor, images: Tensor, mask: Tensor, grid: Sequence[int],
                      normalise: bool = True) -> Tensor:
    """Mean squared error between predicted [B, N, P] and (normalised) target patches of the
    ORIGINAL images, averaged over masked patches only (visible patches carry no loss)."""
    target = normalised_patches(images, grid) if normalise else patchify(images.float(), grid)
    if predicted.shape != target.shape:
        raise ValueError(f"Predicted patches {tuple(predicted.shape)} do not match targets {tuple(target.shape)}.")
    per_patch = ((predicted.float() - target) ** 2).mean(-1)
    weights = mask.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum().clamp_min(1.0)
