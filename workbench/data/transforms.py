"""Image transforms: cached uint8 arrays -> model-ready tensors, and CT volumes -> fixed shape.

2D: the cache already holds resized grayscale uint8 arrays, so the eval transform only scales,
repeats to three channels and applies the ImageNet normalisation the pretrained encoders
expect. The train transform adds mild geometry and exposure changes. No horizontal flip:
laterality ("left pleural effusion") is part of the report, and a flip would make the pair lie.

3D: MONAI's composable transforms (LoadImage -> Orientation RAS -> Spacing -> intensity window
-> CropForeground -> Resize or pad/crop to `volume_size`), so NIfTI from nibabel and DICOM
series folders end in the same canonical orientation, spacing and shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CT_WINDOW = (-1000.0, 1000.0)  # HU range mapped to [0, 1] (lung to bone, as CT-CLIP clips)
# mm. Finer input is resampled to this, coarser input is left as it is (never upsampled): the
# volume is resized to `volume_size` anyway, and 3 mm keeps ~117 voxels across a 350 mm chest,
# enough for volume sizes up to ~112 (pass a finer pixdim for larger ones).
CT_PIXDIM = (3.0, 3.0, 3.0)

Transform2D = Callable[[torch.Tensor], torch.Tensor]


def to_model_tensor(image: torch.Tensor) -> torch.Tensor:
    """uint8 [1|3, H, W] (or float in [0, 1]) -> float [3, H, W], ImageNet-normalised."""
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


class ModelTensor2D:
    """Picklable 2D transform: optional torchvision v2 pipeline, then `to_model_tensor`
    (a class rather than a closure so DataLoader workers started by spawn can receive it)."""

    def __init__(self, pipeline: Optional[Callable] = None) -> None:
        self.pipeline = pipeline

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return to_model_tensor(self.pipeline(image) if self.pipeline is not None else image)


def eval_transform_2d(image_size: int | None = None) -> Transform2D:
    """Deterministic: optional resize (when the cache size differs), then `to_model_tensor`."""
    from torchvision.transforms import v2

    return ModelTensor2D(v2.Resize((image_size, image_size), antialias=True) if image_size else None)


def train_transform_2d(image_size: int, scale: Tuple[float, float] = (0.75, 1.0), degrees: float = 10.0,
                       brightness: float = 0.2, contrast: float = 0.2) -> Transform2D:
    """Random resized crop, small rotation and exposure jitter (no flip; see module docstring)."""
    from torchvision.transforms import v2

    return ModelTensor2D(v2.Compose([
        v2.RandomResizedCrop((image_size, image_size), scale=scale, ratio=(0.9, 1.1), antialias=True),
        v2.RandomRotation(degrees),
        v2.ColorJitter(brightness=brightness, contrast=contrast),
    ]))


def volume_transform_3d(volume_size: Sequence[int], pixdim: Sequence[float] | None = CT_PIXDIM,
                        window: Tuple[float, float] = CT_WINDOW, fit: str = "resize", load: bool = True):
    """MONAI Compose: path (NIfTI file or DICOM series folder) -> float [1, D, H, W] in [0, 1].

    `fit='resize'` stretches the body's bounding box to `volume_size`; `fit='pad'` keeps the
    spacing and pads or crops symmetrically (no interpolation of the anatomy's proportions).
    """
    from monai.transforms import (Compose, CropForeground, EnsureType, LoadImage, Orientation, Resize,
                                  ResizeWithPadOrCrop, ScaleIntensityRange, Spacing)

    if fit not in ("resize", "pad"):
        raise ValueError(f"fit must be 'resize' or 'pad', got {fit!r}.")
    size = tuple(int(s) for s in volume_size)
    steps = []
    if load:
        steps.append(LoadImage(image_only=True, ensure_channel_first=True))
    steps.append(Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    if pixdim is not None:
        steps.append(Spacing(pixdim=tuple(pixdim), mode="bilinear", dtype=torch.float32,
                             min_pixdim=tuple(pixdim), max_pixdim=1e6))
    steps += [
        ScaleIntensityRange(a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True),
        CropForeground(select_fn=lambda x: x > 0.02, margin=2, allow_smaller=True),
        Resize(spatial_size=size, mode="trilinear") if fit == "resize" else ResizeWithPadOrCrop(spatial_size=size),
        EnsureType(data_type="tensor", track_meta=False, dtype=torch.float32),
    ]
    return Compose(steps)


def load_volume(path: str | Path, volume_size: Sequence[int], **kwargs) -> torch.Tensor:
    """One volume through `volume_transform_3d` (DICOM folders via MONAI's pydicom reader)."""
    from monai.data import NibabelReader, PydicomReader
    from monai.transforms import LoadImage

    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".dcm":
        reader = PydicomReader(fname_regex=r".*\.dcm$")  # a series folder may hold a report .txt
    else:
        reader = NibabelReader()
    image = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(str(path))
    return volume_transform_3d(volume_size, load=False, **kwargs)(image)
