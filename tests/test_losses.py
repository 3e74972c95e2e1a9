"""Losses against values worked out by hand on 2-d unit vectors."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.methods.losses import (MAX_LOGIT_SCALE, medtrim_triplet_terms, symmetric_info_nce,
                                      triplet_cosine)


def test_info_nce_on_identity_pairs_with_unit_temperature():
    # logits = I: each row's softmax puts e / (e + 1) on its pair -> loss log(1 + e^-1) both ways.
    eye = torch.eye(2)
    assert symmetric_info_nce(eye, eye, 0.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_info_nce_averages_the_two_directions():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    # scale 2: logits = [[1.2, 2.0], [1.6, 0.0]]
    i2t = (math.log(1 + math.exp(2.0 - 1.2)) + math.log(1 + math.exp(1.6 - 0.0))) / 2
    t2i = (math.log(1 + math.exp(1.6 - 1.2)) + math.log(1 + math.exp(2.0 - 0.0))) / 2
    got = symmetric_info_nce(image, text, math.log(2.0)).item()
    assert got == pytest.approx((i2t + t2i) / 2, abs=1e-6)


def test_info_nce_ignores_embedding_norms():
    image = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    assert symmetric_info_nce(image, torch.eye(2), 0.0).item() == pytest.approx(
        symmetric_info_nce(torch.eye(2), torch.eye(2), 0.0).item(), abs=1e-6)


def test_learnable_temperature_gets_a_gradient_and_is_clamped_at_100():
    scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    symmetric_info_nce(image, torch.eye(2), scale).backward()
    assert scale.grad is not None and scale.grad.abs() > 0
    eye = torch.eye(2)
    clamped = symmetric_info_nce(eye, eye, math.log(1000.0)).item()
    assert clamped == pytest.approx(math.log(1 + math.exp(-MAX_LOGIT_SCALE)), abs=1e-9)


def test_triplet_cosine_hinge_and_batch_mean():
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    positive = torch.tensor([[0.0, 1.0], [2.0, 0.0]])  # d = 1, then 0
    negative = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # d = 0, then 2
    # row 0: max(0, 1 - 0 + 0.3) = 1.3; row 1: max(0, 0 - 2 + 0.3) = 0
    assert triplet_cosine(anchor, positive, negative, 0.3).item() == pytest.approx(0.65, abs=1e-6)


def test_medtrim_terms_pair_the_right_modalities():
    a_img, p_img, n_img = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    a_txt, p_txt, n_txt = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    terms = medtrim_triplet_terms(a_img, p_img, n_img, a_txt, p_txt, n_txt, margin=0.3)
    # ii: d(a_img,p_img)=0, d(a_img,n_img)=1 -> 0;  it: d(a_img,p_txt)=1, d(a_img,n_txt)=0 -> 1.3
    # tt: d(a_txt,p_txt)=0, d(a_txt,n_txt)=1 -> 0;  ti: d(a_txt,p_img)=1, d(a_txt,n_img)=0 -> 1.3
    assert {k: round(v.item(), 6) for k, v in terms.items()} == {"ii": 0.0, "it": 1.3, "tt": 0.0, "ti": 1.3}
    # the seed's sides: image (ii + it) / 2 = 0.65, text (tt + ti) / 2 = 0.65
    assert ((terms["ii"] + terms["it"]) / 2).item() == pytest.approx(0.65)
