"""Decoded-once image caches: every image is decoded and resized once, then memory-mapped.

Training reads the same images many epochs; decoding JPEG (or resampling a CT volume) every
time dominates a CPU data loader. The 2D cache is one `.npy` file of uint8 [N, S, S] grayscale
images (letterboxed: aspect kept, zero-padded) plus an index (study_id -> row); the 3D cache
is one uint8 [N, D, H, W] array of volumes after the MONAI pipeline of
`workbench.data.transforms.ct_preprocessing` with each study's own CT metadata (values in
[0, 1] of the HU window stored as 0..255).
Full decoding happens here, so a truncated JPEG or NIfTI that passed the readers' header check
is caught here and counted (`unreadable_image` / `unreadable_volume`).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from workbench.data.skips import SkipCounter
from workbench.io import atomic_path

INDEX_COLUMNS = ["study_id", "row", "image_path", "mtime_ns", "prep", "ok", "error", "repairs"]


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def image_cache_files(cache_dir: str | Path, image_size: int) -> Tuple[Path, Path]:
    """(array .npy, index .parquet) of the 2D cache at `image_size`."""
    cache_dir = Path(cache_dir)
    return cache_dir / f"images_{image_size}.npy", cache_dir / f"images_{image_size}.index.parquet"


def volume_cache_files(cache_dir: str | Path, volume_size: Sequence[int]) -> Tuple[Path, Path]:
    """(array .npy, index .parquet) of the 3D cache at `volume_size`."""
    tag = "x".join(str(int(s)) for s in volume_size)
    cache_dir = Path(cache_dir)
    return cache_dir / f"volumes_{tag}.npy", cache_dir / f"volumes_{tag}.index.parquet"


def load_image_2d(path: str | Path) -> np.ndarray:
    """Decode one radiograph (JPEG/PNG/... or DICOM) to a grayscale uint8 [H, W] array.

    16-bit PNGs and DICOM pixel data are min-max scaled (after the DICOM modality/VOI LUT;
    MONOCHROME1 inverted) so bright means dense in every source.
    """
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut

        ds = pydicom.dcmread(str(path))
        arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
        if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            arr = arr.max() - arr
        if arr.ndim == 3:
            arr = arr[..., 0] if arr.shape[-1] in (3, 4) else arr[0]
        return _scale_to_uint8(arr)
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # full decode: raises on truncated or corrupt data
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return _scale_to_uint8(np.asarray(img, dtype=np.float32))
        return np.asarray(img.convert("L"), dtype=np.uint8)


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if hi <= lo:
        return np.zeros(arr.shape[:2], dtype=np.uint8)
    return np.round((arr - lo) / (hi - lo) * 255.0).astype(np.uint8)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the longer side is `size` (bilinear), centre on a zero [size, size] canvas."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR), dtype=np.uint8)
    if (new_h, new_w) == (size, size):
        return resized
    canvas = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


@dataclass
class ArrayCache:
    """A memory-mapped cache array plus its study_id -> row index.

    Opened lazily and dropped when pickled, so DataLoader workers each map the file
    themselves instead of receiving a copy of the whole array.
    """

    array_path: Path
    index: pd.DataFrame
    _array: Optional[np.ndarray] = None
    row_of: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ok = self.index[self.index["ok"]]
        self.row_of = dict(zip(ok["study_id"].astype(str), ok["row"].astype(int)))

    @classmethod
    def open(cls, array_path: str | Path, index_path: str | Path) -> "ArrayCache":
        array_path, index_path = Path(array_path), Path(index_path)
        if not array_path.is_file() or not index_path.is_file():
            raise FileNotFoundError(f"No image cache at {array_path}; run notebooks/00_data_prep.ipynb "
                                    "(workbench.data.prepare_run_data) to build it.")
        return cls(array_path, pd.read_parquet(index_path))

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> Dict:
        return {**self.__dict__, "_array": None}

    def __contains__(self, study_id: str) -> bool:
        return study_id in self.row_of

    def __len__(self) -> int:
        return len(self.row_of)

    def get(self, study_id: str) -> np.ndarray:
        """The cached array of one study (a copy, safe to hand to torch)."""
        if study_id not in self.row_of:
            raise KeyError(f"Study {study_id!r} is not in the cache {self.array_path} (failed to decode, or the "
                           "cache was built from another manifest: re-run notebooks/00_data_prep.ipynb).")
        return np.array(self.array[self.row_of[study_id]])


def _reusable(array_path: Path, index_path: Path, index: pd.DataFrame, shape: Tuple[int, ...]) -> bool:
    if not array_path.is_file() or not index_path.is_file():
        return False
    try:
        old = pd.read_parquet(index_path)
        arr = np.load(array_path, mmap_mode="r")
    except Exception:  # noqa: BLE001 - an unreadable old cache is simply rebuilt
        return False
    same = (list(old["study_id"].astype(str)) == list(index["study_id"])
            and list(old["image_path"].astype(str)) == list(index["image_path"])
            and list(old["mtime_ns"]) == list(index["mtime_ns"])
            and "prep" in old.columns and list(old["prep"].astype(str)) == list(index["prep"]))
    return same and tuple(arr.shape) == shape


def _failure_reason(reason: str, error: str) -> str:
    """An image too large for Pillow's decompression-bomb guard is valid, not corrupt: say so."""
    return "oversized_image" if str(error).startswith("DecompressionBombError") else reason


def _count_outcomes(index: pd.DataFrame, skips: SkipCounter, reason: str) -> None:
    """Count what a (new or reused) cache dropped and repaired, per study."""
    for path, ok, err, repairs in index[["image_path", "ok", "error", "repairs"]].itertuples(index=False):
        if not ok:
            skips.skip(_failure_reason(reason, err), path, err)
        for repair in [r for r in str(repairs).split(",") if r]:
            skips.keep(repair, path)


def _write_cache(rows: pd.DataFrame, array_path: Path, index_path: Path, item_shape: Tuple[int, ...],
                 decode: Callable[[Dict], Tuple[np.ndarray, List[str]]], prep: List[str], skips: SkipCounter,
                 reason: str, progress: bool, desc: str, num_workers: int) -> ArrayCache:
    """Decode every row once into a memory-mapped array (atomically) plus its index.

    `decode(row) -> (array, repairs)`; `prep` is one string per row saying how it is decoded
    (size, window, its metadata), so a cache is reused only for the same studies, files and
    preprocessing. Failures become `reason` skips, repairs kept reasons.
    """
    from tqdm.auto import tqdm

    records = rows.to_dict("records")
    index = pd.DataFrame({"study_id": rows["study_id"].astype(str).tolist(),
                          "row": np.arange(len(rows)), "image_path": rows["image_path"].astype(str).tolist()})
    index["mtime_ns"] = [_mtime_ns(p) for p in index["image_path"]]
    index["prep"] = list(prep)
    shape = (len(index),) + tuple(item_shape)
    if _reusable(array_path, index_path, index, shape):
        cache = ArrayCache.open(array_path, index_path)
        _count_outcomes(cache.index, skips, reason)  # the same studies fail again: count them again
        return cache
    ok: List[bool] = [False] * len(index)
    errors: List[str] = [""] * len(index)
    repairs: List[str] = [""] * len(index)

    def work(i: int):
        try:
            arr, fixed = decode(records[i])
            return i, arr, fixed, ""
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the same skip
            return i, None, [], f"{type(exc).__name__}: {exc}"

    with atomic_path(array_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        workers = num_workers if num_workers > 0 else 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(work, range(len(index))) if workers > 1 else map(work, range(len(index)))
            for i, arr, fixed, err in tqdm(results, total=len(index), desc=desc, disable=not progress):
                if arr is None:
                    errors[i] = err
                    skips.skip(_failure_reason(reason, err), index["image_path"].iat[i], err)  # strict: raises before the rename
                    continue
                out[i] = arr
                ok[i] = True
                repairs[i] = ",".join(fixed)
        out.flush()
        del out
    index["ok"], index["error"], index["repairs"] = ok, errors, repairs
    _count_outcomes(index[index["ok"]], skips, reason)  # the repairs (failures were counted above)
    with atomic_path(index_path) as tmp:
        index.to_parquet(tmp, index=False)
    return ArrayCache.open(array_path, index_path)


def build_image_cache(manifest: pd.DataFrame, cache_dir: str | Path, image_size: int, *,
                      skips: Optional[SkipCounter] = None, progress: bool = True,
                      num_workers: int = 0) -> ArrayCache:
    """Decode every 2D study's `image_path` once into `cache_dir/images_<size>.npy`.

    An existing cache for the same studies, paths and size is reused. Images that fail to
    decode are counted (`unreadable_image`) and marked `ok=False` in the index (strict: raise).
    """
    skips = skips or SkipCounter()
    rows = manifest[(manifest["modality"] == "cxr") & (manifest["image_path"].astype(str) != "")]
    array_path, index_path = image_cache_files(cache_dir, image_size)
    num_workers = num_workers or min(4, os.cpu_count() or 1)
    return _write_cache(rows, array_path, index_path, (image_size, image_size),
                        lambda row: (letterbox(load_image_2d(row["image_path"]), image_size), []),
                        [f"letterbox {image_size}"] * len(rows), skips, "unreadable_image",
                        progress, f"caching images at {image_size}px", num_workers)


def build_volume_cache(manifest: pd.DataFrame, cache_dir: str | Path, volume_size: Sequence[int], *,
                       skips: Optional[SkipCounter] = None, progress: bool = True, **transform_options) -> ArrayCache:
    """Run every CT study through the MONAI volume pipeline once into `volumes_<DxHxW>.npy`.

    Each study's own CT metadata (CT-RATE: rescale to HU and spacing, in the manifest's
    `rescale_*` / `spacing_*` columns) is applied; `transform_options` (pixdim, window, fit)
    go to `workbench.data.transforms.ct_preprocessing`. NaN voxels and 4D files are repaired
    and counted as kept reasons; volumes that fail count as `unreadable_volume`.
    """
    from workbench.data.transforms import ct_metadata, load_volume_with_repairs

    skips = skips or SkipCounter()
    rows = manifest[(manifest["modality"] == "ct") & (manifest["image_path"].astype(str) != "")]
    size = tuple(int(s) for s in volume_size)
    array_path, index_path = volume_cache_files(cache_dir, size)

    def decode(row: Dict) -> Tuple[np.ndarray, List[str]]:
        volume, repairs = load_volume_with_repairs(row["image_path"], size, ct_metadata(row), **transform_options)
        return np.round(np.clip(volume[0].numpy(), 0.0, 1.0) * 255.0).astype(np.uint8), repairs

    options = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in sorted(transform_options.items())})
    prep = [f"{options} {json.dumps(ct_metadata(row))}" for row in rows.to_dict("records")]
    return _write_cache(rows, array_path, index_path, size, decode, prep, skips, "unreadable_volume", progress,
                        f"caching volumes at {'x'.join(map(str, size))}", num_workers=1)


def open_image_cache(cache_dir: str | Path, image_size: int) -> ArrayCache:
    return ArrayCache.open(*image_cache_files(cache_dir, image_size))


def open_volume_cache(cache_dir: str | Path, volume_size: Sequence[int]) -> ArrayCache:
    return ArrayCache.open(*volume_cache_files(cache_dir, volume_size))


def failed_studies(cache: ArrayCache) -> List[str]:
    """Study ids whose image failed to decode while building the cache."""
    return cache.index.loc[~cache.index["ok"], "study_id"].astype(str).tolist()
