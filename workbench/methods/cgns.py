"""CM-CGNS: cross-modal cluster-guided negative sampling + cross-modal masked image
reconstruction, on MGCA-style global + local alignment (issue 8).

Loss terms (each switchable by `method.loss_weights`, weight 0 = not computed):
  global          symmetric InfoNCE between image and report embeddings, temperature 0.1.
  local_image     per image: each patch vs the report-attended feature at that patch (MGCA).
  local_text      every report token of the batch vs its image-attended feature, with
                  cluster-guided negatives (`parts.ClusterNegatives`: k-means over the
                  image-attended text features, started once their mean pairwise cosine
                  similarity falls to 0.4 or below, then momentum-updated; nearest other
                  cluster's centroid as a weighted hard negative; same-cluster pairs masked).
  false_negative  bounded margin loss on the masked same-cluster pairs (weight 1e-4).
  reconstruction  CM-MIR: mask half the INPUT patches, encode, fuse each visible-image token
                  with its text-to-image feature, predict the patch pixels; MSE on masked
                  patches in per-patch normalised pixel space (linear output head).
Stages: "align" (global + local) for the first half of the step budget (or
`method.params.align_steps` / `align_epochs`), then "align+recon".

Where the public code (violet-42/CM-CGNS) differs, this follows the issue: its training
module imports `cgns.models.mgca...` modules that do not exist at HEAD; its reconstruction
head cannot output negative values; it keeps same-cluster pairs in the InfoNCE denominator;
its image-side local loss is a SimSiam term, here MGCA's patch contrast. The cluster start
test uses the mean pairwise cosine of the image-attended text features themselves (the
public code averages text-vs-attended similarities). Special tokens at position 0 ([CLS]) are
left out of the token-level terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
from torch import Tensor, nn

from workbench.config import ExperimentConfig
from workbench.methods.base import Method, MethodConfigError, Stage
from workbench.methods.losses import symmetric_info_nce
from workbench.methods.params import MethodParams
from workbench.methods.parts.clustering import ClusterNegatives
from workbench.methods.parts.local_alignment import LocalCrossAttention, local_image_loss, local_text_loss
from workbench.methods.parts.masked_recon import (ReconstructionHead, mask_input_patches, masked_patch_loss,
                                                  patch_size_for, random_patch_mask)
from workbench.methods.registry import METHODS

ALIGN_TERMS = ("global", "local_image", "local_text", "false_negative")


@dataclass(frozen=True)
class CGNSParams(MethodParams):
    """CM-CGNS's knobs (temperatures, masking, the cluster bank, the align-only stage length)."""

    temperature: float = 0.1
    local_temperature: float = 0.1
    attention_temperature: float = 0.1
    mask_ratio: float = 0.5
    hard_negative_weight: float = 3.0
    max_tokens: int = 4096
    local_dim: Optional[int] = None  # default: models.embed_dim
    cluster_k: int = 128  # 0: no cluster-guided negatives
    cluster_momentum: float = 0.99
    cluster_start_cosine: float = 0.4
    align_steps: Optional[int] = None  # both unset: half the budget aligns before reconstruction starts
    align_epochs: Optional[int] = None


@METHODS.register("cgns")
class CMCGNS(Method):
    """MGCA global + local alignment with cluster-guided negatives and CM-MIR."""

    name = "cgns"
    Params = CGNSParams
    loss_terms = ALIGN_TERMS + ("reconstruction",)
    default_loss_weights = {"global": 1.0, "local_image": 1.0, "local_text": 1.0, "false_negative": 1e-4,
                            "reconstruction": 1.0}
    required_fields = ("image", "text")

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, heads: Optional[Mapping[str, nn.Module]] = None) -> None:
        super().__init__(cfg, model, heads)
        self.temperature = self.p.temperature
        self.local_temperature = self.p.local_temperature
        self.mask_ratio = self.p.mask_ratio
        self.hard_negative_weight = self.p.hard_negative_weight
        self.max_tokens = self.p.max_tokens
        self.attention = LocalCrossAttention(self.p.attention_temperature)
        self.grid: tuple = ()  # token grid at data.image_size, set by `build`

    @classmethod
    def build(cls, cfg: ExperimentConfig) -> "CMCGNS":
        from workbench.models import build_dual_encoder

        if cfg.data.modality != "cxr":
            raise MethodConfigError("cgns reconstructs 2D image patches; set data.modality=cxr (use medfinder for CT).")
        p = cls.parse_params(cfg)
        model = build_dual_encoder(cfg.models)
        local_dim = p.local_dim or cfg.models.embed_dim
        grid, patch = cls._probe_grid(model, cfg.data.image_size)
        heads: Dict[str, nn.Module] = {
            "local_image_proj": nn.Linear(int(model.image_encoder.token_dim), local_dim),
            "local_text_proj": nn.Linear(int(model.text_encoder.out_dim), local_dim),
            "reconstruction": ReconstructionHead(local_dim, 3 * patch[0] * patch[1]),
        }
        if p.cluster_k > 0:
            heads["clusters"] = ClusterNegatives(local_dim, k=p.cluster_k, momentum=p.cluster_momentum,
                                                 start_threshold=p.cluster_start_cosine)
        method = cls(cfg, model, heads)
        method.grid = grid
        return method

    @staticmethod
    def _probe_grid(model: nn.Module, image_size: int):
        """Token grid and input patch size of the image encoder at `image_size` (one dummy pass)."""
        encoder = model.image_encoder
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            out = encoder(torch.zeros(1, 3, image_size, image_size))
        encoder.train(was_training)
        if out.tokens is None or out.grid is None or len(out.grid) != 2:
            raise MethodConfigError("cgns needs an image encoder with a 2D token grid (a timm CNN or ViT, tiny_cnn, "
                                    "tiny_vit); the configured one returns none.")
        return tuple(out.grid), patch_size_for((image_size, image_size), out.grid)

    @property
    def stages(self) -> List[Stage]:
        steps, epochs = self.p.align_steps, self.p.align_epochs
        if steps is None and epochs is None:
            t = self.cfg.training
            if t.max_steps > 0:
                steps = max(1, t.max_steps // 2)
            else:
                epochs = max(1, t.num_epochs // 2)
        return [Stage("align", ALIGN_TERMS, until_step=None if steps is None else int(steps),
                      until_epoch=None if epochs is None else int(epochs)),
                Stage("align+recon")]

    # ------------------------------------------------------------------ pieces
    def _word_mask(self, attention_mask: Tensor) -> Tensor:
        mask = attention_mask.bool().clone()
        mask[:, 0] = False  # [CLS]
        if not mask.any(dim=1).all():
            mask[:, 0] |= ~mask.any(dim=1)  # a report with no word keeps its first token
        return mask

    def losses(self, batch: Mapping[str, Any]) -> Dict[str, Tensor]:
        images = batch["image"]
        terms: Dict[str, Tensor] = {}
        need_local = any(self.term_on(t) for t in ("local_image", "local_text", "false_negative", "reconstruction"))
        image_emb, image_out = self.model.forward_image(images, normalize=False)
        text_emb, text_out = self.model.forward_text(batch["input_ids"], batch["attention_mask"], normalize=False)
        if self.term_on("global"):
            terms["global"] = symmetric_info_nce(self.gather(image_emb), self.gather(text_emb),
                                                 math.log(1.0 / self.temperature))
        if not need_local:
            return terms
        words = self.heads["local_text_proj"](text_out.tokens)
        word_mask = self._word_mask(batch["attention_mask"])
        if self.term_on("local_image") or self.term_on("local_text") or self.term_on("false_negative"):
            patches = self.heads["local_image_proj"](image_out.tokens)
            if self.term_on("local_image"):
                text_to_patch, _ = self.attention(patches, words, word_mask)
                terms["local_image"] = local_image_loss(patches, text_to_patch, self.local_temperature)
            if self.term_on("local_text") or self.term_on("false_negative"):
                patch_to_word, _ = self.attention(words, patches)
                clusters = self.heads["clusters"] if "clusters" in self.heads else None
                text_loss, margin = local_text_loss(
                    words, patch_to_word, word_mask, self.local_temperature,
                    clusters if self.network.training else None, self.hard_negative_weight, self.max_tokens)
                if self.term_on("local_text"):
                    terms["local_text"] = text_loss
                if self.term_on("false_negative"):
                    terms["false_negative"] = margin if margin is not None else text_loss * 0.0
        if self.term_on("reconstruction"):
            terms["reconstruction"] = self.reconstruction_loss(images, words, word_mask)
        return terms

    def reconstruction_loss(self, images: Tensor, words: Tensor, word_mask: Tensor,
                            mask: Optional[Tensor] = None) -> Tensor:
        """CM-MIR on a batch: mask input patches, encode, fuse with text-to-image features,
        predict the masked patches (see module docstring)."""
        grid = self.grid
        if tuple(images.shape[-2:]) != (self.cfg.data.image_size,) * 2:
            raise MethodConfigError(f"cgns was built for {self.cfg.data.image_size}px images (data.image_size) but got "
                                    f"{tuple(images.shape[-2:])}; the reconstruction head's patch size depends on it.")
        if mask is None:
            mask = random_patch_mask(images.shape[0], grid[0] * grid[1], self.mask_ratio, images.device)
        masked = mask_input_patches(images, mask, grid)
        _, out = self.model.forward_image(masked, normalize=False)
        patches = self.heads["local_image_proj"](out.tokens)
        text_to_patch, _ = self.attention(patches, words, word_mask)
        predicted = self.heads["reconstruction"](patches + text_to_patch)
        return masked_patch_loss(predicted, images, mask, grid)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """Centroids live in `network` (buffers); nothing else to keep."""
        return {}
