"""3D volume encoders through MONAI: ResNet-10/50 (monai.networks.nets.ResNet) and a ViT.

Inputs are [B, 1, D, H, W]. Tokens are the last feature map's cells (ResNet) or the patch
tokens (ViT), flattened depth-major, with `grid` = (d, h, w). No offline 3D weights ship with
any package here, so `img_pretrained=True` needs a local `img_weights` file.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from workbench.config import ModelsConfig
from workbench.models.image2d import TinyCNN
from workbench.models.registry import IMAGE_ENCODERS, EncoderOutput
from workbench.models.weights import load_weights_into, read_state_dict, resolve_image_weights

# MedicalNet's layout per depth (Chen et al. 2019; MONAI `get_medicalnet_pretrained_resnet_args`):
# depths 18/34 use zero-padding shortcuts (type A) and 10/50 projection shortcuts (type B)
# without a bias, so MedicalNet checkpoints load into these encoders as they are.
MEDICALNET_LAYOUT = {10: ("B", False), 18: ("A", True), 34: ("A", True), 50: ("B", False)}


def _maybe_checkpoint(module: nn.Module, x: torch.Tensor, enabled: bool) -> torch.Tensor:
    if enabled and torch.is_grad_enabled():
        return checkpoint(module, x, use_reentrant=False)
    return module(x)


class MonaiResNet3DEncoder(nn.Module):
    """MONAI's 3D ResNet without its classifier; pooled = global average of the last stage."""

    def __init__(self, depth: int = 10, widths: Sequence[int] | None = None) -> None:
        super().__init__()
        from monai.networks.nets import resnet

        shortcut, bias_downsample = MEDICALNET_LAYOUT[depth]
        common = dict(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type=shortcut,
                      bias_downsample=bias_downsample)
        if widths:  # same block layout as MONAI's resnet10/18/34/50, other widths
            block, layers = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]),
                             34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}[depth]
            self.model = resnet.ResNet(block=block, layers=layers, block_inplanes=list(widths), **common)
        else:
            factory = {10: resnet.resnet10, 18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50}[depth]
            self.model = factory(**common)
        self.grad_checkpointing = False
        with torch.no_grad():
            probe = self._feature_map(torch.zeros(1, 1, 32, 32, 32))
        self.out_dim = int(probe.shape[1])
        self.token_dim = self.out_dim

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in the backward pass (memory for compute)."""
        self.grad_checkpointing = bool(enable)

    def _feature_map(self, volumes: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.act(m.bn1(m.conv1(volumes)))
        if not m.no_max_pool:
            x = m.maxpool(x)
        for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
            x = _maybe_checkpoint(layer, x, self.grad_checkpointing)
        return x

    def forward(self, volumes: torch.Tensor) -> EncoderOutput:
        fmap = self._feature_map(volumes)
        tokens = fmap.flatten(2).transpose(1, 2)
        return EncoderOutput(pooled=tokens.mean(1), tokens=tokens, mask=None,
                             grid=tuple(int(s) for s in fmap.shape[2:]))

    def layer_groups(self) -> List[nn.Module]:
        m = self.model
        return [nn.ModuleList([m.conv1, m.bn1]), m.layer1, m.layer2, m.layer3, m.layer4]


class MonaiViT3DEncoder(nn.Module):
    """MONAI's 3D ViT; position embeddings are resampled (trilinear) when the input grid differs
    from the one it was built for, so one encoder serves any volume size divisible by the patch."""

    def __init__(self, img_size: Sequence[int] = (64, 64, 64), patch_size: int = 16, hidden_size: int = 384,
                 num_layers: int = 6, num_heads: int = 6) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        self.model = ViT(in_channels=1, img_size=tuple(img_size), patch_size=patch_size, hidden_size=hidden_size,
                         mlp_dim=hidden_size * 4, num_layers=num_layers, num_heads=num_heads,
                         classification=False, spatial_dims=3)
        self.base_grid = tuple(int(s) // patch_size for s in img_size)
        self.patch_size = patch_size
        self.out_dim = hidden_size
        self.token_dim = hidden_size
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer block's activations in the backward pass."""
        self.grad_checkpointing = bool(enable)

    def forward(self, volumes: torch.Tensor) -> EncoderOutput:
        embed = self.model.patch_embedding
        x = embed.patch_embeddings(volumes)
        grid = tuple(int(s) for s in x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        pos = embed.position_embeddings
        if grid != self.base_grid:
            pos = pos.transpose(1, 2).reshape(1, -1, *self.base_grid)
            pos = F.interpolate(pos, size=grid, mode="trilinear", align_corners=False).flatten(2).transpose(1, 2)
        x = embed.dropout(x + pos)
        for block in self.model.blocks:
            x = _maybe_checkpoint(block, x, self.grad_checkpointing)
        tokens = self.model.norm(x)
        return EncoderOutput(pooled=tokens.mean(1), tokens=tokens, mask=None, grid=grid)

    def layer_groups(self) -> List[nn.Module]:
        return [self.model.patch_embedding] + list(self.model.blocks)


def _with_weights(encoder: nn.Module, cfg: ModelsConfig, name: str) -> nn.Module:
    if cfg.img_pretrained:
        path = resolve_image_weights(name, cfg.img_weights)
        load_weights_into(encoder.model, read_state_dict(path), str(path))
    return encoder


@IMAGE_ENCODERS.register("resnet10_3d")
def build_resnet10_3d(cfg: ModelsConfig, name: str) -> nn.Module:
    if cfg.img_pretrained:
        resolve_image_weights(name, cfg.img_weights)  # fail before building
    return _with_weights(MonaiResNet3DEncoder(10), cfg, name)


@IMAGE_ENCODERS.register("resnet10_narrow_3d")
def build_resnet10_narrow_3d(cfg: ModelsConfig, name: str) -> nn.Module:
    """ResNet-10 with a quarter of the standard widths (16-32-64-128): the CPU-sized demo encoder
    MedFinder's demo config asks for (full widths cost ~80 s per step of 8 two-view volumes on 2 cores)."""
    if cfg.img_pretrained:
        resolve_image_weights(name, cfg.img_weights)
    return _with_weights(MonaiResNet3DEncoder(10, widths=(16, 32, 64, 128)), cfg, name)


@IMAGE_ENCODERS.register("resnet50_3d")
def build_resnet50_3d(cfg: ModelsConfig, name: str) -> nn.Module:
    if cfg.img_pretrained:
        resolve_image_weights(name, cfg.img_weights)
    return _with_weights(MonaiResNet3DEncoder(50), cfg, name)


@IMAGE_ENCODERS.register("vit_3d")
def build_vit_3d(cfg: ModelsConfig, name: str) -> nn.Module:
    if cfg.img_pretrained:
        resolve_image_weights(name, cfg.img_weights)
    return _with_weights(MonaiViT3DEncoder(), cfg, name)


@IMAGE_ENCODERS.register("efficientnet_lite0_25d_3d")
def build_efficientnet_lite0_25d_3d(cfg: ModelsConfig, name: str) -> nn.Module:
    """The demo's CT encoder: ImageNet EfficientNet-Lite0 on 3-slice stacks, attention-pooled over
    depth (`workbench.models.slices25d`). Chosen over a random-init 3D CNN because the only
    offline image weights are 2D, and over I3D inflation because the 2D network then runs as
    pretrained (inflated kernels change what each layer sees) at a fraction of 3D's cost."""
    from workbench.models.slices25d import build_slice_encoder

    return build_slice_encoder(cfg, name)


@IMAGE_ENCODERS.register("tiny_cnn_3d")
def build_tiny_cnn_3d(cfg: ModelsConfig, name: str) -> nn.Module:
    return TinyCNN(in_channels=1, width=8, spatial_dims=3)
