"""Published checkpoints load with their own preprocessing (issue 16): tiny random models in
each format are written to disk, loaded through the public config keys, and checked against
the model's own library: same embeddings, and the preprocessing recorded equals the model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.config import load_config
from workbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from workbench.methods import create_method
from workbench.models.checkpoint import load_encoders, save_encoders
from workbench.models.dual import build_dual_encoder

OPEN_CLIP_MEAN, OPEN_CLIP_STD = (0.41, 0.42, 0.43), (0.21, 0.22, 0.23)  # deliberately not ImageNet's or OpenAI's


def renormalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    """ImageNet-normalised pixels (what the data layer gives) normalised with other statistics."""
    view = lambda v: torch.tensor(v, dtype=images.dtype).view(1, 3, 1, 1)  # noqa: E731
    return (images * view(IMAGENET_STD) + view(IMAGENET_MEAN) - view(mean)) / view(std)


@pytest.fixture(scope="module")
def open_clip_folder(tmp_path_factory) -> Path:
    """A BiomedCLIP-style open_clip folder: open_clip_config.json (model_cfg + preprocess_cfg)
    beside open_clip_model.safetensors."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open_clip_tiny")
    model_cfg = {"embed_dim": 16,
                 "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
                 "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    preprocess_cfg = {"mean": list(OPEN_CLIP_MEAN), "std": list(OPEN_CLIP_STD), "interpolation": "bicubic"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                              "preprocess_cfg": preprocess_cfg}))
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**model_cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def test_an_open_clip_folder_loads_through_models_clip_model_with_its_preprocessing(open_clip_folder, tmp_path):
    import open_clip

    cfg = load_config("tiny", [f"models.clip_model={open_clip_folder}"])
    pair = build_dual_encoder(cfg.models).eval()
    assert pair.format == "open_clip"
    assert pair.preprocessing.mean == OPEN_CLIP_MEAN and pair.preprocessing.std == OPEN_CLIP_STD
    assert pair.preprocessing.input_size == (32, 32)

    reference, _ = open_clip.create_model_from_pretrained(f"local-dir:{open_clip_folder}")
    reference = reference.eval()
    assert open_clip.get_model_preprocess_cfg(reference)["mean"] == list(OPEN_CLIP_MEAN)
    images = torch.randn(2, 3, 48, 48)  # the cache's size: resized to the model's 32 px
    captions = ["small left pleural effusion", "no acute findings"]
    tokens = pair.tokenize(captions)
    reference_tokens = open_clip.get_tokenizer(f"local-dir:{open_clip_folder}")(captions)
    assert torch.equal(tokens["input_ids"], reference_tokens)
    with torch.no_grad():
        resized = torch.nn.functional.interpolate(renormalised(images, OPEN_CLIP_MEAN, OPEN_CLIP_STD), size=(32, 32),
                                                  mode="bicubic", align_corners=False)
        assert torch.allclose(pair.encode_image(images, normalize=False), reference.encode_image(resized), atol=1e-5)
        assert torch.allclose(pair.encode_text(**tokens, normalize=False), reference.encode_text(reference_tokens),
                              atol=1e-5)

    folder = pair_export(pair, tmp_path)
    recorded = json.loads((folder / "encoders.json").read_text())["preprocessing"]
    assert recorded["mean"] == list(OPEN_CLIP_MEAN) and recorded["input_size"] == [32, 32]
    again = load_encoders(folder)
    assert again.preprocessing == pair.preprocessing
    with torch.no_grad():
        assert torch.allclose(again.encode_image(images), pair.encode_image(images), atol=1e-6)


def pair_export(pair, tmp_path: Path) -> Path:
    from workbench.models.clip_pairs import save_clip_pair

    return save_clip_pair(pair, tmp_path / "ckpt")


def test_the_clip_method_starts_from_an_open_clip_folder_by_the_seeds_key(open_clip_folder):
    cfg = load_config("tiny", ["method.name=clip", "method.params.LOAD_PRETRAINED=true",
                               f"method.params.PRETRAINED_MODEL_PATH={open_clip_folder}"])
    method = create_method("clip", cfg)
    assert method.model.format == "open_clip" and method.model.preprocessing.std == OPEN_CLIP_STD


def test_every_method_can_start_from_a_clip_pair(open_clip_folder):
    cfg = load_config("tiny", ["method.name=medtrim", f"models.clip_model={open_clip_folder}"])
    method = create_method("medtrim", cfg)
    assert method.model.format == "open_clip"


@pytest.mark.parametrize("name,head", [("resnet18", 7), ("vit_tiny_patch16_224", 14)])
def test_timm_weights_with_another_head_load_through_timm(tmp_path, name, head):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model(name, pretrained=False, num_classes=head)  # e.g. fine-tuned on 14 findings
    path = tmp_path / f"{name}-finetuned.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    cfg = load_config("tiny", ["models.tiny=false", f"models.img_model={name}", "models.img_pretrained=true",
                               f"models.img_weights={path}", "models.text_model=tiny_bert",
                               "models.text_pretrained=false"])
    model = build_dual_encoder(cfg.models)
    own = model.image_encoder.model.state_dict()
    body = {k: v for k, v in source.state_dict().items() if k in own}
    assert len(body) == len(own)  # every backbone tensor came from the file; the head was dropped
    assert all(torch.equal(own[k], v) for k, v in body.items())
    expected = timm.data.resolve_model_data_config(source)
    assert model.preprocessing.mean == tuple(expected["mean"]) and model.preprocessing.std == tuple(expected["std"])
    folder = save_encoders(model, tmp_path / "ckpt", cfg.models)
    assert json.loads((folder / "encoders.json").read_text())["preprocessing"]["mean"] == list(expected["mean"])
    assert load_encoders(folder).preprocessing == model.preprocessing


def test_a_checkpoint_from_before_the_record_keeps_imagenet_statistics(tmp_path):
    cfg = load_config("tiny", ["models.tiny=false", "models.img_model=resnet18", "models.img_pretrained=false",
                               "models.text_model=tiny_bert", "models.text_pretrained=false"])
    model = build_dual_encoder(cfg.models)
    folder = save_encoders(model, tmp_path / "ckpt", cfg.models)
    meta = json.loads((folder / "encoders.json").read_text())
    del meta["preprocessing"]
    (folder / "encoders.json").write_text(json.dumps(meta))
    assert load_encoders(folder).preprocessing.is_identity


def test_a_local_hf_text_folder_loads_with_its_tokenizer_and_the_configured_pooling(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path / "Bio_ClinicalBERT-tiny"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "small", "left", "."]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(2)
    reference = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64)).eval()
    reference.save_pretrained(folder)

    cfg = load_config("tiny", [f"models.text_model={folder}", "models.text_pooling=cls", "models.tiny=false",
                               "models.text_pretrained=true",
                               "models.img_model=tiny_cnn", "models.img_pretrained=false"])
    model = build_dual_encoder(cfg.models).eval()
    tokens = model.tokenize(["small left pleural effusion."])
    with torch.no_grad():
        pooled = model.text_encoder(tokens["input_ids"], tokens["attention_mask"]).pooled
        expected = reference(**tokens).last_hidden_state[:, 0]
    assert tokens["input_ids"][0, 0].item() == vocab.index("[CLS]")
    assert torch.allclose(pooled, expected, atol=1e-5)


def test_a_local_hf_vision_folder_is_an_image_encoder_with_its_processor_statistics(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path / "vit-base-patch16-224-tiny"
    torch.manual_seed(3)
    reference = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                   image_size=32, patch_size=16), add_pooling_layer=False).eval()
    reference.save_pretrained(folder)
    ViTImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], size={"height": 32, "width": 32}) \
        .save_pretrained(folder)
    cfg = load_config("tiny", ["models.tiny=false", f"models.img_model={folder}", "models.img_pretrained=true",
                               "models.text_model=tiny_bert", "models.text_pretrained=false"])
    model = build_dual_encoder(cfg.models).eval()
    assert model.preprocessing.mean == (0.5, 0.5, 0.5) and model.preprocessing.input_size == (32, 32)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.image_encoder(images)
        expected = reference(pixel_values=renormalised(images, (0.5,) * 3, (0.5,) * 3)).last_hidden_state
    assert torch.allclose(out.pooled, expected[:, 0], atol=1e-5) and out.grid == (2, 2)


def test_the_seeds_hub_names_fail_in_one_sentence_when_not_cached(monkeypatch, tmp_path):
    from workbench.models.weights import MissingWeightsError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = load_config("tiny", ["models.tiny=false", "models.img_model=google/vit-base-patch16-224",
                               "models.text_model=tiny_bert", "models.text_pretrained=false"])
    with pytest.raises(MissingWeightsError, match="google/vit-base-patch16-224.*huggingface-cli download"):
        build_dual_encoder(cfg.models)
    cfg = load_config("tiny", ["models.tiny=false", "models.img_model=tiny_cnn",
                               "models.text_model=emilyalsentzer/Bio_ClinicalBERT"])
    with pytest.raises(MissingWeightsError, match="emilyalsentzer/Bio_ClinicalBERT"):
        build_dual_encoder(cfg.models)


def test_every_caller_of_the_image_encoder_gets_the_models_input(open_clip_folder):
    import copy

    pair = build_dual_encoder(load_config("tiny", [f"models.clip_model={open_clip_folder}"]).models).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        through_pair = pair.encode_image(images, normalize=False)
        direct = pair.image_encoder(images).pooled  # as evaluation features and heat maps call it
        copied = copy.deepcopy(pair).image_encoder(images).pooled
    assert torch.allclose(direct, through_pair, atol=1e-6) and torch.allclose(copied, through_pair, atol=1e-6)
