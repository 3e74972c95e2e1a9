"""CM-CGNS (issue 8): local token-patch alignment, cluster-guided negatives, cross-modal
masked image reconstruction, the two stages, term switches and one optimisation step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.config import load_config
from workbench.methods import create_method
from workbench.methods.parts import (ClusterNegatives, LocalCrossAttention, ReconstructionHead, bounded_margin_loss,
                                     local_image_loss, local_text_loss, mask_input_patches, masked_patch_loss, patchify,
                                     random_patch_mask)
from workbench.methods.parts.masked_recon import normalised_patches

TINY_2D = ["models.tiny=true", "models.embed_dim=16", "data.image_size=32", "training.device=cpu",
           "training.max_steps=4"]
TEXTS = ["right pleural effusion", "no acute finding", "left lower lobe nodule", "cardiomegaly with edema"]


def _method(*overrides: str, img_model: str = "tiny_vit"):
    torch.manual_seed(0)
    return create_method("cgns", load_config("cgns", overrides=TINY_2D + [f"models.img_model={img_model}"]
                                             + list(overrides)))


def _batch(method, n: int = 4):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 32, 32, generator=g)
    return method.collate([{"image": images[i], "text": TEXTS[i % len(TEXTS)]} for i in range(n)])


def _orthonormal(n: int, d: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, n))
    return q.t()  # n orthonormal rows


# ------------------------------------------------------------------ local alignment
def test_local_losses_are_minimal_when_tokens_match_patches():
    torch.manual_seed(0)
    basis = _orthonormal(12, 16)
    patches = basis.view(2, 6, 16)  # two images with 6 distinct patches each
    words = basis.view(2, 6, 16).clone()  # each word describes exactly one patch of its own image
    attention = LocalCrossAttention(temperature=0.02)
    word_to_patch, weights = attention(words, patches)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 6))
    aligned_text, _ = local_text_loss(words, word_to_patch, None, temperature=0.05)
    shuffled_text, _ = local_text_loss(words, word_to_patch[:, torch.randperm(6)], None, temperature=0.05)
    assert float(aligned_text) < 0.1 < float(shuffled_text)
    patch_to_word, _ = attention(patches, words)
    aligned_image = local_image_loss(patches, patch_to_word, temperature=0.05)
    assert float(aligned_image) < 1e-3
    assert float(local_image_loss(patches, patch_to_word.flip(1), temperature=0.05)) > 1.0


def test_local_attention_masks_padding_and_stays_inside_each_sample():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out, weights = LocalCrossAttention()(q, k, mask)
    assert torch.all(weights[0, :, 3:] == 0)
    k2 = k.clone()
    k2[1] = torch.randn(5, 8)
    out2, _ = LocalCrossAttention()(q, k2, mask)
    assert torch.allclose(out[0], out2[0])


# ------------------------------------------------------------------ clustering
def _three_groups(per_group: int = 10, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    centres = _orthonormal(3, dim)
    points = torch.cat([F.normalize(c + 0.05 * torch.randn(per_group, dim), dim=-1) for c in centres])
    return points, torch.arange(3).repeat_interleave(per_group)


def test_clusters_start_only_below_the_cosine_threshold():
    clusters = ClusterNegatives(8, k=3, start_threshold=0.4)
    collapsed = F.normalize(torch.ones(12, 8) + 0.01 * torch.randn(12, 8), dim=-1)
    assert ClusterNegatives.mean_pairwise_cosine(collapsed) > 0.9
    assert not clusters.observe(collapsed)
    points, _ = _three_groups()
    assert ClusterNegatives.mean_pairwise_cosine(points) <= 0.4
    assert clusters.observe(points)


def test_cluster_assignment_recovers_separable_groups():
    points, truth = _three_groups()
    clusters = ClusterNegatives(8, k=3)
    clusters.observe(points)
    assigned = clusters.assign(points)
    for g in range(3):  # each true group in exactly one cluster, and the clusters are distinct
        assert assigned[truth == g].unique().numel() == 1
    assert assigned.unique().numel() == 3
    hard = clusters.nearest_other_centroid(points)
    own = clusters.centroids[assigned]
    assert not torch.any(torch.all(torch.isclose(hard, own), dim=-1))  # never its own cluster


def test_momentum_update_moves_centroids_towards_their_members():
    points, truth = _three_groups()
    clusters = ClusterNegatives(8, k=3, momentum=0.5)
    clusters.observe(points)
    before = clusters.centroids.clone()
    shifted = F.normalize(points + 0.3 * F.normalize(torch.ones(8), dim=0), dim=-1)
    clusters.observe(shifted)  # started: this is an update
    idx = clusters.assign(shifted)
    for c in range(3):
        target = F.normalize(shifted[idx == c].mean(0), dim=0)
        assert float(clusters.centroids[c] @ target) > float(before[c] @ target)


def test_same_cluster_pairs_are_masked_as_false_negatives_and_hard_negatives_added():
    torch.manual_seed(0)
    points, truth = _three_groups(per_group=4, dim=8)
    z = points.unsqueeze(0)  # one "report" of 12 tokens
    plain, no_margin = local_text_loss(z, z, None, temperature=0.1)
    clusters = ClusterNegatives(8, k=3)
    clustered, margin = local_text_loss(z, z, None, temperature=0.1, clusters=clusters)
    assert no_margin is None and margin is not None and clusters.started
    # the same-group tokens were the hardest competitors: masking them lowers the loss
    assert float(clustered) < float(plain)
    assert float(margin) >= 0.0


def test_bounded_margin_loss_is_zero_inside_the_band():
    inside = torch.tensor([-0.3, -0.45, -0.2])
    assert float(bounded_margin_loss(inside, alpha=0.2, beta=0.5)) == pytest.approx(0.0)
    assert float(bounded_margin_loss(torch.tensor([0.0]), 0.2, 0.5)) == pytest.approx(0.2)  # too close
    assert float(bounded_margin_loss(torch.tensor([-0.9]), 0.2, 0.5)) == pytest.approx(0.4)  # pushed too far


# ------------------------------------------------------------------ CM-MIR
def test_patch_mask_ratio_and_input_masking():
    mask = random_patch_mask(3, 16, 0.5, generator=torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [8, 8, 8]
    images = torch.randn(3, 3, 32, 32)
    masked = mask_input_patches(images, mask, (4, 4))
    p_orig, p_mask = patchify(images, (4, 4)), patchify(masked, (4, 4))
    assert torch.all(p_mask[mask] == 0)
    assert torch.equal(p_mask[~mask], p_orig[~mask])


def test_reconstruction_loss_counts_masked_patches_only_and_can_reach_zero():
    images = torch.randn(2, 3, 16, 16)
    grid = (2, 2)
    mask = torch.tensor([[True, False, True, False], [False, True, False, True]])
    target = normalised_patches(images, grid)
    assert (target < 0).any()  # normalised pixels are negative about half the time
    assert float(masked_patch_loss(target, images, mask, grid)) == pytest.approx(0.0, abs=1e-10)
    wrong_visible = target.clone()
    wrong_visible[~mask] += 5.0  # errors on visible patches carry no loss
    assert float(masked_patch_loss(wrong_visible, images, mask, grid)) == pytest.approx(0.0, abs=1e-10)
    wrong_masked = target.clone()
    wrong_masked[mask] += 1.0
    assert float(masked_patch_loss(wrong_masked, images, mask, grid)) == pytest.approx(1.0, rel=1e-5)


def test_reconstruction_head_outputs_negative_values():
    torch.manual_seed(0)
    head = ReconstructionHead(8, 12)
    assert (head(torch.randn(4, 5, 8)) < 0).any()


# ------------------------------------------------------------------ the method
@pytest.mark.parametrize("img_model", ["tiny_vit", "tiny_cnn"])
def test_cgns_terms_gradients_and_one_step(img_model):
    method = _method("method.params.cluster_k=0", img_model=img_model)
    method.train()
    batch = _batch(method)
    torch.manual_seed(3)
    terms = method.losses(batch)
    assert set(terms) == {"global", "local_image", "local_text", "false_negative", "reconstruction"}
    total = method.weighted_total(terms)
    total.backward()
    no_grad = [n for n, p in method.network.named_parameters()
               if p.requires_grad and (p.grad is None or float(p.grad.abs().sum()) == 0)]
    assert all("logit_scale" in n for n in no_grad), no_grad  # fixed temperature 0.1
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1e-3)
    optimizer.step()
    optimizer.zero_grad()
    torch.manual_seed(3)  # same patch mask and dropout
    assert float(method.weighted_total(method.losses(batch)).detach()) < float(total.detach())


@pytest.mark.parametrize("off", ["global", "local_image", "local_text", "reconstruction"])
def test_each_cgns_term_switch_removes_the_term_and_its_gradient(off):
    method = _method(f"method.loss_weights.{off}=0", "method.params.cluster_k=0")
    method.train()
    terms = method.losses(_batch(method))
    assert off not in terms
    method.weighted_total(terms).backward()
    recon = [p.grad for p in method.heads["reconstruction"].parameters()]
    if off == "reconstruction":
        assert all(g is None for g in recon)
    else:
        assert all(g is not None for g in recon)


def test_cluster_negatives_start_inside_the_method_and_feed_the_false_negative_term():
    method = _method("method.params.cluster_k=3", "method.params.cluster_start_cosine=1.0")
    method.train()
    terms = method.losses(_batch(method))
    assert method.heads["clusters"].started  # threshold 1.0: starts at once
    terms = method.losses(_batch(method))
    assert float(terms["false_negative"]) >= 0.0 and terms["false_negative"].requires_grad
    state = method.network.state_dict()
    assert "heads.clusters.centroids" in state  # centroids are saved with the checkpoint


def test_two_stages_alignment_then_reconstruction():
    method = _method()  # max_steps=4: alignment for 2 steps
    first, second = method.stages
    assert method.stage_at(0, 0).name == "align" and method.stage_at(2, 0).name == "align+recon"
    method.set_stage(first)
    terms = method.losses(_batch(method))
    assert "reconstruction" not in terms and "global" in terms
    method.set_stage(second)
    assert "reconstruction" in method.losses(_batch(method))
    assert math.isclose(method.loss_weights["false_negative"], 1e-4)
