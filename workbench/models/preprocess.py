"""Image preprocessing taken from the model, never assumed.

Every 2D dataset hands the model ImageNet-normalised tensors (`workbench.data.transforms`), the
statistics the bundled encoders were trained with. A model trained with other statistics
(OpenAI's CLIP mean/std, a Hugging Face processor's, a timm model's `pretrained_cfg`) declares
them here, and `InputAdapter` turns the ImageNet-normalised input into the model's own
normalisation (an exact per-channel affine map) and, for fixed-size models, its input size.
What a model declares is recorded in `encoders.json`, so `load_encoders` rebuilds the same.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # what the data layer normalises with


@dataclass(frozen=True)
class ImagePreprocessing:
    """A model's input statistics and size. `input_size` None: any size works (CNNs,
    dynamic-size ViTs), so the cached image size is kept."""

    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    input_size: Optional[Tuple[int, int]] = None
    interpolation: str = "bilinear"
    source: str = "imagenet default"

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "ImagePreprocessing":
        size = record.get("input_size")
        return cls(mean=_triple(record.get("mean", IMAGENET_MEAN)), std=_triple(record.get("std", IMAGENET_STD)),
                   input_size=(int(size[0]), int(size[1])) if size else None,
                   interpolation=str(record.get("interpolation", "bilinear")), source=str(record.get("source", "")))

    @property
    def is_identity(self) -> bool:
        return self.input_size is None and _close(self.mean, IMAGENET_MEAN) and _close(self.std, IMAGENET_STD)


def _triple(values: Sequence[float]) -> Tuple[float, ...]:
    values = tuple(float(v) for v in values)
    return values * 3 if len(values) == 1 else values


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b))


def _size(value: Any) -> Optional[Tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, Mapping):  # HF: {"height": h, "width": w} or {"shortest_edge": s}
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
        return None
    if isinstance(value, (int, float)):
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    return value[-2:] if len(value) >= 2 else (value[0], value[0])


def from_timm(model: nn.Module, name: str, fixed_size: bool) -> ImagePreprocessing:
    """timm's own `resolve_model_data_config` (the model's pretrained_cfg)."""
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    size = _size(cfg.get("input_size")) if fixed_size else None
    return ImagePreprocessing(mean=_triple(cfg["mean"]), std=_triple(cfg["std"]), input_size=size,
                              interpolation=str(cfg.get("interpolation", "bilinear")), source=f"timm:{name}")


def from_open_clip(model: nn.Module, name: str) -> ImagePreprocessing:
    """open_clip's `preprocess_cfg` (size, mean, std, interpolation) attached to the model."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    return ImagePreprocessing(mean=_triple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                              std=_triple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
                              input_size=_size(cfg.get("size", 224)),
                              interpolation=str(cfg.get("interpolation", "bicubic")), source=f"open_clip:{name}")


def from_hf_processor(folder: Path, default_size: Optional[int] = None) -> ImagePreprocessing:
    """A Hugging Face folder's `preprocessor_config.json` (image_mean, image_std, crop/size)."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; a Hugging Face image model folder needs its preprocessor "
                                "config (save it with the model's AutoImageProcessor.save_pretrained).")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    size = _size(cfg.get("crop_size") or cfg.get("size")) or ((default_size, default_size) if default_size else None)
    resample = {2: "bilinear", 3: "bicubic", 0: "nearest"}.get(int(cfg.get("resample", 3)), "bicubic")
    return ImagePreprocessing(mean=_triple(cfg.get("image_mean", IMAGENET_MEAN)),
                              std=_triple(cfg.get("image_std", IMAGENET_STD)), input_size=size,
                              interpolation=resample, source=f"hf:{path}")


class InputAdapter(nn.Module):
    """ImageNet-normalised input -> the model's normalisation and (when fixed) its size:
    x_model = (x * std_in + mean_in - mean_model) / std_model, per channel."""

    def __init__(self, preprocessing: ImagePreprocessing) -> None:
        super().__init__()
        self.preprocessing = preprocessing
        mean_in, std_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        mean, std = torch.tensor(preprocessing.mean), torch.tensor(preprocessing.std)
        self.register_buffer("scale", (std_in / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean_in - mean) / std).view(1, 3, 1, 1), persistent=False)

    def pre_hook(self, module: nn.Module, args: tuple) -> tuple:
        """`register_forward_pre_hook` form: adapt the first positional input."""
        return (self(args[0]),) + tuple(args[1:]) if args else args

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 4 and images.shape[1] == 3:
            images = images * self.scale.to(images.dtype) + self.shift.to(images.dtype)
        size = self.preprocessing.input_size
        if size is not None and images.dim() == 4 and tuple(images.shape[-2:]) != tuple(size):
            mode = "bicubic" if self.preprocessing.interpolation == "bicubic" else "bilinear"
            images = F.interpolate(images, size=tuple(size), mode=mode, align_corners=False)
        return images
