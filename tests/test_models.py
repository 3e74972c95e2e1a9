"""Encoders, the dual encoder, freezing, offline weights and the checkpoint format."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from workbench.config import ModelsConfig
from workbench.models import (
    CheckpointNotFoundError,
    DualEncoder,
    EncoderOutput,
    MissingWeightsError,
    ProjectionHead,
    build_dual_encoder,
    build_image_encoder,
    build_text_encoder,
    load_encoders,
    load_extra_state,
    resolve_device,
    save_encoders,
)
from workbench.registry import UnknownNameError

TINY = ModelsConfig(tiny=True, img_pretrained=False, text_pretrained=False, embed_dim=16)
REPORTS = ["No acute cardiopulmonary process.", "Mild cardiomegaly with a small left pleural effusion."]


def _seeded_tiny(**changes) -> DualEncoder:
    torch.manual_seed(0)
    return build_dual_encoder(dataclasses.replace(TINY, **changes)).eval()


@pytest.mark.parametrize("name,shape,grid", [
    ("tiny_cnn", (2, 3, 64, 64), (8, 8)),
    ("tiny_vit", (2, 3, 64, 48), (8, 6)),
    ("tiny_cnn_3d", (2, 1, 32, 32, 32), (4, 4, 4)),
    ("resnet10_3d", (1, 1, 32, 32, 32), (2, 2, 2)),
    ("resnet10_narrow_3d", (2, 1, 32, 32, 32), (2, 2, 2)),
])
def test_image_encoders_return_pooled_tokens_and_grid(name, shape, grid):
    encoder = build_image_encoder(dataclasses.replace(TINY, tiny=False, img_model=name)).eval()
    with torch.no_grad():
        out = encoder(torch.randn(*shape))
    assert isinstance(out, EncoderOutput)
    assert out.pooled.shape == (shape[0], encoder.out_dim)
    assert out.grid == grid
    n_tokens = 1
    for g in grid:
        n_tokens *= g
    assert out.tokens.shape == (shape[0], n_tokens, encoder.token_dim)
    assert out.mask is None


def test_narrow_resnet10_3d_has_a_quarter_of_the_widths():
    narrow = build_image_encoder(dataclasses.replace(TINY, tiny=False, img_model="resnet10_narrow_3d"))
    full = build_image_encoder(dataclasses.replace(TINY, tiny=False, img_model="resnet10_3d"))
    assert (narrow.out_dim, full.out_dim) == (128, 512)
    assert sum(p.numel() for p in narrow.parameters()) * 10 < sum(p.numel() for p in full.parameters())


def test_vit_tokens_exclude_cls_and_follow_the_patch_grid():
    encoder = build_image_encoder(dataclasses.replace(TINY, tiny=False, img_model="vit_tiny_patch16_224")).eval()
    with torch.no_grad():
        out = encoder(torch.randn(1, 3, 64, 96))
    assert out.grid == (4, 6) and out.tokens.shape == (1, 24, 192)


def test_unknown_encoder_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="tiny_cnn"):
        build_image_encoder(dataclasses.replace(TINY, tiny=False, img_model="tiny_cnnn"))


def test_text_encoder_pools_over_the_attention_mask():
    encoder = build_text_encoder(TINY).eval()
    batch = encoder.tokenizer(REPORTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        out = encoder(batch["input_ids"], batch["attention_mask"])
        alone = encoder(*[t[:1, : int(batch["attention_mask"][0].sum())] for t in
                          (batch["input_ids"], batch["attention_mask"])])
    assert out.mask.dtype == torch.bool and out.tokens.shape[:2] == batch["input_ids"].shape
    # padding the short report to the long one's length must not change its mean-pooled feature
    assert torch.allclose(out.pooled[0], alone.pooled[0], atol=1e-5)
    assert encoder.max_length == 128


def test_cls_pooling_takes_the_first_token():
    encoder = build_text_encoder(dataclasses.replace(TINY, text_pooling="cls")).eval()
    batch = encoder.tokenizer(REPORTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = encoder(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(out.pooled, out.tokens[:, 0])


def test_projection_heads_map_to_the_embedding_width():
    for kind in ("linear", "mlp"):
        assert ProjectionHead(10, 4, kind)(torch.randn(3, 10)).shape == (3, 4)
    with pytest.raises(ValueError, match="linear"):
        ProjectionHead(10, 4, "conv")


def test_dual_encoder_embeddings_are_unit_norm_and_scale_starts_at_clip_value():
    model = _seeded_tiny()
    batch = model.tokenize(REPORTS)
    with torch.no_grad():
        img = model.encode_image(torch.randn(2, 3, 64, 64))
        txt, out = model.forward_text(**batch)
    assert img.shape == txt.shape == (2, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2)) and torch.allclose(txt.norm(dim=-1), torch.ones(2))
    assert out.tokens is not None
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_frozen_image_encoder_has_no_trainable_weights_and_stays_in_eval_mode():
    model = _seeded_tiny(freeze_image=True)
    model.train()
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    assert all(p.requires_grad for p in model.image_proj.parameters())
    assert not model.image_encoder.training and model.text_encoder.training


def test_freezing_the_first_text_layers_leaves_the_rest_trainable():
    model = _seeded_tiny(freeze_text_layers=2)  # embeddings + first transformer layer
    bert = model.text_encoder.model
    assert not any(p.requires_grad for p in bert.embeddings.parameters())
    assert not any(p.requires_grad for p in bert.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in bert.encoder.layer[1].parameters())


def test_load_encoders_round_trips_a_checkpoint(tmp_path):
    model = _seeded_tiny(img_model="tiny_vit", projection="mlp")
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    cfg = dataclasses.replace(TINY, img_model="tiny_vit", projection="mlp")
    folder = save_encoders(model, tmp_path / "train" / "clip-0", cfg, extra_state={"epoch": 2, "ema": torch.ones(3)})
    meta = json.loads((folder / "encoders.json").read_text())
    assert meta["format_version"] == 1 and meta["models"]["projection"] == "mlp"
    loaded = load_encoders(tmp_path)  # a run folder: finds train/clip-0
    images = torch.randn(2, 3, 64, 64)
    batch = model.tokenize(REPORTS)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(images), model.encode_image(images), atol=1e-6)
        assert torch.allclose(loaded.encode_text(**loaded.tokenize(REPORTS)), model.encode_text(**batch), atol=1e-6)
    assert loaded.logit_scale.item() == pytest.approx(3.0)
    extra = load_extra_state(folder)
    assert extra["epoch"] == 2 and torch.equal(extra["ema"], torch.ones(3))


def test_load_encoders_picks_the_newest_checkpoint_or_the_named_method(tmp_path):
    import os
    import time

    first = save_encoders(_seeded_tiny(), tmp_path / "train" / "frozen-0", TINY)
    second = save_encoders(_seeded_tiny(embed_dim=8), tmp_path / "train" / "locked-0", dataclasses.replace(TINY, embed_dim=8))
    past = time.time() - 100
    os.utime(first / "encoders.json", (past, past))
    assert load_encoders(tmp_path).embed_dim == 8
    assert load_encoders(tmp_path, method="frozen").embed_dim == 16


def test_load_encoders_without_a_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="encoders.json"):
        load_encoders(tmp_path)


def test_missing_weights_fail_at_once_with_one_sentence(tmp_path):
    cfg = dataclasses.replace(TINY, tiny=False, img_model="vit_base_patch16_224", img_pretrained=True,
                              img_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(MissingWeightsError) as info:
        build_image_encoder(cfg)
    message = str(info.value)
    assert "vit_base_patch16_224" in message and "nope.pth" in message and "img_pretrained=false" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    text_cfg = dataclasses.replace(TINY, tiny=False, text_model="Bio_ClinicalBERT", text_pretrained=True)
    with pytest.raises(MissingWeightsError, match="Bio_ClinicalBERT.*HF cache.*text_pretrained=false"):
        build_text_encoder(text_cfg)


def test_resolve_device_auto_and_explicit():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_init_checkpoint_starts_a_new_pair_from_saved_weights(tmp_path):
    from workbench.models import save_encoders

    source = _seeded_tiny()
    with torch.no_grad():
        next(source.image_proj.parameters()).add_(1.0)  # not what a fresh init would give
    save_encoders(source, tmp_path / "locked-0", TINY)
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    started = build_dual_encoder(dataclasses.replace(TINY, init_checkpoint=str(tmp_path / "locked-0"))).eval()
    for (name, a), (_, b) in zip(source.state_dict().items(), started.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="different architecture"):
        build_dual_encoder(dataclasses.replace(TINY, embed_dim=8, init_checkpoint=str(tmp_path / "locked-0")))


def test_frozen_batchnorm_keeps_running_statistics_while_training():
    cfg = dataclasses.replace(TINY, tiny=False, img_model="resnet10_3d", freeze_batchnorm=True)
    model = build_dual_encoder(cfg).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    before = norms[0].running_mean.clone()
    model.encode_image(torch.randn(2, 1, 32, 32, 32) * 5 + 3)
    assert norms and not any(m.training for m in norms) and model.image_encoder.training
    assert torch.equal(before, norms[0].running_mean)
    assert all(p.requires_grad for m in norms for p in m.parameters())  # affine terms still train
    unfrozen = build_dual_encoder(dataclasses.replace(cfg, freeze_batchnorm=False)).train()
    assert all(m.training for m in unfrozen.modules() if isinstance(m, torch.nn.BatchNorm3d))
