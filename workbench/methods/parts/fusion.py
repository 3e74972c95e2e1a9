"""Cross-attention fusion of two augmented views of the SAME study (MedFinder's view fusion).

Tokens (3D feature-map cells or ViT patch tokens) of view A attend to the tokens of view B of
the same study. Attention runs over the token axis of one sample only (batch-first
`nn.MultiheadAttention`), so studies never mix. This deliberately differs from the public
MedFinder code, whose "cross-attention" multiplies global vectors by a softmax taken across
the batch and thereby blends different patients into each fused embedding (issue 8).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _heads_for(dim: int, wanted: int) -> int:
    """The largest head count <= `wanted` that divides `dim` (MHA needs dim % heads == 0)."""
    for heads in range(max(1, wanted), 0, -1):
        if dim % heads == 0:
            return heads
    return 1


class ViewCrossAttention(nn.Module):
    """Pre-norm residual cross-attention: fused_A = A + g * MHA(LN(A), LN(B), LN(B)).

    `g` is a learnable per-channel gate started small (LayerScale, Touvron et al. 2021,
    Sec. 3), so at the start the fused embedding stays close to the single-view embedding that
    the exported encoder (the shared checkpoint format) produces at evaluation time.
    """

    def __init__(self, dim: int, num_heads: int = 4, dropout: float = 0.0, gate_init: float = 0.1) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, _heads_for(dim, num_heads), dropout=dropout, batch_first=True)
        self.gate = nn.Parameter(torch.full((dim,), float(gate_init)))

    def forward(self, tokens: Tensor, context: Tensor) -> Tensor:
        """tokens [B, N, D] attend to context [B, M, D] of the same sample -> fused [B, N, D]."""
        if tokens.shape[0] != context.shape[0]:
            raise ValueError(f"Both views need the same batch size, got {tokens.shape[0]} and {context.shape[0]}.")
        query = self.norm_query(tokens)
        kv = self.norm_context(context)
        attended, _ = self.attention(query, kv, kv, need_weights=False)
        return tokens + self.gate * attended

    def fuse_pooled(self, tokens_a: Tensor, tokens_b: Tensor) -> Tensor:
        """Both directions fused and mean-pooled over tokens: [B, D] features of the study."""
        fused_a = self.forward(tokens_a, tokens_b).mean(1)
        fused_b = self.forward(tokens_b, tokens_a).mean(1)
        return 0.5 * (fused_a + fused_b)
