"""The one checkpoint format of every method: a folder with

- `encoders.safetensors`: the DualEncoder's weights (plus tensors of `extra_state` under
  `extra_state/<name>`),
- `encoders.json`: the resolved ModelsConfig, the encoder names really built, the format
  version, and the JSON part of `extra_state`,
- `text/`: the text model's HF config and tokenizer (no weights), so a checkpoint rebuilds
  without the original weight package or HF cache.

`load_encoders` needs no training code: it is also how users export an encoder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

from workbench.config import ModelsConfig
from workbench.io import atomic_path, current_umask, remove_orphaned_temps, write_json_atomic
from workbench.models.device import resolve_device
from workbench.models.dual import DualEncoder
from workbench.models.preprocess import ImagePreprocessing
from workbench.models.registry import build_image_encoder, resolved_image_model, resolved_text_model

FORMAT = "workbench.encoders"
FORMAT_VERSION = 1
WEIGHTS_FILE = "encoders.safetensors"
META_FILE = "encoders.json"
TEXT_FOLDER = "text"
_EXTRA_PREFIX = "extra_state/"
_TEXT_STAGING = ".text."


class CheckpointNotFoundError(FileNotFoundError):
    """No encoders checkpoint where one was expected; the message says how to make one."""


class CheckpointReadError(ValueError):
    """A checkpoint folder whose files do not read or do not fit; names the file and the fix."""


_REWRITE = "train the method again or copy the checkpoint folder again (the copy is damaged)"


def save_encoders(model: DualEncoder, folder: str | os.PathLike, cfg: ModelsConfig,
                  extra_state: Optional[Mapping[str, Any]] = None) -> Path:
    """Write the checkpoint folder (each file atomically; `encoders.json` last, so a folder with
    a json is complete). Tensors in `extra_state` go to safetensors, the rest to the JSON."""
    from safetensors.torch import save_file

    from workbench.models.text import save_text_assets

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_debris(folder)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    extra_json: Dict[str, Any] = {}
    for key, value in (extra_state or {}).items():
        if isinstance(value, torch.Tensor):
            tensors[_EXTRA_PREFIX + key] = value.detach().to("cpu").contiguous().clone()
        else:
            extra_json[key] = value
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})

    staging = Path(tempfile.mkdtemp(prefix=_TEXT_STAGING, dir=folder))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700; text/ is shared like any folder
    try:
        save_text_assets(model.text_encoder, staging)
        target = folder / TEXT_FOLDER
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "models": dataclasses.asdict(cfg),
        "image_encoder": resolved_image_model(cfg),
        "text_encoder": resolved_text_model(cfg),
        "embed_dim": model.embed_dim,
        "max_text_tokens": model.max_text_tokens,
        "preprocessing": model.preprocessing.as_dict(),
        "extra_state": json.loads(json.dumps(extra_json, default=str)),
    }
    write_json_atomic(folder / META_FILE, meta)
    return folder


def _remove_debris(folder: Path) -> None:
    """Delete what a save killed mid-write left (temporary files, `.text.*` staging folders); the
    saving process is the folder's one writer, so nothing else is in flight."""
    remove_orphaned_temps(folder)
    for entry in folder.glob(_TEXT_STAGING + "*"):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def checkpoint_folders(path: str | os.PathLike, method: Optional[str] = None) -> List[Path]:
    """Checkpoint folders under a run folder (`train/<method>-<seed>/`) or a train folder,
    oldest first (by the time their `encoders.json` was written)."""
    path = Path(path)
    found = [p.parent for pattern in (f"train/*/{META_FILE}", f"*/{META_FILE}") for p in path.glob(pattern)]
    if method:
        found = [p for p in found if p.name == method or p.name.rsplit("-", 1)[0] == method]
    return sorted(set(found), key=lambda p: ((p / META_FILE).stat().st_mtime, p.name))


def find_checkpoint(path: str | os.PathLike, method: Optional[str] = None) -> Path:
    """The exact checkpoint folder, or the newest one in a run folder."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    found = checkpoint_folders(path, method)
    if not found:
        which = f" for method {method!r}" if method else ""
        raise CheckpointNotFoundError(
            f"No encoders checkpoint{which} in {path} (looked for {META_FILE} there and in train/*/); "
            f"train a method (notebooks/03_pretrain.ipynb) or the baselines (workbench.eval.baselines) first."
        )
    return found[-1]


def read_checkpoint_meta(path: str | os.PathLike) -> Dict[str, Any]:
    folder = find_checkpoint(path)
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointReadError(f"{folder / META_FILE} is not a readable checkpoint description ({err}); "
                                  f"{_REWRITE}.") from None
    if meta.get("format") != FORMAT or int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise ValueError(
            f"{folder / META_FILE} is not a {FORMAT} v<={FORMAT_VERSION} checkpoint "
            f"(format={meta.get('format')!r}, version={meta.get('format_version')!r}); update the workbench."
        )
    return meta


def _checkpoint_tensors(folder: Path) -> Dict[str, torch.Tensor]:
    """Every tensor of `encoders.safetensors`; a missing or damaged file names itself."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointReadError(f"{path} is missing beside {META_FILE}; {_REWRITE}.")
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise CheckpointReadError(f"{path} is not a readable safetensors file ({err}); {_REWRITE}.") from None


def _encoder_state(folder: Path) -> Dict[str, torch.Tensor]:
    """The encoder weights of a checkpoint folder, without the method's extra state."""
    return {k: v for k, v in _checkpoint_tensors(folder).items() if not k.startswith(_EXTRA_PREFIX)}


def _load_state_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], folder: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointReadError(f"{folder / WEIGHTS_FILE} does not fit the encoders {folder / META_FILE} "
                                  f"describes ({first}); {_REWRITE}.") from None


def load_encoders(run_dir_or_folder: str | os.PathLike, device: str | torch.device = "cpu",
                  method: Optional[str] = None) -> DualEncoder:
    """Rebuild a DualEncoder from a checkpoint without any training code.

    Accepts the checkpoint folder itself or a run folder holding `train/<method>-<seed>/`
    checkpoints (the newest wins; `method` narrows the choice). Returned in eval mode.
    """
    from workbench.models.text import text_encoder_from_saved

    folder = find_checkpoint(run_dir_or_folder, method)
    meta = read_checkpoint_meta(folder)
    known = {f.name for f in dataclasses.fields(ModelsConfig)}
    cfg = ModelsConfig(**{k: v for k, v in meta["models"].items() if k in known})
    if meta["image_encoder"] == "clip_pair":  # a pretrained CLIP pair (workbench.models.clip_pairs)
        from workbench.models.clip_pairs import build_clip_pair

        pair = build_clip_pair(cfg)
        _load_state_into(pair, _checkpoint_tensors(folder), folder)
        _apply_recorded_preprocessing(pair, meta)
        return pair.to(device if isinstance(device, torch.device) else resolve_device(device)).eval()
    arch = dataclasses.replace(cfg, img_model=meta["image_encoder"], text_model=meta["text_encoder"],
                               img_pretrained=False, text_pretrained=False, tiny=False)
    image_encoder = build_image_encoder(arch)
    text_encoder = text_encoder_from_saved(folder / TEXT_FOLDER, cfg.text_pooling, meta["text_encoder"])
    model = DualEncoder(image_encoder, text_encoder, embed_dim=int(meta["embed_dim"]), projection=cfg.projection)
    model.max_text_tokens = int(meta.get("max_text_tokens", model.max_text_tokens))
    _load_state_into(model, _encoder_state(folder), folder)
    _apply_recorded_preprocessing(model, meta)
    model.freeze(cfg.freeze_image, cfg.freeze_text, cfg.freeze_image_layers, cfg.freeze_text_layers,
                 cfg.freeze_batchnorm)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(device).eval()


def _apply_recorded_preprocessing(model: DualEncoder, meta: Mapping[str, Any]) -> None:
    """Feed the encoder what it was trained with; checkpoints written before the record was
    kept were all trained on ImageNet-normalised input."""
    record = meta.get("preprocessing")
    model.set_preprocessing(ImagePreprocessing.from_dict(record) if record else ImagePreprocessing())


def load_extra_state(path: str | os.PathLike) -> Dict[str, Any]:
    """The `extra_state` a checkpoint was saved with (tensors and JSON values merged)."""
    folder = find_checkpoint(path)
    extra: Dict[str, Any] = dict(read_checkpoint_meta(folder).get("extra_state", {}))
    for key, value in _checkpoint_tensors(folder).items():
        if key.startswith(_EXTRA_PREFIX):
            extra[key[len(_EXTRA_PREFIX):]] = value
    return extra


def load_models_config(path: str | os.PathLike) -> ModelsConfig:
    """The ModelsConfig a checkpoint was trained with."""
    meta = read_checkpoint_meta(path)
    known = {f.name for f in dataclasses.fields(ModelsConfig)}
    return ModelsConfig(**{k: v for k, v in meta["models"].items() if k in known})


def init_from_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Copy a saved pair's weights into `model` (same architecture), e.g. to fine-tune end to end
    from the `locked` baseline as LiT's "unlocked" follow-up does (Zhai et al. 2022, Sec. 4)."""
    state = _encoder_state(find_checkpoint(path))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise ValueError(f"models.init_checkpoint={str(path)!r} holds a different architecture "
                         f"({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} reshaped "
                         f"tensors); start from a checkpoint with the same img_model, text_model and embed_dim.")
    model.load_state_dict(state, strict=True)
    return model
