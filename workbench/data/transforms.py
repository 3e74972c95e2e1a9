"""Image transforms: cached uint8 arrays -> model-ready tensors, and CT volumes -> fixed shape.

2D: the cache already holds resized grayscale uint8 arrays, so the eval transform only scales,
repeats to three channels and applies the ImageNet normalisation the pretrained encoders
expect. The train transform adds mild geometry and exposure changes. No horizontal flip:
laterality ("left pleural effusion") is part of the report, and a flip would make the pair lie.

3D: MONAI's composable dictionary transforms (dataset metadata -> Orientationd RAS -> Spacingd
-> ScaleIntensityRanged window -> CropForegroundd -> Resized or pad/crop to `volume_size`), so
NIfTI from nibabel, DICOM series folders and raw-valued CT-RATE volumes end in the same HU
window, canonical orientation, spacing and shape.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

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


# Manifest columns a reader may fill with a volume's own CT metadata (CT-RATE's metadata table):
# HU = raw * rescale_slope + rescale_intercept, and the voxel size in mm along the stored axes.
CT_METADATA_COLUMNS = ("rescale_slope", "rescale_intercept", "spacing_x", "spacing_y", "spacing_z")


def _finite(values: Sequence[object]) -> bool:
    try:
        return all(v is not None and math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def ct_metadata(row: Mapping[str, object]) -> Dict[str, object]:
    """The CT metadata a manifest row carries: {'rescale': (slope, intercept), 'spacing': (x, y, z)},
    each present only when every value is finite (BIMCV-R and the demo carry none)."""
    out: Dict[str, object] = {}
    rescale = (row.get("rescale_slope"), row.get("rescale_intercept"))
    if _finite(rescale) and float(rescale[0]) != 0.0:
        out["rescale"] = (float(rescale[0]), float(rescale[1]))
    spacing = (row.get("spacing_x"), row.get("spacing_y"), row.get("spacing_z"))
    if _finite(spacing) and all(float(v) > 0 for v in spacing):
        out["spacing"] = tuple(float(v) for v in spacing)
    return out


class PrepareCTd:
    """MONAI-style dictionary transform applying a volume's dataset metadata before resampling.

    Why not trust the file: CT-RATE stores raw values and keeps the voxel spacing in a table,
    so the header alone gives intensities off by the intercept (~1024 HU) and a wrong physical
    size. In order: a 4D file keeps its first volume; `spacing` (mm, stored axes) replaces the
    affine's voxel sizes, keeping its directions; `rescale` maps raw values to HU; NaN voxels
    become `fill` (the window's lower bound: air). Every repair is listed under `repairs` so the
    cache counts it (`volume_4d_first_kept`, `nan_voxels_repaired`); an all-NaN volume raises.
    """

    def __init__(self, key: str = "image", fill: float = CT_WINDOW[0]) -> None:
        self.key, self.fill = key, float(fill)

    def __call__(self, data: Mapping) -> Dict:
        d = dict(data)
        img = d[self.key]
        repairs = list(d.get("repairs", []))
        if img.ndim == 4 and img.shape[0] > 1:
            img = img[:1]
            repairs.append("volume_4d_first_kept")
        spacing = d.get("spacing")
        if spacing is not None and hasattr(img, "affine"):
            affine = img.affine.clone().to(torch.float64)
            directions = affine[:3, :3] / torch.linalg.norm(affine[:3, :3], dim=0).clamp_min(1e-12)
            affine[:3, :3] = directions * torch.tensor(spacing, dtype=torch.float64)
            img.affine = affine
        img = img.float()
        rescale = d.get("rescale")
        if rescale is not None:
            img = img * rescale[0] + rescale[1]
        nan = torch.isnan(img)
        if nan.any():
            if nan.all():
                raise ValueError("every voxel is NaN (an empty or broken export); re-export the volume")
            img = torch.where(nan, torch.full_like(img, self.fill), img)
            repairs.append("nan_voxels_repaired")
        d[self.key], d["repairs"] = img, repairs
        return d


def ct_preprocessing(volume_size: Sequence[int], pixdim: Sequence[float] | None = CT_PIXDIM,
                     window: Tuple[float, float] = CT_WINDOW, fit: str = "resize"):
    """MONAI dictionary Compose: {'image': MetaTensor [C, ...] (+ 'rescale', 'spacing')} ->
    {'image': float [1, D, H, W] in [0, 1], 'repairs': [...]}.

    PrepareCTd (metadata, 4D, NaN) -> Orientationd RAS -> Spacingd to `pixdim` mm (finer input
    only: never upsampled) -> ScaleIntensityRanged `window` HU -> [0, 1] (clipped; CT-CLIP's
    [-1000, 1000]) -> CropForegroundd on the body -> Resized (or pad/crop) to `volume_size`.
    `fit='resize'` stretches the body's bounding box to `volume_size`; `fit='pad'` keeps the
    spacing and pads or crops symmetrically (no interpolation of the anatomy's proportions).
    """
    from monai.transforms import (Compose, CropForegroundd, EnsureTyped, Orientationd, Resized,
                                  ResizeWithPadOrCropd, ScaleIntensityRanged, Spacingd)

    if fit not in ("resize", "pad"):
        raise ValueError(f"fit must be 'resize' or 'pad', got {fit!r}.")
    size = tuple(int(s) for s in volume_size)
    keys = ["image"]
    steps: List[Callable] = [PrepareCTd("image", fill=window[0]),
                             Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if pixdim is not None:
        steps.append(Spacingd(keys, pixdim=tuple(pixdim), mode="bilinear", dtype=torch.float32,
                              min_pixdim=tuple(pixdim), max_pixdim=1e6))
    steps += [
        ScaleIntensityRanged(keys, a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(keys, source_key="image", select_fn=_body, margin=2, allow_smaller=True),
        Resized(keys, spatial_size=size, mode="trilinear") if fit == "resize" else ResizeWithPadOrCropd(keys, spatial_size=size),
        EnsureTyped(keys, data_type="tensor", track_meta=False, dtype=torch.float32),
    ]
    return Compose(steps)


def _body(x: torch.Tensor) -> torch.Tensor:
    """Foreground for cropping: anything denser than air (2 % above the window's floor)."""
    return x > 0.02


def ct_preprocessing_record(volume_size: Sequence[int], pixdim: Sequence[float] | None = CT_PIXDIM,
                            window: Tuple[float, float] = CT_WINDOW, fit: str = "resize") -> Dict[str, object]:
    """What `ct_preprocessing` does, as plain data for `manifest.json` (a run says how its
    volumes were made)."""
    return {
        "steps": ["PrepareCTd: first volume of 4D files, dataset spacing into the affine, raw*slope+intercept -> HU, "
                  "NaN -> window floor", "Orientationd RAS",
                  f"Spacingd {list(pixdim)} mm (finer input only)" if pixdim is not None else "no resampling",
                  f"ScaleIntensityRanged [{window[0]}, {window[1]}] HU -> [0, 1], clipped",
                  "CropForegroundd (body: > 2 % above the window floor, margin 2)",
                  f"{'Resized' if fit == 'resize' else 'ResizeWithPadOrCropd'} to {list(volume_size)}",
                  "stored as uint8 (x 255)"],
        "window_hu": [float(window[0]), float(window[1])],
        "pixdim_mm": None if pixdim is None else [float(p) for p in pixdim],
        "volume_size": [int(s) for s in volume_size], "fit": fit,
        "metadata_columns": list(CT_METADATA_COLUMNS),
    }


def volume_transform_3d(volume_size: Sequence[int], pixdim: Sequence[float] | None = CT_PIXDIM,
                        window: Tuple[float, float] = CT_WINDOW, fit: str = "resize", load: bool = True):
    """Path (NIfTI file or DICOM series folder; or, with `load=False`, a MetaTensor [C, ...]) ->
    float [1, D, H, W] in [0, 1] through `ct_preprocessing` (no dataset metadata)."""
    pipeline = ct_preprocessing(volume_size, pixdim, window, fit)

    def run(image):
        return pipeline({"image": read_volume(image) if load else image})["image"]

    return run


def read_volume(path: str | Path):
    """A NIfTI file or DICOM series (folder or .dcm) as a channel-first MetaTensor with its affine."""
    from monai.data import NibabelReader, PydicomReader
    from monai.transforms import LoadImage

    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".dcm":
        reader = PydicomReader(fname_regex=r".*\.dcm$")  # a series folder may hold a report .txt
    else:
        reader = NibabelReader()
    return LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(str(path))


def load_volume_with_repairs(path: str | Path, volume_size: Sequence[int], metadata: Optional[Mapping] = None,
                             **kwargs) -> Tuple[torch.Tensor, List[str]]:
    """One volume through `ct_preprocessing` with its dataset metadata (`ct_metadata(row)`);
    returns the tensor and the repairs made (kept reasons for the skip counter)."""
    try:
        out = ct_preprocessing(volume_size, **kwargs)({"image": read_volume(path), **dict(metadata or {})})
    except RuntimeError as err:  # MONAI wraps a transform's error as "applying transform <object repr>"
        cause: BaseException = err
        while isinstance(cause, RuntimeError) and str(cause).startswith("applying transform") and cause.__cause__:
            cause = cause.__cause__
        if cause is err:
            raise
        raise ValueError(f"{path}: {cause}") from None
    return out["image"], list(out["repairs"])


def load_volume(path: str | Path, volume_size: Sequence[int], metadata: Optional[Mapping] = None,
                **kwargs) -> torch.Tensor:
    """One volume through `ct_preprocessing` (see `load_volume_with_repairs`)."""
    return load_volume_with_repairs(path, volume_size, metadata, **kwargs)[0]
