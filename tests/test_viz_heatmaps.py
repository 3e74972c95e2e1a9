"""Heat maps: shape, [0, 1] normalisation, and peaks where the input was built to put them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from workbench.config import ModelsConfig
from workbench.viz.heatmaps import (
    attention_rollout,
    available_methods,
    cls_attention,
    grad_cam_map,
    heatmap,
    normalize_map,
    peak_in_mask_rate,
    resize_map,
    token_similarity_map,
    vit_attentions,
)

TINY = ModelsConfig(tiny=True, img_pretrained=False, text_pretrained=False, embed_dim=16)


def _tiny_model(img_model: str):
    from workbench.models import build_dual_encoder

    torch.manual_seed(0)
    return build_dual_encoder(dataclasses.replace(TINY, tiny=False, img_model=img_model,
                                                  text_model="tiny_bert")).eval()


def _peak(heat: np.ndarray) -> tuple:
    return np.unravel_index(int(np.argmax(heat)), heat.shape)


def test_normalize_map_spans_zero_to_one_and_constant_map_is_zero():
    out = normalize_map(np.array([[2.0, 4.0], [6.0, 10.0]]))
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert np.allclose(out, [[0.0, 0.25], [0.5, 1.0]])
    assert not normalize_map(np.full((3, 3), 7.0)).any()


def test_resize_map_rejects_mismatched_rank():
    with pytest.raises(ValueError, match="matching the target size"):
        resize_map(np.zeros((4, 4)), (8, 8, 8))


def test_similarity_map_peaks_in_the_patch_equal_to_the_phrase():
    torch.manual_seed(1)
    grid, size = (4, 4), (64, 64)
    patches = torch.randn(16, 8)
    phrase = torch.randn(8)
    patches[6] = phrase * 3.0  # row 1, column 2 of the grid: cosine 1, the maximum possible
    heat = token_similarity_map(patches, phrase, grid, size)
    assert heat.shape == size and heat.min() == 0.0 and heat.max() == 1.0
    row, col = _peak(heat)
    assert 16 <= row < 32 and 32 <= col < 48  # inside the 16-px cell of patch (1, 2)


def test_similarity_map_3d_grid_gives_a_volume_map_peaking_in_the_built_cell():
    torch.manual_seed(2)
    patches = torch.randn(8, 5)
    phrase = torch.randn(5)
    patches[5] = phrase  # (d, h, w) = (1, 0, 1) in a 2x2x2 grid
    heat = token_similarity_map(patches, phrase, (2, 2, 2), (16, 16, 16))
    assert heat.shape == (16, 16, 16)
    d, h, w = _peak(heat)
    assert d >= 8 and h < 8 and w >= 8


def _attention_towards(target: int, tokens: int, heads: int = 2, strength: float = 0.6) -> torch.Tensor:
    """Row-stochastic attention where every query gives `strength` to token `target`."""
    att = torch.full((heads, tokens, tokens), (1 - strength) / (tokens - 1))
    att[:, :, target] = strength
    return att


def test_attention_rollout_follows_the_patch_cls_attends_to_through_layers():
    grid, size = (3, 3), (48, 48)
    tokens = 1 + 9
    # Layer 1 sends everything to patch 7; layer 2 is uniform: rollout must still show patch 7.
    uniform = torch.full((2, tokens, tokens), 1.0 / tokens)
    heat = attention_rollout([_attention_towards(1 + 7, tokens), uniform], grid, size, num_prefix_tokens=1)
    assert heat.shape == size and heat.min() == 0.0 and heat.max() == 1.0
    row, col = _peak(heat)
    assert 32 <= row < 48 and 16 <= col < 32  # patch 7 = row 2, column 1


def test_cls_attention_reads_only_the_last_layer():
    grid, size = (3, 3), (30, 30)
    tokens = 10
    layers = [_attention_towards(1 + 0, tokens), _attention_towards(1 + 8, tokens)]
    row, col = _peak(cls_attention(layers, grid, size, num_prefix_tokens=1))
    assert row >= 20 and col >= 20  # patch 8 (bottom right), not layer 1's patch 0
    row, col = _peak(attention_rollout(layers[:1], grid, size))
    assert row < 10 and col < 10


def test_rollout_without_cls_token_uses_attention_received():
    heat = attention_rollout([_attention_towards(4, 9)], (3, 3), (9, 9), num_prefix_tokens=0)
    assert _peak(heat) == (4, 4)  # centre patch, centre pixel of its 3x3 cell


def test_vit_attentions_recomputed_from_qkv_are_row_stochastic_and_match_the_grid():
    model = _tiny_model("tiny_vit")
    attentions, grid, prefix = vit_attentions(model, torch.randn(3, 64, 48))
    assert grid == (8, 6) and prefix == 1 and len(attentions) == 2  # tiny_vit: 2 blocks, 8-px patches
    assert attentions[0].shape == (1, 2, 49, 49)
    assert torch.allclose(attentions[0].sum(-1), torch.ones(1, 2, 49), atol=1e-5)


def test_recomputed_attention_reproduces_the_block_output():
    """The recomputed weights are the ones the block used: attn @ v through proj equals its output."""
    model = _tiny_model("tiny_vit")
    attn_module = model.image_encoder.model.blocks[0].attn
    x = torch.randn(1, 9, 32)
    from workbench.viz.heatmaps import _recompute_attention

    weights = _recompute_attention(attn_module, x)
    qkv = attn_module.qkv(x).reshape(1, 9, 3, attn_module.num_heads, attn_module.head_dim).permute(2, 0, 3, 1, 4)
    manual = attn_module.proj((weights @ qkv[2]).transpose(1, 2).reshape(1, 9, 32))
    assert torch.allclose(manual, attn_module(x), atol=1e-5)


@pytest.mark.parametrize("img_model,image_shape,methods", [
    ("tiny_vit", (3, 64, 64), ["similarity", "rollout", "cls_attention"]),
    ("tiny_cnn", (3, 64, 64), ["similarity", "gradcam"]),
    ("tiny_cnn_3d", (1, 32, 32, 32), ["similarity", "gradcam"]),
])
def test_model_heatmaps_have_image_resolution_and_unit_range(img_model, image_shape, methods):
    model = _tiny_model(img_model)
    assert available_methods(model) == methods
    image = torch.rand(*image_shape)
    for method in methods:
        heat = heatmap(model, image, "small left pleural effusion", method)
        assert heat.shape == image_shape[1:], method
        assert heat.dtype == np.float32 and heat.min() >= 0.0 and heat.max() <= 1.0, method
        assert heat.max() == 1.0, f"{method} gave a flat map"


def test_heatmap_needs_a_phrase_for_text_guided_methods():
    with pytest.raises(ValueError, match="needs a phrase"):
        heatmap(_tiny_model("tiny_cnn"), torch.rand(3, 32, 32), "", "similarity")


class _BrightVsDarkCNN(nn.Module):
    """Channel 0 fires on bright pixels, channel 1 on dark (negative) ones; class c reads channel c."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[0, 0, 1, 1] = 1.0
            self.features[0].weight[1, 0, 1, 1] = -1.0
            self.head.weight.copy_(torch.eye(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def test_grad_cam_peaks_on_the_region_that_drives_the_chosen_class():
    image = torch.zeros(1, 32, 32)
    image[0, 4:10, 20:28] = 1.0  # bright patch: evidence for class 0
    image[0, 22:28, 4:10] = -1.0  # dark patch: evidence for class 1
    net = _BrightVsDarkCNN()
    bright = grad_cam_map(net, image, class_idx=0)
    dark = grad_cam_map(net, image, class_idx=1)
    assert bright.shape == (32, 32) and bright.max() == 1.0 and bright.min() == 0.0
    row, col = _peak(bright)
    assert 4 <= row < 10 and 20 <= col < 28
    row, col = _peak(dark)
    assert 22 <= row < 28 and 4 <= col < 10


def test_peak_in_mask_rate_counts_hits_and_chance_is_mask_area():
    mask_a = np.zeros((10, 10), bool)
    mask_a[0:5, 0:5] = True  # area 0.25
    mask_b = np.zeros((10, 10), bool)
    mask_b[5:10, 5:10] = True  # area 0.25
    hit = np.zeros((10, 10))
    hit[2, 2] = 1.0
    miss = np.zeros((10, 10))
    miss[0, 9] = 1.0
    result = peak_in_mask_rate([hit, miss, hit], [mask_a, mask_b, np.zeros((10, 10), bool)])
    assert result.n == 2  # the empty mask is skipped
    assert result.hits == [True, False]
    assert result.rate == 0.5 and result.chance == 0.25
    assert "50.0% of 2" in str(result)


def test_peak_in_mask_rate_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="resize the map"):
        peak_in_mask_rate([np.zeros((4, 4))], [np.zeros((8, 8), bool)])


def test_recomputed_attention_equals_monai_vit_saved_attention():
    """MONAI's 3D ViT blocks: the weights recomputed from qkv are the ones MONAI itself saves."""
    from monai.networks.blocks.selfattention import SABlock

    from workbench.viz.heatmaps import _recompute_attention

    torch.manual_seed(0)
    block = SABlock(hidden_size=32, num_heads=4, save_attn=True).eval()
    x = torch.randn(1, 27, 32)
    with torch.no_grad():
        block(x)
        recomputed = _recompute_attention(block, x)
    assert torch.allclose(recomputed, block.att_mat, atol=1e-6)
