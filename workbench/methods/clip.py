"""`clip`: symmetric InfoNCE with a learnable temperature (CLIP, Radford et al. 2021, Sec. 2.3),
and PubMedCLIP-style fine-tuning of a pretrained CLIP pair (Eslami et al. 2023).

PubMedCLIP's options are read from `method.params` (upper- or lower-case):
  LOAD_PRETRAINED        start from a pretrained CLIP pair at PRETRAINED_MODEL_PATH (OpenAI
                         .pth such as pubmedclip_vit32.pth, or a Hugging Face CLIPModel folder);
                         false: train the shared encoders of `models` (the demo default)
  PRETRAINED_MODEL_PATH  local path (falls back to models.img_weights)
  FREEZE_VISION_ENCODER  freeze the image tower (ORs with models.freeze_image)
  FREEZE_TEXT_ENCODER    freeze the text tower (ORs with models.freeze_text)
  LEARNABLE_TEMPERATURE  default true; false keeps 1/0.07
For fine-tuning a pretrained pair PubMedCLIP's README recommends small learning rates (e.g.
training.learning_rate=5e-6), which configs/clip_pubmed.yaml sets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping

from torch import Tensor

from workbench.config import ExperimentConfig
from workbench.methods.base import Method, MethodConfigError
from workbench.methods.losses import symmetric_info_nce
from workbench.methods.params import MethodParams
from workbench.methods.registry import METHODS


@dataclass(frozen=True)
class ClipParams(MethodParams):
    """PubMedCLIP's options (its UPPER-case names work too)."""

    load_pretrained: bool = False
    pretrained_model_path: str = ""
    freeze_vision_encoder: bool = False
    freeze_text_encoder: bool = False
    learnable_temperature: bool = True


@METHODS.register("clip")
class ClipMethod(Method):
    """Image-report pairs; one term, `contrastive` (symmetric InfoNCE over the batch, with the
    negatives of every DDP rank)."""

    name = "clip"
    Params = ClipParams
    loss_terms = ("contrastive",)
    default_loss_weights = {"contrastive": 1.0}
    required_fields = ("image", "text")

    @classmethod
    def build(cls, cfg: ExperimentConfig) -> "ClipMethod":
        p = cls.parse_params(cfg)
        freeze_image = cfg.models.freeze_image or p.freeze_vision_encoder
        freeze_text = cfg.models.freeze_text or p.freeze_text_encoder
        if p.load_pretrained:
            from workbench.models.clip_pairs import load_clip_pair

            path = p.pretrained_model_path or cfg.models.clip_model or cfg.models.img_weights
            if not path:
                raise MethodConfigError("method.params.LOAD_PRETRAINED is true but PRETRAINED_MODEL_PATH is empty; "
                                        "give a local CLIP checkpoint (.pth or CLIPModel folder).")
            model = load_clip_pair(path, freeze_image, freeze_text, cfg.models.freeze_image_layers,
                                   cfg.models.freeze_text_layers)
        else:
            from workbench.models import build_dual_encoder

            models_cfg = dataclasses.replace(cfg.models, freeze_image=freeze_image, freeze_text=freeze_text)
            model = build_dual_encoder(models_cfg)
            cfg = dataclasses.replace(cfg, models=models_cfg)  # the export records the freezing
        method = cls(cfg, model)
        if not p.learnable_temperature:
            model.logit_scale.requires_grad_(False)
        return method

    def losses(self, batch: Mapping[str, Any]) -> Dict[str, Tensor]:
        out: Dict[str, Tensor] = {}
        if self.term_on("contrastive"):
            image = self.model.encode_image(batch["image"], normalize=True)
            text = self.model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True)
            out["contrastive"] = symmetric_info_nce(self.gather(image), self.gather(text), self.model.logit_scale)
        return out
