"""Embed a manifest split with a DualEncoder: batched, no_grad, tqdm, cached to disk.

What is cached is the encoders' pooled features (before projection), keyed by a fingerprint
of the encoder weights: the linear probe reads them directly, the embeddings are the
projection heads applied to them (exactly `DualEncoder.encode_*`), and two checkpoints that
share frozen encoders (the `frozen` and `locked` baselines) share one encoder pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from workbench.io import atomic_path


@dataclass
class SplitFeatures:
    """Pooled encoder features of one split, one row per study, with what evaluations need."""

    study_ids: List[str]
    texts: List[str]
    image_features: np.ndarray
    text_features: np.ndarray
    labels: np.ndarray  # [N, L] float (1 / 0 / -1 / NaN), manifest convention
    label_names: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.study_ids)

    def save(self, path: Path, fingerprint: str) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, study_ids=np.asarray(self.study_ids, dtype=str), texts=np.asarray(self.texts, dtype=str),
                         image_features=self.image_features, text_features=self.text_features, labels=self.labels,
                         label_names=np.asarray(self.label_names, dtype=str), fingerprint=np.asarray(fingerprint))

    @classmethod
    def load(cls, path: Path) -> Tuple["SplitFeatures", str]:
        with np.load(path, allow_pickle=False) as z:
            feats = cls([str(s) for s in z["study_ids"]], [str(t) for t in z["texts"]], z["image_features"],
                        z["text_features"], z["labels"], [str(n) for n in z["label_names"]])
            return feats, str(z["fingerprint"])


def encoder_fingerprint(model: torch.nn.Module, extra: str = "") -> str:
    """Short hash of the image and text encoder weights (not the heads) and `extra` settings."""
    digest = hashlib.sha1(extra.encode())
    for part in (model.image_encoder, model.text_encoder):
        digest.update(type(part).__name__.encode())
        for name, tensor in part.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def compute_features(model, dataset, batch_size: int = 32, num_workers: int = 0, max_length: Optional[int] = None,
                     progress: bool = True, desc: str = "embedding") -> SplitFeatures:
    """Pooled image and text features of every item of a `StudyDataset` (fields image, text)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from workbench.data.datasets import TextCollator

    was_training = model.training
    model.eval()
    device = _model_device(model)
    limit = min(max_length or model.max_text_tokens, int(getattr(model.text_encoder, "max_length", 512)))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=TextCollator(model.tokenizer, limit))
    image_parts, text_parts, ids, texts = [], [], [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        image_parts.append(model.image_encoder(batch["image"].to(device)).pooled.float().cpu())
        text_parts.append(model.text_encoder(batch["input_ids"].to(device),
                                             batch["attention_mask"].to(device)).pooled.float().cpu())
        ids += list(batch["study_id"])
        texts += list(batch["text"])
    model.train(was_training)
    labels = dataset.label_values if dataset.label_values is not None else np.zeros((len(ids), 0), np.float32)
    width_i = int(model.image_encoder.out_dim)
    width_t = int(model.text_encoder.out_dim)
    return SplitFeatures(
        study_ids=ids, texts=texts,
        image_features=torch.cat(image_parts).numpy() if image_parts else np.zeros((0, width_i), np.float32),
        text_features=torch.cat(text_parts).numpy() if text_parts else np.zeros((0, width_t), np.float32),
        labels=np.asarray(labels, dtype=np.float32), label_names=list(dataset.label_names))


def split_features(model, manifest: pd.DataFrame, cache_dir: str | Path, split: str, store_dir: str | Path | None = None,
                   modality: str = "cxr", batch_size: int = 32, max_length: Optional[int] = None,
                   progress: bool = True) -> SplitFeatures:
    """Features of one split, computed once: reused from `store_dir` when the encoder weights
    (fingerprint), split and manifest studies are unchanged."""
    from workbench.data.datasets import StudyDataset

    dataset = StudyDataset(manifest, cache_dir, split=split, modality=modality, fields=("image", "text"))
    if len(dataset) == 0:
        raise ValueError(f"Split {split!r} ({modality}) has no studies with a cached image in {cache_dir}; "
                         f"check the manifest's split column or run notebooks/00_data_prep.ipynb.")
    key = encoder_fingerprint(model, f"{modality}|{max_length}|" + ",".join(map(str, dataset.frame["study_id"])))
    path = Path(store_dir) / f"{key}_{split}.npz" if store_dir else None
    if path is not None and path.is_file():
        cached, stored_key = SplitFeatures.load(path)
        if stored_key == key:
            return cached
    feats = compute_features(model, dataset, batch_size, max_length=max_length, progress=progress,
                             desc=f"embedding {split}")
    if path is not None:
        feats.save(path, key)
    return feats


@torch.no_grad()
def project_features(model, image_features: np.ndarray, text_features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Unit-norm embeddings from pooled features: what `encode_image` / `encode_text` return."""
    device = _model_device(model)
    img = F.normalize(model.image_proj(torch.as_tensor(image_features, device=device)), dim=-1)
    txt = F.normalize(model.text_proj(torch.as_tensor(text_features, device=device)), dim=-1)
    return img.float().cpu().numpy(), txt.float().cpu().numpy()


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm text embeddings of arbitrary strings (prompts, keyword queries)."""
    model.eval()
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = model.tokenize(list(texts[start:start + batch_size]))
        parts.append(model.encode_text(batch["input_ids"], batch["attention_mask"]).float().cpu())
    return torch.cat(parts).numpy()


def embed_split(model, manifest: pd.DataFrame, cache_dir: str | Path, split: str, store_dir: str | Path | None = None,
                modality: str = "cxr", batch_size: int = 32,
                progress: bool = True) -> Tuple[np.ndarray, np.ndarray, SplitFeatures]:
    """(image embeddings, text embeddings, features) of one split, unit-norm, row = study."""
    feats = split_features(model, manifest, cache_dir, split, store_dir, modality, batch_size, progress=progress)
    img, txt = project_features(model, feats.image_features, feats.text_features)
    return img, txt, feats


@torch.no_grad()
def image_features(model, dataset, batch_size: int = 32, progress: bool = True, desc: str = "image features") -> np.ndarray:
    """Pooled image-encoder features [N, D] of a `StudyDataset` with an `image` field (no text)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    model.eval()
    device = _model_device(model)
    parts = [model.image_encoder(batch["image"].to(device)).pooled.float().cpu()
             for batch in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc=desc,
                               disable=not progress, leave=False)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, int(model.image_encoder.out_dim)), np.float32)
