"""MedFinder (issue 8): view fusion never mixes studies, MONAI two-view augmentation, the
view-consistency and contrastive terms, their switches, and one optimisation step."""

from __future__ import annotations

import pytest
import torch

from workbench.config import load_config
from workbench.methods import MethodConfigError, create_method
from workbench.methods.parts import RandomView3D, ViewCrossAttention

TINY_CT = ["models.tiny=true", "models.embed_dim=16", "data.volume_size=[16,16,16]", "training.device=cpu"]


def _method(*overrides: str):
    torch.manual_seed(0)
    return create_method("medfinder", load_config("medfinder", overrides=TINY_CT + list(overrides)))


def _batch(method, n: int = 4, same_views: bool = False):
    g = torch.Generator().manual_seed(1)
    image = torch.rand(n, 1, 16, 16, 16, generator=g)
    image2 = image.clone() if same_views else (image + 0.1 * torch.randn(image.shape, generator=g))
    texts = ["right pleural effusion", "no acute finding", "left lower lobe nodule", "emphysema in both lungs",
             "consolidation of the right upper lobe", "normal chest ct"][:n]
    return method.collate([{"image": image[i], "image2": image2[i], "text": texts[i]} for i in range(n)])


def test_view_fusion_never_mixes_two_samples():
    torch.manual_seed(0)
    fusion = ViewCrossAttention(8, num_heads=2).eval()
    a, b = torch.randn(3, 5, 8), torch.randn(3, 7, 8)
    fused = fusion.fuse_pooled(a, b)
    a2, b2 = a.clone(), b.clone()
    a2[2], b2[2] = torch.randn(5, 8) * 10, torch.randn(7, 8) * 10  # change sample j = 2 entirely
    fused2 = fusion.fuse_pooled(a2, b2)
    assert torch.allclose(fused[:2], fused2[:2], atol=1e-6)  # samples 0 and 1 untouched
    assert not torch.allclose(fused[2], fused2[2])
    b3 = b.clone()
    b3[0] = torch.randn(7, 8)  # the OTHER view of the same sample does matter
    assert not torch.allclose(fusion(a, b)[0], fusion(a, b3)[0])


def test_random_view_keeps_shape_and_adds_noise_of_sigma_0_1():
    torch.manual_seed(0)
    volume = torch.rand(1, 16, 16, 16)
    noise_only = RandomView3D(rotate_range=0.0, zoom_range=(1.0, 1.0), noise_std=0.1)(volume)
    assert noise_only.shape == volume.shape
    assert abs(float((noise_only - volume).std()) - 0.1) < 0.01
    one_view = RandomView3D()
    v1, v2 = one_view(volume), one_view(volume)
    assert v1.shape == v2.shape == volume.shape and v1.dtype == torch.float32
    assert not torch.allclose(v1, v2)  # two independent draws


def test_view_consistency_is_zero_for_identical_views_and_positive_otherwise():
    method = _method()
    method.train()
    same = method.losses(_batch(method, same_views=True))
    assert float(same["view_consistency"].detach()) == pytest.approx(0.0, abs=1e-10)
    different = method.losses(_batch(method, same_views=False))
    assert float(different["view_consistency"]) > 1e-6


def test_contrastive_term_is_symmetric_info_nce_at_temperature_0_07():
    method = _method()
    method.eval()
    batch = _batch(method)
    with torch.no_grad():
        terms = method.losses(batch)
        image = method.fused_embedding(batch["image"], batch["image2"])
        text = method.model.encode_text(batch["input_ids"], batch["attention_mask"])
        logits = image @ text.t() / 0.07
        targets = torch.arange(len(logits))
        both_ways = 0.5 * (torch.nn.functional.cross_entropy(logits, targets)
                           + torch.nn.functional.cross_entropy(logits.t(), targets))
    assert float(terms["contrastive"]) == pytest.approx(float(both_ways), rel=1e-5)


def test_one_step_lowers_the_loss_and_gradients_reach_every_trainable_part():
    method = _method()
    method.train()
    batch = _batch(method)
    assert not any(p.requires_grad for p in method.model.text_encoder.parameters())  # frozen, as the seed
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1e-3)
    before = method.weighted_total(method.losses(batch))
    before.backward()
    missing = [n for n, p in method.network.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == [] or all("logit_scale" in n for n in missing)  # fixed 0.07: the CLIP scale is unused
    optimizer.step()
    optimizer.zero_grad()
    after = method.weighted_total(method.losses(batch))
    assert float(after) < float(before)


@pytest.mark.parametrize("off", ["view_consistency", "contrastive"])
def test_each_loss_term_switch_removes_the_term_and_its_gradient(off):
    method = _method(f"method.loss_weights.{off}=0")
    method.train()
    terms = method.losses(_batch(method))
    assert off not in terms and len(terms) == 1
    method.weighted_total(terms).backward()
    fusion_grad = [p.grad for p in method.heads["fusion"].parameters()]
    text_grad = [p.grad for p in method.model.text_proj.parameters()]
    if off == "contrastive":  # only the contrastive term uses the fusion and the text side
        assert all(g is None for g in fusion_grad + text_grad)
    else:
        assert all(g is not None for g in fusion_grad + text_grad)


def test_medfinder_refuses_a_2d_config_with_the_fix():
    with pytest.raises(MethodConfigError, match="data.modality"):
        create_method("medfinder", load_config("tiny", overrides=["method.name=medfinder"]))


def test_medfinder_config_keeps_the_seed_settings():
    cfg = load_config("medfinder")
    assert (cfg.models.img_model, cfg.models.text_pooling, cfg.models.freeze_text, cfg.models.embed_dim) == (
        "resnet50_3d", "cls", True, 512)
    assert list(cfg.data.volume_size) == [224, 224, 96] and cfg.data.modality == "ct"
    assert cfg.method.params["temperature"] == 0.07 and cfg.method.loss_weights["contrastive"] == 1.0
