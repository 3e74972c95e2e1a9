"""MedFinder: 3D CT <-> report retrieval with two-view consistency and view fusion (issue 8).

What it optimises, per batch of CT volumes with their reports:
  view_consistency  || e(v1) - e(v2) ||^2 between the L2-normalised embeddings of two
                    independently augmented views of the same volume (MONAI RandRotate
                    +-0.2 rad, RandZoom 0.9-1.1, Gaussian noise sigma 0.1). On unit vectors
                    this equals 2 - 2 cos, so it cannot be lowered by shrinking embeddings.
  contrastive       alpha x symmetric InfoNCE (temperature 0.07, alpha = weight 1.0) between the
                    FUSED image embedding (tokens of each view cross-attend to the other view
                    of the same study, `parts.ViewCrossAttention`) and the report embedding.

Settings of the seed kept as config (workbench/configs/medfinder.yaml): a MONAI 3D ResNet-50
(or `vit_3d`) on 224x224x96 volumes, text encoder frozen with CLS pooling, 512-d projections;
reports as a random window of <= 100 words for training, the full text for evaluation.

Where this differs from the public code (ydchen0806/MedFinder), following the issue:
- its fusion multiplies global vectors by a softmax taken ACROSS THE BATCH, mixing different
  patients; here attention runs over the tokens of one study only;
- its contrastive loss is one-way (text -> image); here it is symmetric;
- its split is by row order; here the run's manifest split is by patient.
Evaluation uses the exported single-view encoder (the shared checkpoint format holds no
fusion module); the fusion is a gated residual started small, so the fused and single-view
embeddings stay close, and the consistency term ties the views together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from workbench.config import ExperimentConfig
from workbench.methods.base import Method, MethodConfigError
from workbench.methods.losses import symmetric_info_nce
from workbench.methods.params import MethodParams
from workbench.methods.parts.augment3d import RandomView3D
from workbench.methods.parts.fusion import ViewCrossAttention
from workbench.methods.registry import METHODS


@dataclass(frozen=True)
class MedFinderParams(MethodParams):
    """MedFinder's knobs: contrastive temperature, the random 3D view, the view fusion."""

    temperature: float = 0.07
    rotate_range: float = 0.2  # radians, each axis
    zoom_range: Tuple[float, ...] = (0.9, 1.1)
    noise_std: float = 0.1
    fusion_heads: int = 4
    fusion_gate_init: float = 0.1


@METHODS.register("medfinder")
class MedFinder(Method):
    """Two-view 3D CT alignment; see the module docstring for the objective."""

    name = "medfinder"
    Params = MedFinderParams
    loss_terms = ("view_consistency", "contrastive")
    default_loss_weights = {"view_consistency": 1.0, "contrastive": 1.0}
    required_fields = ("image", "image2", "text")

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, heads: Optional[Mapping[str, nn.Module]] = None) -> None:
        super().__init__(cfg, model, heads)
        self.temperature = self.p.temperature
        if self.temperature <= 0:
            raise MethodConfigError(f"method.params.temperature must be > 0, got {self.temperature}.")

    @classmethod
    def build(cls, cfg: ExperimentConfig) -> "MedFinder":
        from workbench.models import build_dual_encoder

        if cfg.data.modality != "ct":
            raise MethodConfigError(
                f"medfinder trains on 3D CT volumes but data.modality={cfg.data.modality!r}; use "
                "--config medfinder (or set data.modality=ct and a 3D models.img_model such as resnet10_3d)."
            )
        model = build_dual_encoder(cfg.models)
        p = cls.parse_params(cfg)
        fusion = ViewCrossAttention(int(model.image_encoder.token_dim), num_heads=p.fusion_heads,
                                    gate_init=p.fusion_gate_init)
        return cls(cfg, model, {"fusion": fusion})

    # ------------------------------------------------------------------ data
    def transforms(self, split: str) -> Optional[Callable[[Any], Any]]:
        """Training: one random view per call (the dataset calls it for `image` and `image2`);
        evaluation: None (the dataset's deterministic uint8 -> [0, 1] scaling)."""
        if split != "train":
            return None
        return RandomView3D(rotate_range=self.p.rotate_range, zoom_range=self.p.zoom_range,
                            noise_std=self.p.noise_std, scale=1.0 / 255.0)

    def text_mode(self, split: str) -> str:
        """A random window of <= 100 words for training, the full report otherwise."""
        return "window" if split == "train" else "full"

    def train_dataset(self, run_dir):
        dataset = super().train_dataset(run_dir)
        if len(dataset) == 0:
            raise MethodConfigError(
                f"The run folder {run_dir} holds no CT studies in its train split; medfinder needs 3D volumes "
                "(demo: data.n_ct_studies > 0; real data: the bimcv or ctrate reader)."
            )
        return dataset

    # ------------------------------------------------------------------ objective
    def _encode_views(self, view1: Tensor, view2: Tensor):
        """Both views through the image encoder in one forward (one batch, twice the size)."""
        out = self.model.image_encoder(torch.cat([view1, view2]))
        if out.tokens is None:
            raise MethodConfigError(f"medfinder fuses token grids, but image encoder {self.cfg.models.img_model!r} "
                                    "returns no tokens; use a 3D ResNet or ViT (resnet10_3d, resnet50_3d, vit_3d).")
        b = view1.shape[0]
        return out.pooled[:b], out.pooled[b:], out.tokens[:b], out.tokens[b:]

    def losses(self, batch: Mapping[str, Any]) -> Dict[str, Tensor]:
        pooled1, pooled2, tokens1, tokens2 = self._encode_views(batch["image"], batch["image2"])
        terms: Dict[str, Tensor] = {}
        if self.term_on("view_consistency"):
            e1 = nn.functional.normalize(self.model.image_proj(pooled1).float(), dim=-1)
            e2 = nn.functional.normalize(self.model.image_proj(pooled2).float(), dim=-1)
            terms["view_consistency"] = ((e1 - e2) ** 2).sum(-1).mean()
        if self.term_on("contrastive"):
            fused = self.heads["fusion"].fuse_pooled(tokens1, tokens2)
            image = self.model.image_proj(fused)
            text = self.model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=False)
            terms["contrastive"] = symmetric_info_nce(self.gather(image), self.gather(text),
                                                      math.log(1.0 / self.temperature))
        return terms

    @torch.no_grad()
    def fused_embedding(self, view1: Tensor, view2: Tensor) -> Tensor:
        """Normalised fused image embedding of two views (analysis; evaluation uses one view)."""
        _, _, tokens1, tokens2 = self._encode_views(view1, view2)
        return nn.functional.normalize(self.model.image_proj(self.heads["fusion"].fuse_pooled(tokens1, tokens2)), dim=-1)
