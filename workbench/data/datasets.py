"""Torch datasets over a manifest + cache, and a collator that tokenises report text per batch.

`StudyDataset` returns one dict per study. Which keys it holds is the `fields` argument; each
field is a loader function `(dataset, i) -> value`, so a method that needs more (region boxes
and sentences for ASG, triplet members for MedTrim) adds a loader instead of a new dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from workbench.data.cache import ArrayCache, image_cache_files, volume_cache_files
from workbench.data.labels import label_columns
from workbench.data.transforms import eval_transform_2d

FieldLoader = Callable[["StudyDataset", int], Any]
TEXT_WINDOW_WORDS = 100  # MedFinder trains on a random window of at most 100 words of the report


def random_word_window(text: str, max_words: int = TEXT_WINDOW_WORDS, generator: Optional[torch.Generator] = None) -> str:
    """A random contiguous window of at most `max_words` words (the whole text when shorter)."""
    words = text.split()
    if len(words) <= max_words:
        return text
    start = int(torch.randint(0, len(words) - max_words + 1, (1,), generator=generator))
    return " ".join(words[start:start + max_words])


def _image(ds: "StudyDataset", i: int) -> torch.Tensor:
    return ds.transform(ds.raw_image(i))


def _text(ds: "StudyDataset", i: int) -> str:
    text = str(ds.frame["report"].iat[i])
    return random_word_window(text, ds.window_words) if ds.text_mode == "window" else text


def _labels(ds: "StudyDataset", i: int) -> torch.Tensor:
    if not ds.label_names:
        return torch.zeros(0, dtype=torch.float32)
    return torch.tensor(ds.label_values[i], dtype=torch.float32)  # a copy: the row may be read-only


# Field name -> loader. `image2` is a second, independently augmented view of the same image.
DEFAULT_FIELDS: Dict[str, FieldLoader] = {
    "image": _image,
    "image2": _image,
    "text": _text,
    "labels": _labels,
}


class StudyDataset(Dataset):
    """Studies of one split and modality, images from the memory-mapped cache.

    Every item has `study_id` and `index` (the study's row in the given manifest) plus the
    requested `fields`: `image` (float [3, H, W] for 2D, [1, D, H, W] for 3D), `image2`,
    `text` (`text_mode='full'` or `'window'`: a random <= 100-word window, MedFinder's text
    augmentation), `labels` (float over the manifest's label_ columns, NaN kept), or any name
    in `extra_fields` (name -> `loader(dataset, i)`).
    """

    def __init__(self, manifest: pd.DataFrame, cache_dir: str | Path, split: Optional[str] = None,
                 modality: str = "cxr", fields: Sequence[str] = ("image", "text"), transform: Optional[Callable] = None,
                 text_mode: str = "full", image_size: Optional[int] = None, volume_size: Optional[Sequence[int]] = None,
                 extra_fields: Optional[Mapping[str, FieldLoader]] = None, window_words: int = TEXT_WINDOW_WORDS) -> None:
        if text_mode not in ("full", "window"):
            raise ValueError(f"text_mode must be 'full' or 'window', got {text_mode!r}.")
        self.loaders: Dict[str, FieldLoader] = {**DEFAULT_FIELDS, **dict(extra_fields or {})}
        unknown = [f for f in fields if f not in self.loaders]
        if unknown:
            raise KeyError(f"Unknown dataset fields {unknown}; known: {sorted(self.loaders)} (add loaders via extra_fields).")
        self.fields = tuple(fields)
        self.modality = modality
        self.text_mode = text_mode
        self.window_words = window_words
        mask = np.array(manifest["modality"].astype(str).eq(modality), dtype=bool)
        if split is not None:
            mask &= manifest["split"].astype(str).eq(split).to_numpy()
        self.cache: Optional[ArrayCache] = None
        if any(f in ("image", "image2") for f in self.fields):
            self.cache = self._open_cache(Path(cache_dir), manifest, modality, image_size, volume_size)
            in_cache = manifest["study_id"].astype(str).map(lambda s: s in self.cache).to_numpy()
            mask &= in_cache
        self.positions = np.flatnonzero(mask)
        self.frame = manifest.iloc[self.positions].reset_index(drop=True)
        self.label_names: List[str] = label_columns(manifest.columns)
        self.label_values = (self.frame[self.label_names].apply(pd.to_numeric, errors="coerce")
                             .to_numpy(dtype=np.float32, na_value=np.nan) if self.label_names else None)
        self.transform = transform or (eval_transform_2d() if modality == "cxr" else _volume_to_tensor)

    @staticmethod
    def _open_cache(cache_dir: Path, manifest: pd.DataFrame, modality: str, image_size: Optional[int],
                    volume_size: Optional[Sequence[int]]) -> ArrayCache:
        if modality == "cxr":
            if image_size is None:
                found = sorted(cache_dir.glob("images_*.npy"))
                if len(found) != 1:
                    raise FileNotFoundError(f"Give image_size: {cache_dir} holds {len(found)} image caches "
                                            f"({[p.name for p in found]}); run notebooks/00_data_prep.ipynb if none.")
                image_size = int(found[0].stem.split("_")[1])
            return ArrayCache.open(*image_cache_files(cache_dir, image_size))
        if volume_size is None:
            found = sorted(cache_dir.glob("volumes_*.npy"))
            if len(found) != 1:
                raise FileNotFoundError(f"Give volume_size: {cache_dir} holds {len(found)} volume caches; "
                                        "run notebooks/00_data_prep.ipynb if none.")
            volume_size = [int(s) for s in found[0].stem.split("_")[1].split("x")]
        return ArrayCache.open(*volume_cache_files(cache_dir, volume_size))

    def __len__(self) -> int:
        return len(self.positions)

    def raw_image(self, i: int) -> torch.Tensor:
        """The cached uint8 array of item i as a tensor with a channel axis ([1, H, W] / [1, D, H, W])."""
        assert self.cache is not None
        return torch.from_numpy(self.cache.get(str(self.frame["study_id"].iat[i]))).unsqueeze(0)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        item: Dict[str, Any] = {"study_id": str(self.frame["study_id"].iat[i]), "index": int(self.positions[i])}
        for name in self.fields:
            item[name] = self.loaders[name](self, i)
        return item


def _volume_to_tensor(volume: torch.Tensor) -> torch.Tensor:
    """uint8 [1, D, H, W] -> float in [0, 1] (the window already set the intensity scale)."""
    return volume.float() / 255.0


class TextCollator:
    """Batches `StudyDataset` items: stacks tensors, tokenises `text` padded to the batch's longest.

    `tokenizer` is any HF-style callable (`tokenizer(texts, padding=..., truncation=...,
    max_length=..., return_tensors='pt')`). Adds `input_ids` and `attention_mask`; keeps `text`.
    """

    def __init__(self, tokenizer: Any, max_length: int = 128, text_field: str = "text") -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_field = text_field

    def __call__(self, items: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
        items = list(items)
        batch: Dict[str, Any] = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if isinstance(values[0], torch.Tensor):
                batch[key] = torch.stack(values)
            elif isinstance(values[0], (int, np.integer)) and not isinstance(values[0], bool):
                batch[key] = torch.as_tensor(values, dtype=torch.long)
            elif isinstance(values[0], float):
                batch[key] = torch.as_tensor(values, dtype=torch.float32)
            else:
                batch[key] = values
        if self.text_field in batch:
            tokens = self.tokenizer(list(batch[self.text_field]), padding="longest", truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            batch["input_ids"] = tokens["input_ids"]
            batch["attention_mask"] = tokens["attention_mask"]
        return batch
