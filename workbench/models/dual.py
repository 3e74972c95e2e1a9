"""The image-text dual encoder every method trains: two encoders, two heads, a temperature."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ModelsConfig
from workbench.models.heads import ProjectionHead
from workbench.models.preprocess import ImagePreprocessing, InputAdapter
from workbench.models.registry import EncoderOutput, build_image_encoder, build_text_encoder


def _freeze(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(False)


def _layer_groups(encoder: nn.Module) -> List[nn.Module]:
    groups = getattr(encoder, "layer_groups", None)
    return list(groups()) if callable(groups) else list(encoder.children())


class DualEncoder(nn.Module):
    """Image and text encoders with projection heads into one `embed_dim` space.

    `logit_scale` is CLIP's learnable log inverse temperature, initialised to log(1/0.07)
    (Radford et al. 2021, §2.5). Fully frozen encoders stay in eval mode under `.train()`, so
    their batch-norm statistics never drift (LiT, Zhai et al. 2022, §3: a locked tower).
    """

    frozen_batchnorm = False  # class default: subclasses that build their own towers inherit it

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, embed_dim: int = 256,
                 projection: str = "linear") -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = ProjectionHead(image_encoder.out_dim, embed_dim, projection)
        self.text_proj = ProjectionHead(text_encoder.out_dim, embed_dim, projection)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.embed_dim = embed_dim
        self.frozen_image = False
        self.frozen_text = False
        self.frozen_batchnorm = False
        self.max_text_tokens: int = int(getattr(text_encoder, "max_length", 512))
        self.set_preprocessing(getattr(image_encoder, "preprocessing", None) or ImagePreprocessing())

    # -- input statistics
    def set_preprocessing(self, preprocessing: ImagePreprocessing) -> None:
        """Feed the image encoder the statistics and size it was trained with (see
        `workbench.models.preprocess`); recorded in encoders.json by `save_encoders`."""
        self.preprocessing = preprocessing
        hook = getattr(self, "_input_hook", None)
        if hook is not None:
            hook.remove()
        self.input_adapter = None if preprocessing.is_identity else InputAdapter(preprocessing)
        # a pre-hook on the image encoder, so every caller (evaluation features, heat maps,
        # dense heads) feeds it the same input as forward_image does
        self._input_hook = (None if self.input_adapter is None
                            else self.image_encoder.register_forward_pre_hook(self.input_adapter.pre_hook))

    # -- freezing
    def freeze(self, image: bool = False, text: bool = False, image_layers: int = 0, text_layers: int = 0,
               batchnorm: bool = False) -> None:
        """Freeze whole encoders or their first N layer groups (stem/embeddings count as one);
        `batchnorm`: batch-norm layers keep their running statistics in training mode."""
        self.frozen_batchnorm = batchnorm
        if image:
            _freeze(self.image_encoder)
            self.frozen_image = True
        elif image_layers > 0:
            for group in _layer_groups(self.image_encoder)[:image_layers]:
                _freeze(group)
        if text:
            _freeze(self.text_encoder)
            self.frozen_text = True
        elif text_layers > 0:
            for group in _layer_groups(self.text_encoder)[:text_layers]:
                _freeze(group)
        self.train(self.training)

    def train(self, mode: bool = True) -> "DualEncoder":
        super().train(mode)
        if self.frozen_image:
            self.image_encoder.eval()
        if self.frozen_text:
            self.text_encoder.eval()
        if self.frozen_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # -- text
    @property
    def tokenizer(self):
        return self.text_encoder.tokenizer

    def tokenize(self, texts: Sequence[str], max_length: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """input_ids and attention_mask for `texts`, padded, truncated to the context length."""
        limit = min(max_length or self.max_text_tokens, int(getattr(self.text_encoder, "max_length", 512)))
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        device = self.logit_scale.device
        return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}

    # -- forward
    def forward_image(self, images: torch.Tensor, normalize: bool = True) -> Tuple[torch.Tensor, EncoderOutput]:
        out = self.image_encoder(images)
        emb = self.image_proj(out.pooled)
        return (F.normalize(emb, dim=-1) if normalize else emb), out

    def forward_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     normalize: bool = True) -> Tuple[torch.Tensor, EncoderOutput]:
        out = self.text_encoder(input_ids, attention_mask)
        emb = self.text_proj(out.pooled)
        return (F.normalize(emb, dim=-1) if normalize else emb), out

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.forward_image(images, normalize)[0]

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.forward_text(input_ids, attention_mask, normalize)[0]

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(input_ids, attention_mask)


def build_dual_encoder(cfg: ModelsConfig) -> DualEncoder:
    """Encoders by name (offline weights), heads, and freezing as `cfg` says; a CLIP pair
    (`cfg.clip_model`) instead when one is given."""
    if cfg.clip_model:
        from workbench.models.clip_pairs import load_clip_pair

        pair = load_clip_pair(cfg.clip_model, cfg.freeze_image, cfg.freeze_text, cfg.freeze_image_layers,
                              cfg.freeze_text_layers)
        return _init_from(pair, cfg)
    image_encoder = build_image_encoder(cfg)
    text_encoder = build_text_encoder(cfg)
    model = _init_from(DualEncoder(image_encoder, text_encoder, embed_dim=cfg.embed_dim, projection=cfg.projection),
                       cfg)
    model.freeze(cfg.freeze_image, cfg.freeze_text, cfg.freeze_image_layers, cfg.freeze_text_layers,
                 cfg.freeze_batchnorm)
    return model


def _init_from(model: DualEncoder, cfg: ModelsConfig) -> DualEncoder:
    """Copy `cfg.init_checkpoint`'s weights in (same architecture), when one is given."""
    if cfg.init_checkpoint:
        from workbench.models.checkpoint import init_from_checkpoint

        if not Path(cfg.init_checkpoint).exists():
            raise FileNotFoundError(f"models.init_checkpoint={cfg.init_checkpoint!r} does not exist; give a checkpoint "
                                    "folder (train/<method>-<seed>), 'locked' or 'frozen', or an empty value.")
        init_from_checkpoint(model, cfg.init_checkpoint)
    return model
