"""Dense targets in the cache's geometry: a study's mask and boxes, letterboxed as its image was.

The 2D cache letterboxes every image to S x S (`workbench.data.cache.letterbox`: longer side to
S, centred on a zero canvas), so a mask is resized the same way (nearest) and a box is scaled
and shifted the same way. `DenseDataset` is a `StudyDataset` of the annotated studies of a split
with two more fields, `mask` (float [1, S, S], 0/1) and `boxes` (float [N, 4] xyxy in cache
pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from workbench.data.annotations import DenseAnnotations
from workbench.data.datasets import StudyDataset


def letterbox_geometry(height: int, width: int, size: int) -> Tuple[float, float, int, int, int, int]:
    """(scale_x, scale_y, new_w, new_h, left, top) of `letterbox` for an image of (height, width)."""
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return new_w / width, new_h / height, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def letterbox_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """bool [H, W] -> bool [size, size], nearest-neighbour, placed as `letterbox` places the image."""
    from PIL import Image

    _, _, new_w, new_h, left, top = letterbox_geometry(mask.shape[0], mask.shape[1], size)
    small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((new_w, new_h), Image.NEAREST)) > 127
    canvas = np.zeros((size, size), dtype=bool)
    canvas[top:top + new_h, left:left + new_w] = small
    return canvas


def letterbox_boxes(boxes: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """xyxy boxes in the stored image -> xyxy boxes in the letterboxed cache image (clipped)."""
    sx, sy, _, _, left, top = letterbox_geometry(height, width, size)
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]] * sx + left
    out[:, [1, 3]] = out[:, [1, 3]] * sy + top
    out = np.clip(out, 0, size)
    keep = (out[:, 2] - out[:, 0] >= 1) & (out[:, 3] - out[:, 1] >= 1)
    return out[keep]


def image_size_of(path: str) -> Tuple[int, int]:
    """(height, width) of a stored image from its header (no full decode)."""
    from PIL import Image

    if not path or not Path(path).is_file():
        raise FileNotFoundError(f"Image {path!r} is missing: dense targets need the stored image's size; rebuild "
                                f"the manifest (notebook 00) where the images are.")
    if Path(path).suffix.lower() == ".dcm":
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    with Image.open(path) as img:
        return int(img.height), int(img.width)


class DenseDataset(StudyDataset):
    """Annotated studies of one split: `image`, `mask` and `boxes` in the cache's geometry."""

    def __init__(self, manifest: pd.DataFrame, cache_dir: str | Path, annotations: DenseAnnotations,
                 split: Optional[str] = None, image_size: Optional[int] = None,
                 fields: Sequence[str] = ("image", "mask", "boxes")) -> None:
        loaders = {"mask": DenseDataset._mask_field, "boxes": DenseDataset._boxes_field}
        super().__init__(manifest, cache_dir, split=split, modality="cxr", fields=("image",),
                         image_size=image_size, extra_fields=loaders)
        keys = [annotations.key(s, p) for s, p in zip(self.frame["study_id"], self.frame["image_path"])]
        keep = np.asarray([k is not None for k in keys], dtype=bool)
        self.positions = self.positions[keep]
        self.frame = self.frame[keep].reset_index(drop=True)
        self.label_values = self.label_values[keep] if self.label_values is not None else None
        self.keys = [k for k in keys if k is not None]
        self.fields = tuple(fields)
        self.annotations = annotations
        self.size = int(self.cache.get(str(self.frame["study_id"].iat[0])).shape[-1]) if len(self.frame) else 0
        self._stored: Dict[int, Tuple[int, int]] = {}

    def stored_size(self, i: int) -> Tuple[int, int]:
        if i not in self._stored:
            self._stored[i] = image_size_of(str(self.frame["image_path"].iat[i]))
        return self._stored[i]

    @staticmethod
    def _mask_field(ds: "DenseDataset", i: int) -> torch.Tensor:
        mask = ds.annotations.mask(ds.keys[i])
        if mask is None or mask.size == 0:
            return torch.zeros((1, ds.size, ds.size), dtype=torch.float32)
        stored = ds.stored_size(i)
        if mask.shape != stored:
            raise ValueError(f"Mask of {ds.keys[i]} ({ds.annotations.source}) is {mask.shape} but its image "
                             f"{ds.frame['image_path'].iat[i]} is {stored}; give the annotation's true image size.")
        return torch.from_numpy(letterbox_mask(mask, ds.size)).float().unsqueeze(0)

    @staticmethod
    def _boxes_field(ds: "DenseDataset", i: int) -> torch.Tensor:
        boxes = ds.annotations.box_array(ds.keys[i])
        if boxes is None or len(boxes) == 0:
            return torch.zeros((0, 4), dtype=torch.float32)
        height, width = ds.stored_size(i)
        return torch.from_numpy(letterbox_boxes(boxes, height, width, ds.size))

    def positives(self) -> np.ndarray:
        """Which items hold at least one box (or a non-empty mask)."""
        out = []
        for key in self.keys:
            boxes = self.annotations.box_array(key)
            out.append(boxes is not None and len(boxes) > 0)
        return np.asarray(out, dtype=bool)


def dense_collate(items: Sequence[Dict]) -> Dict:
    """Stack images and masks; keep boxes a list (a different count per image)."""
    batch: Dict = {"study_id": [it["study_id"] for it in items], "index": [it["index"] for it in items]}
    for key in ("image", "mask"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    if "boxes" in items[0]:
        batch["boxes"] = [it["boxes"] for it in items]
    return batch
