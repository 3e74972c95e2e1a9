"""Pretrained CLIP image-text pairs (PubMedCLIP and kin) behind the DualEncoder interface.

Two on-disk formats load from a LOCAL path; nothing is downloaded:
- OpenAI format (`.pth`/`.pt`: a state dict, a `{"state_dict": ...}` training checkpoint with
  or without DataParallel's `module.` prefix, or a TorchScript archive), e.g. PubMedCLIP's
  `pubmedclip_vit32.pth`, `pubmedclip_rn50.pth`, `pubmedclip_rn50x4.pth`. The architecture
  (ViT-B/32, RN50, RN50x4, ...) is read off the weights by open-clip-torch.
- Hugging Face format: a folder with `config.json` of a `CLIPModel` (+ its tokenizer files).

Captions are tokenised by the model's own tokenizer at the model's true context length (77
for OpenAI CLIP), not cut at 77 characters as the seed does.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.config import ModelsConfig
from workbench.io import atomic_path, write_json_atomic
from workbench.models.dual import DualEncoder
from workbench.models.preprocess import ImagePreprocessing, from_hf_processor, from_open_clip
from workbench.models.registry import EncoderOutput

# ModelsConfig.img_model / text_model value that marks a CLIP pair (its weights path in img_weights).
CLIP_PAIR = "clip_pair"
CLIP_INIT_LOGIT_SCALE = 2.6592  # log(1 / 0.07), CLIP's initial temperature


class ClipPairError(ValueError):
    """A CLIP checkpoint that cannot be read; the message names the file and the fix."""


class OpenClipTokenizer:
    """An open_clip tokenizer (its BPE, or the HF tokenizer of a model such as BiomedCLIP) with
    the call signature of a Hugging Face tokenizer."""

    def __init__(self, context_length: int, tokenizer: Any = None) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.context_length = context_length
        self._tokenizer = tokenizer if tokenizer is not None else SimpleTokenizer(context_length=context_length)

    def __call__(self, texts: Sequence[str] | str, padding: Any = True, truncation: bool = True,
                 max_length: Optional[int] = None, return_tensors: str = "pt") -> Dict[str, Tensor]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = min(max_length or self.context_length, self.context_length)
        ids = self._tokenizer(texts, context_length=length)
        return {"input_ids": ids, "attention_mask": ids.ne(0).long()}


class _OpenClipImage(nn.Module):
    """The visual tower of an open_clip CLIP; pooled = its projected embedding."""

    def __init__(self, visual: nn.Module, embed_dim: int, preprocessing: ImagePreprocessing) -> None:
        super().__init__()
        self.visual = visual
        self.out_dim = embed_dim
        self.preprocessing = preprocessing
        self.has_tokens = hasattr(visual, "output_tokens")
        self.token_dim = getattr(getattr(visual, "transformer", None), "width", embed_dim)

    def forward(self, images: Tensor) -> EncoderOutput:
        if self.has_tokens:
            self.visual.output_tokens = True
            pooled, tokens = self.visual(images)
            side = int(round(tokens.shape[1] ** 0.5))
            return EncoderOutput(pooled=pooled, tokens=tokens, mask=None, grid=(side, side))
        return EncoderOutput(pooled=self.visual(images), tokens=None, mask=None, grid=None)


class _OpenClipText(nn.Module):
    """The text tower of an open_clip CLIP (the model minus its visual tower and temperature)."""

    def __init__(self, clip: nn.Module, embed_dim: int, tokenizer: Any = None) -> None:
        super().__init__()
        self.clip = clip
        self.out_dim = embed_dim
        self.token_dim = getattr(getattr(clip, "transformer", None), "width", embed_dim)
        self.max_length = int(clip.context_length)
        self.tokenizer = OpenClipTokenizer(self.max_length, tokenizer)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> EncoderOutput:
        # CLIP's text tower is causal and pools at the end-of-text token; padding is ignored.
        return EncoderOutput(pooled=self.clip.encode_text(input_ids), tokens=None, mask=attention_mask, grid=None)


class _HFClipImage(nn.Module):
    def __init__(self, vision_model: nn.Module, preprocessing: ImagePreprocessing) -> None:
        super().__init__()
        self.vision_model = vision_model
        cfg = vision_model.config
        self.out_dim = cfg.hidden_size
        self.token_dim = cfg.hidden_size
        self.preprocessing = preprocessing
        self.patch_size = cfg.patch_size

    def forward(self, images: Tensor) -> EncoderOutput:
        out = self.vision_model(pixel_values=images)
        tokens = out.last_hidden_state[:, 1:]
        side = images.shape[-1] // self.patch_size
        return EncoderOutput(pooled=out.pooler_output, tokens=tokens, mask=None, grid=(images.shape[-2] // self.patch_size, side))


class _HFClipText(nn.Module):
    def __init__(self, text_model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.text_model = text_model
        self.out_dim = text_model.config.hidden_size
        self.token_dim = text_model.config.hidden_size
        self.max_length = int(text_model.config.max_position_embeddings)
        self.tokenizer = tokenizer

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> EncoderOutput:
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
        mask = attention_mask.bool() if attention_mask is not None else None
        return EncoderOutput(pooled=out.pooler_output, tokens=out.last_hidden_state, mask=mask, grid=None)


class ClipDualEncoder(DualEncoder):
    """A pretrained CLIP presented as a DualEncoder (same attributes and methods).

    The CLIP towers already end in their own projections, so `image_proj`/`text_proj` are
    the HF projections or identities. `models_config` records how to rebuild the pair
    (img_model = text_model = "clip_pair", img_weights = the checkpoint path).
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, image_proj: nn.Module,
                 text_proj: nn.Module, logit_scale: float, models_config: ModelsConfig, fmt: str) -> None:
        nn.Module.__init__(self)  # not DualEncoder.__init__: the heads come with the checkpoint
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = image_proj
        self.text_proj = text_proj
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.embed_dim = models_config.embed_dim
        self.frozen_image = models_config.freeze_image
        self.frozen_text = models_config.freeze_text
        self.max_text_tokens = int(text_encoder.max_length)
        self.models_config = models_config
        self.format = fmt
        self.set_preprocessing(image_encoder.preprocessing)
        self.train(True)

    def freeze(self, image: bool = False, text: bool = False, image_layers: int = 0, text_layers: int = 0,
               batchnorm: bool = False) -> None:
        freeze_clip_pair(self, image, text, image_layers, text_layers)
        self.frozen_batchnorm = batchnorm  # RN50-style CLIP towers have batch norm
        self.train(self.training)



def _read_openai_state_dict(path: Path) -> Dict[str, Tensor]:
    """State dict of an OpenAI-format checkpoint: plain, wrapped training state, or TorchScript."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a plain pickle: maybe OpenAI's TorchScript archive
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
            raise ClipPairError(f"Cannot read CLIP checkpoint {path}: {exc}. Pass an OpenAI-format .pth/.pt "
                                "(state dict or TorchScript) or a Hugging Face CLIPModel folder.") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or "text_projection" not in {k.removeprefix("module.") for k in obj}:
        raise ClipPairError(f"{path} is not an OpenAI-format CLIP checkpoint (no `text_projection` weight); "
                            "pass a CLIP .pth such as PubMedCLIP's or a Hugging Face CLIPModel folder.")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def _freeze_first(blocks: Sequence[nn.Module], stem: Sequence[nn.Module], n: int) -> None:
    """Freeze the stem (embeddings) and the first `n` blocks."""
    if n <= 0:
        return
    for m in stem:
        _freeze(m) if isinstance(m, nn.Module) else m.requires_grad_(False)
    for block in list(blocks)[:n]:
        _freeze(block)


def _load_openai(path: Path) -> tuple[nn.Module, nn.Module, float, int]:
    from open_clip.model import build_model_from_openai_state_dict

    state = _read_openai_state_dict(path)
    try:
        clip = build_model_from_openai_state_dict(state, cast_dtype=None)
    except (KeyError, RuntimeError, AssertionError) as exc:
        raise ClipPairError(f"{path} looks like a CLIP checkpoint but open_clip cannot build it ({exc}); "
                            "is it a complete OpenAI-format state dict?") from None
    # open_clip builds in OpenAI's half precision; reload the weights at full precision so a
    # float32 fine-tuned checkpoint (PubMedCLIP) keeps every bit.
    clip = clip.float()
    clip.load_state_dict({k: v for k, v in state.items() if k not in ("input_resolution", "context_length", "vocab_size")})
    clip.train()
    embed_dim = int(clip.text_projection.shape[1])
    logit_scale = float(clip.logit_scale.detach())
    visual = clip.visual
    clip.visual = nn.Identity()  # the text tower keeps the rest; the visual tower moves out
    del clip.logit_scale  # held once, by the pair (safetensors refuses shared tensors)
    image = _OpenClipImage(visual, embed_dim, from_open_clip(visual, path.name))
    text = _OpenClipText(clip, embed_dim)
    return image, text, logit_scale, embed_dim


def _split_open_clip(clip: nn.Module, tokenizer: Any, name: str) -> tuple[nn.Module, nn.Module, float, int]:
    """An open_clip model -> (image tower, text tower, logit scale, embed dim)."""
    preprocessing = from_open_clip(clip, name)
    clip = clip.float().train()
    logit_scale = float(clip.logit_scale.detach())
    with torch.no_grad():
        embed_dim = int(clip.encode_text(torch.zeros(1, clip.context_length, dtype=torch.long)).shape[-1])
    visual = clip.visual
    clip.visual = nn.Identity()
    del clip.logit_scale
    if getattr(clip, "logit_bias", None) is not None:  # SigLIP-style bias: this workbench's losses do not use it
        del clip.logit_bias
    return _OpenClipImage(visual, embed_dim, preprocessing), _OpenClipText(clip, embed_dim, tokenizer), \
        logit_scale, embed_dim


def _load_open_clip(source: str) -> tuple[nn.Module, nn.Module, float, int]:
    """An open_clip checkpoint through open_clip's own loader: a local folder holding
    `open_clip_config.json` and its weights (BiomedCLIP's layout), or `hf-hub:org/name` found
    in the offline Hugging Face cache."""
    import open_clip

    name = source if source.startswith("hf-hub:") else f"local-dir:{source}"
    try:
        clip, _ = open_clip.create_model_from_pretrained(name, device="cpu")
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:  # noqa: BLE001 - open_clip raises many types for one user mistake
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClipPairError(f"open_clip cannot load {source} ({first}); give a folder with open_clip_config.json "
                            "and open_clip_model.safetensors (or open_clip_pytorch_model.bin), or an hf-hub: name "
                            "already in the local Hugging Face cache.") from None
    return _split_open_clip(clip, tokenizer, source)


def _load_hf(path: Path) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module, float, int]:
    from transformers import AutoTokenizer, CLIPModel

    try:
        clip = CLIPModel.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ClipPairError(f"Cannot load a Hugging Face CLIPModel and its tokenizer from {path}: {exc}") from None
    try:
        preprocessing = from_hf_processor(path, clip.config.vision_config.image_size)
    except FileNotFoundError:  # no processor saved: CLIP's own statistics at the model's size
        import open_clip

        size = int(clip.config.vision_config.image_size)
        preprocessing = ImagePreprocessing(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, (size, size),
                                           "bicubic", "openai clip default")
    image = _HFClipImage(clip.vision_model, preprocessing)
    text = _HFClipText(clip.text_model, tokenizer)
    return image, text, clip.visual_projection, clip.text_projection, float(clip.logit_scale.detach()), int(clip.config.projection_dim)


def freeze_clip_pair(pair: "ClipDualEncoder", image: bool = False, text: bool = False, image_layers: int = 0,
                     text_layers: int = 0) -> None:
    """Freeze a whole tower (PubMedCLIP's FREEZE_VISION_ENCODER / FREEZE_TEXT_ENCODER), or its
    embeddings plus first N transformer blocks / ResNet stages."""
    if pair.format == "hf":
        vision, tmodel = pair.image_encoder.vision_model, pair.text_encoder.text_model
        _freeze_first(vision.encoder.layers, [vision.embeddings, vision.pre_layrnorm], image_layers)
        _freeze_first(tmodel.encoder.layers, [tmodel.embeddings], text_layers)
    elif image_layers or text_layers:
        visual, clip = pair.image_encoder.visual, pair.text_encoder.clip
        if not hasattr(clip, "transformer") or not (hasattr(visual, "transformer") or hasattr(visual, "layer4")):
            raise ClipPairError("models.freeze_image_layers / freeze_text_layers need OpenAI-style CLIP towers; this "
                                "open_clip model has others (e.g. a timm or Hugging Face tower): freeze whole towers "
                                "with models.freeze_image / freeze_text instead.")
        if hasattr(visual, "transformer"):
            stem = [visual.conv1, visual.ln_pre, visual.class_embedding, visual.positional_embedding]
            _freeze_first(visual.transformer.resblocks, stem, image_layers)
        else:  # ModifiedResNet: stem convs, then layer1..layer4
            stem = [visual.conv1, visual.bn1, visual.conv2, visual.bn2, visual.conv3, visual.bn3]
            _freeze_first([visual.layer1, visual.layer2, visual.layer3, visual.layer4], stem, image_layers)
        _freeze_first(clip.transformer.resblocks, [clip.token_embedding, clip.positional_embedding], text_layers)
    if image:
        _freeze(pair.image_encoder)
        _freeze(pair.image_proj)
        pair.frozen_image = True
    if text:
        _freeze(pair.text_encoder)
        _freeze(pair.text_proj)
        pair.frozen_text = True


def load_clip_pair(path: str | Path, freeze_image: bool = False, freeze_text: bool = False,
                   freeze_image_layers: int = 0, freeze_text_layers: int = 0) -> ClipDualEncoder:
    """Load a CLIP pair from a local OpenAI-format file, a Hugging Face CLIPModel folder, an
    open_clip folder or an `hf-hub:` name in the offline cache (see module doc), frozen as asked
    (see `freeze_clip_pair`); its preprocessing comes from the checkpoint."""
    source = str(path)
    if source.startswith("hf-hub:"):
        image, text, logit_scale, embed_dim = _load_open_clip(source)
        image_proj, text_proj, fmt, recorded = nn.Identity(), nn.Identity(), "open_clip", source
    else:
        path = Path(path).expanduser()
        if not path.exists():
            raise ClipPairError(f"CLIP checkpoint {path} does not exist; set models.clip_model (or "
                                "method.params.PRETRAINED_MODEL_PATH) to a local PubMedCLIP .pth, a CLIPModel folder, "
                                "an open_clip folder or an hf-hub: name in the local cache.")
        if path.is_dir() and (path / "open_clip_config.json").is_file():
            image, text, logit_scale, embed_dim = _load_open_clip(str(path.resolve()))
            image_proj, text_proj, fmt = nn.Identity(), nn.Identity(), "open_clip"
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise ClipPairError(f"{path} is a folder without config.json or open_clip_config.json; a Hugging Face "
                                    "CLIPModel folder or an open_clip folder is expected.")
            image, text, image_proj, text_proj, logit_scale, embed_dim = _load_hf(path)
            fmt = "hf"
        else:
            image, text, logit_scale, embed_dim = _load_openai(path)
            image_proj, text_proj = nn.Identity(), nn.Identity()
            fmt = "openai"
        recorded = str(path.resolve())
    cfg = ModelsConfig(img_model=CLIP_PAIR, text_model=CLIP_PAIR, img_weights=recorded, text_weights="",
                       img_pretrained=True, text_pretrained=True, embed_dim=embed_dim, projection="linear",
                       freeze_image=freeze_image, freeze_text=freeze_text, freeze_image_layers=freeze_image_layers,
                       freeze_text_layers=freeze_text_layers, clip_model=recorded)
    pair = ClipDualEncoder(image, text, image_proj, text_proj, logit_scale, cfg, fmt)
    pair.freeze(freeze_image, freeze_text, freeze_image_layers, freeze_text_layers, cfg.freeze_batchnorm)
    return pair


def build_clip_pair(cfg: ModelsConfig) -> ClipDualEncoder:
    """Rebuild a CLIP pair from the models config that `load_clip_pair` recorded."""
    if not cfg.img_weights:
        raise ClipPairError("models.img_weights must name the CLIP checkpoint when models.img_model is 'clip_pair'.")
    return load_clip_pair(cfg.img_weights, cfg.freeze_image, cfg.freeze_text, cfg.freeze_image_layers,
                          cfg.freeze_text_layers)



def save_clip_pair(pair: ClipDualEncoder, folder: str | Path) -> Path:
    """Write a fine-tuned pair in the shared checkpoint format (`encoders.safetensors` +
    `encoders.json`); `workbench.models.load_encoders` rebuilds it from the original local
    checkpoint named in the JSON and then loads these weights."""
    from safetensors.torch import save_file

    from workbench.models import checkpoint as ckpt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in pair.state_dict().items()}
    with atomic_path(folder / ckpt.WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": ckpt.FORMAT, "format_version": str(ckpt.FORMAT_VERSION)})
    meta = {
        "format": ckpt.FORMAT,
        "format_version": ckpt.FORMAT_VERSION,
        "models": dataclasses.asdict(pair.models_config),
        "image_encoder": CLIP_PAIR,
        "text_encoder": CLIP_PAIR,
        "clip_format": pair.format,
        "embed_dim": pair.embed_dim,
        "max_text_tokens": pair.max_text_tokens,
        "preprocessing": pair.preprocessing.as_dict(),
        "extra_state": {},
    }
    write_json_atomic(folder / ckpt.META_FILE, meta)
    return folder
