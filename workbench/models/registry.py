"""The encoder contract shared by every method: `EncoderOutput` and the name registries.

Image encoders: `forward(images) -> EncoderOutput`, attributes `out_dim` (pooled width) and
`token_dim`. Text encoders: `forward(input_ids, attention_mask) -> EncoderOutput`, attributes
`out_dim`, `tokenizer`, `max_length`. Builders are looked up by name (timm-style), and an
unknown name fails with the list of known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from workbench.config import ModelsConfig
from workbench.registry import Registry


@dataclass
class EncoderOutput:
    """What every encoder returns.

    pooled: [B, D] features before projection. tokens: [B, N, D] patch tokens (no CLS), CNN
    feature-map cells flattened, or text token states; None when the encoder has none.
    mask: [B, N] bool (True = real token) for text, None for images. grid: the token layout of
    an image, (h, w) or (d, h, w); None for text.
    """

    pooled: torch.Tensor
    tokens: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None
    grid: Optional[Tuple[int, ...]] = None


# name -> factory(cfg: ModelsConfig, name: str) -> nn.Module
IMAGE_ENCODERS: Registry[nn.Module] = Registry("image encoder")
TEXT_ENCODERS: Registry[nn.Module] = Registry("text encoder")

# Names handled by the generic timm builder when no explicit entry matches.
TIMM_FALLBACK = "timm"
HF_FALLBACK = "hf"
HF_IMAGE_FALLBACK = "hf_image"


def _ensure_registered() -> None:
    # Importing the modules fills the registries (decorators run at import).
    from workbench.models import image2d, text, volume3d  # noqa: F401  (volume3d registers the 2.5D one)


def resolved_image_model(cfg: ModelsConfig) -> str:
    """The image encoder name a config really builds (`tiny` swaps in a tiny random encoder)."""
    if cfg.tiny and not cfg.img_model.startswith("tiny_"):
        return "tiny_cnn_3d" if cfg.img_model.endswith("_3d") else "tiny_cnn"
    return cfg.img_model


def resolved_text_model(cfg: ModelsConfig) -> str:
    """The text encoder name a config really builds (`tiny` swaps in `tiny_bert`)."""
    if cfg.tiny and not cfg.text_model.startswith("tiny_"):
        return "tiny_bert"
    return cfg.text_model


def build_image_encoder(cfg: ModelsConfig) -> nn.Module:
    """Build the image encoder `cfg.img_model` (any timm name falls through to timm)."""
    _ensure_registered()
    name = resolved_image_model(cfg)
    factory: Callable[..., nn.Module]
    if name in IMAGE_ENCODERS:
        factory = IMAGE_ENCODERS.get(name)
    elif "/" in name or Path(name).is_dir():  # a Hugging Face folder or hub name (offline cache)
        factory = IMAGE_ENCODERS.get(HF_IMAGE_FALLBACK)
    else:
        import timm

        if not timm.is_model(name):
            IMAGE_ENCODERS.get(name)  # raises with the known names
        factory = IMAGE_ENCODERS.get(TIMM_FALLBACK)
    encoder = factory(cfg, name)
    if cfg.grad_checkpointing:
        switch = getattr(encoder, "set_grad_checkpointing", None) or getattr(
            getattr(encoder, "model", None), "set_grad_checkpointing", None)
        if switch is None:
            raise ValueError(f"Image encoder {name!r} has no gradient checkpointing; set "
                             "models.grad_checkpointing=false or use a 3D ResNet/ViT or 2.5D encoder.")
        switch(True)
    if cfg.compile:
        encoder.compile()  # in place: parameter names (and saved checkpoints) stay as they are
    return encoder


def build_text_encoder(cfg: ModelsConfig) -> nn.Module:
    """Build the text encoder `cfg.text_model` (a registry name, local HF folder or HF cache name)."""
    _ensure_registered()
    name = resolved_text_model(cfg)
    if name in TEXT_ENCODERS:
        return TEXT_ENCODERS.get(name)(cfg, name)
    return TEXT_ENCODERS.get(HF_FALLBACK)(cfg, name)
