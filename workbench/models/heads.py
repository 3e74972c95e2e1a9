"""Projection heads: map pooled encoder features into the shared embedding space."""

from __future__ import annotations

import torch
from torch import nn

HEAD_KINDS = ("linear", "mlp")


class ProjectionHead(nn.Module):
    """`linear`: one matrix (CLIP, Radford et al. 2021 §2.5); `mlp`: Linear-GELU-Linear (ConVIRT,
    Zhang et al. 2022 §3, a non-linear head in the SimCLR style)."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear") -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"Unknown projection kind {kind!r}; use one of {HEAD_KINDS} (models.projection).")
        self.kind = kind
        self.in_dim = in_dim
        self.out_dim = out_dim
        if kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, out_dim, bias=False)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
