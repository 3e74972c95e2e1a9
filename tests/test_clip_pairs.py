"""Pretrained CLIP pairs (PubMedCLIP's format and Hugging Face's) load from local files into
the DualEncoder interface, reproduce the original model's embeddings, freeze as configured,
fine-tune with the `clip` method and round-trip through the shared checkpoint format."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.config import load_config
from workbench.methods import create_method
from workbench.models import DualEncoder, load_encoders
from workbench.models.clip_pairs import ClipPairError, load_clip_pair

CAPTIONS = ["no acute cardiopulmonary process", "small left pleural effusion with adjacent atelectasis " * 12]


@pytest.fixture(scope="module")
def openai_clip(tmp_path_factory):
    """A tiny randomly initialised CLIP saved as an OpenAI-format state dict (.pth)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(16, vision_cfg=CLIPVisionCfg(layers=2, width=64, patch_size=16, image_size=32),
                 text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=2),
                 quick_gelu=True).eval()
    path = tmp_path_factory.mktemp("openai") / "pubmedclip_tiny.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    """A tiny randomly initialised transformers CLIPModel + byte-level CLIP tokenizer folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("hfclip")
    byte_chars = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + [chr(c) for c in range(174, 256)]
    byte_chars += [chr(256 + n) for n in range(256 - len(byte_chars))]
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])
    eos = len(vocab) - 1
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=eos - 1,
                         eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer, folder


def imagenet_to_openai(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised pixels -> the same pixels normalised with OpenAI CLIP's statistics."""
    import open_clip

    from workbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    view = lambda v: torch.tensor(v).view(1, 3, 1, 1)  # noqa: E731
    pixels = images * view(IMAGENET_STD) + view(IMAGENET_MEAN)
    return (pixels - view(open_clip.OPENAI_DATASET_MEAN)) / view(open_clip.OPENAI_DATASET_STD)


def test_openai_format_checkpoint_reproduces_the_original_embeddings(openai_clip):
    import open_clip

    original, path = openai_clip
    pair = load_clip_pair(path).eval()
    assert isinstance(pair, DualEncoder) and pair.format == "openai"
    images = torch.randn(2, 3, 32, 32)
    tokens = pair.tokenize(CAPTIONS)
    assert tokens["input_ids"].shape == (2, 77)  # the model's context length, in tokens
    reference_ids = open_clip.tokenizer.SimpleTokenizer(context_length=77)(CAPTIONS)
    assert torch.equal(tokens["input_ids"], reference_ids)
    with torch.no_grad():
        # the pair takes the data layer's ImageNet-normalised input and feeds CLIP its own statistics
        assert pair.preprocessing.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
        assert pair.preprocessing.std == tuple(open_clip.OPENAI_DATASET_STD)
        assert torch.allclose(pair.encode_image(images, normalize=False),
                              original.encode_image(imagenet_to_openai(images)), atol=1e-5)
        assert torch.allclose(pair.encode_text(**tokens, normalize=False), original.encode_text(reference_ids),
                              atol=1e-5)
        image_emb, out = pair.forward_image(images)
    assert out.tokens.shape == (2, 4, 64) and out.grid == (2, 2)
    assert pair.logit_scale.item() == pytest.approx(original.logit_scale.item())


def test_wrapped_training_checkpoint_with_module_prefix_loads(openai_clip, tmp_path):
    original, path = openai_clip
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, wrapped)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(load_clip_pair(wrapped).eval().encode_image(images), load_clip_pair(path).eval()
                              .encode_image(images), atol=1e-6)


def test_hf_folder_reproduces_the_original_embeddings(hf_clip):
    original, tokenizer, folder = hf_clip
    pair = load_clip_pair(folder).eval()
    assert pair.format == "hf" and pair.max_text_tokens == 77
    tokens = pair.tokenize(CAPTIONS)
    assert tokens["input_ids"].shape[1] == 77  # the long caption is cut at 77 tokens, not characters
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        image = original.get_image_features(pixel_values=imagenet_to_openai(images))  # no processor saved: CLIP's
        image = getattr(image, "pooler_output", image)  # transformers 5 may return an output object
        assert torch.allclose(pair.encode_image(images, normalize=False), image, atol=1e-5)
        text = original.get_text_features(**tokens)
        text = getattr(text, "pooler_output", text)
        assert torch.allclose(pair.encode_text(**tokens, normalize=False), text, atol=1e-5)


def test_an_hf_folder_with_a_processor_is_fed_the_processors_statistics(hf_clip):
    from transformers import CLIPImageProcessor

    _, _, folder = hf_clip
    CLIPImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3], size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    pair = load_clip_pair(folder)
    assert (pair.preprocessing.mean, pair.preprocessing.std) == ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert pair.preprocessing.input_size == (32, 32)


def test_images_of_another_size_are_resized_to_the_models_input(openai_clip):
    _, path = openai_clip
    with torch.no_grad():
        assert load_clip_pair(path).eval().encode_image(torch.randn(2, 3, 64, 64)).shape == (2, 16)


def test_freezing_whole_towers_and_first_layers(openai_clip, hf_clip):
    _, path = openai_clip
    pair = load_clip_pair(path, freeze_image=True, freeze_text_layers=1)
    assert not any(p.requires_grad for p in pair.image_encoder.parameters())
    blocks = pair.text_encoder.clip.transformer.resblocks
    assert not any(p.requires_grad for p in blocks[0].parameters())
    assert all(p.requires_grad for p in blocks[1].parameters())
    assert not pair.text_encoder.clip.token_embedding.weight.requires_grad
    _, _, folder = hf_clip
    hf = load_clip_pair(folder, freeze_text=True, freeze_image_layers=1)
    assert not any(p.requires_grad for p in hf.text_encoder.parameters())
    layers = hf.image_encoder.vision_model.encoder.layers
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())


def test_missing_or_foreign_checkpoints_fail_with_the_fix(tmp_path):
    with pytest.raises(ClipPairError, match="PRETRAINED_MODEL_PATH"):
        load_clip_pair(tmp_path / "absent.pth")
    foreign = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(ClipPairError, match="not an OpenAI-format CLIP checkpoint"):
        load_clip_pair(foreign)


@pytest.mark.parametrize("fmt", ["openai", "hf"])
def test_pubmedclip_options_fine_tune_and_round_trip_the_checkpoint(fmt, openai_clip, hf_clip, tmp_path):
    path = openai_clip[1] if fmt == "openai" else hf_clip[2]
    cfg = load_config("tiny", ["method.params.LOAD_PRETRAINED=true", f"method.params.PRETRAINED_MODEL_PATH={path}",
                               "method.params.FREEZE_TEXT_ENCODER=true"])
    method = create_method("clip", cfg)
    assert not any(p.requires_grad for p in method.model.text_encoder.parameters())
    batch = method.collate([{"image": torch.randn(3, 32, 32), "text": t} for t in CAPTIONS * 2])
    opt = torch.optim.AdamW(method.parameter_groups(1e-3), lr=1e-3)
    text_before = method.model.encode_text(batch["input_ids"], batch["attention_mask"]).detach()
    method.weighted_total(method.losses(batch)).backward()
    opt.step()
    method.eval()
    with torch.no_grad():
        assert torch.allclose(method.model.encode_text(batch["input_ids"], batch["attention_mask"]), text_before)
        image_emb = method.model.encode_image(batch["image"])
    folder = method.export(tmp_path / "train" / "clip-0")
    meta = json.loads((folder / "encoders.json").read_text())
    assert meta["image_encoder"] == "clip_pair" and meta["models"]["img_weights"] == str(path.resolve())
    reloaded = load_encoders(tmp_path)
    with torch.no_grad():
        assert torch.allclose(reloaded.encode_image(batch["image"]), image_emb, atol=1e-6)
