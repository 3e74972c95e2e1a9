"""Segmentation fine-tuning: a U-Net decoder over a trained image encoder's feature pyramid, Dice.

The seeds' dense protocol (MGCA, Wang et al. 2022 §4.1, data-efficiency at 1 / 10 / 100 % of
the training set; CM-CGNS and ASG report the same SIIM / RSNA Dice tables): fine-tune a U-Net on
the pre-trained encoder, either frozen (only the decoder learns: what the encoder already holds)
or fine-tuned end to end. Built on MONAI: `UNetDecoder` + `SegmentationHead` (the decoder of
MONAI's FlexibleUNet), `DiceCELoss`, and `DiceMetric` for the score: per-image Dice of the
thresholded sigmoid, images whose ground truth is empty left out (MONAI's `ignore_empty`), mean
over images with a 95 % bootstrap CI over them.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from workbench.eval.stats import bootstrap_ci, metric_with_ci
from workbench.models.pyramid import FeaturePyramid, freeze_module


class SegmentationModel(nn.Module):
    """Encoder pyramid -> MONAI U-Net decoder -> one-channel logits at the input's resolution."""

    def __init__(self, image_encoder: nn.Module, spatial_dims: int = 2, frozen: bool = True) -> None:
        super().__init__()
        from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder

        self.pyramid = FeaturePyramid(image_encoder, spatial_dims)
        n = len(self.pyramid.channels)
        decoder_channels = [max(8, 8 * 2 ** (n - 1 - i)) for i in range(n)]  # 128 ... 8: CPU-sized
        self.decoder = UNetDecoder(spatial_dims=spatial_dims,
                                   encoder_channels=[self.pyramid.in_channels] + self.pyramid.channels,
                                   decoder_channels=decoder_channels, act=("relu", {"inplace": True}),
                                   norm=("batch", {"eps": 1e-3, "momentum": 0.1}), dropout=0.0, bias=False,
                                   upsample="nontrainable", pre_conv="default", interp_mode="nearest",
                                   align_corners=None, is_pad=True)
        self.head = SegmentationHead(spatial_dims=spatial_dims, in_channels=decoder_channels[-1], out_channels=1,
                                     kernel_size=3)
        self.frozen = frozen
        freeze_module(self.pyramid, frozen)

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        if self.frozen:  # a frozen encoder keeps its batch-norm statistics
            self.pyramid.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.pyramid(images)
        return self.head(self.decoder([images] + maps, len(maps) - 1))  # the input is no skip


def dice_scores(predicted: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-image Dice 2|P∩T| / (|P| + |T|) of binary masks [N, 1, ...] with MONAI's `DiceMetric`;
    NaN where the ground truth is empty (left out of the mean, MONAI's `ignore_empty`)."""
    from monai.metrics import DiceMetric

    p = torch.as_tensor(np.asarray(predicted) if not isinstance(predicted, torch.Tensor) else predicted).float()
    t = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target).float()
    if p.shape != t.shape or p.dim() < 3:
        raise ValueError(f"Predicted masks {tuple(p.shape)} and targets {tuple(t.shape)} must both be [N, 1, ...].")
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
    return metric(p, t).reshape(-1).cpu().numpy().astype(np.float64)


def _batches(indices: np.ndarray, steps: int, batch_size: int, seed: int):
    """`steps` batches drawn by epochs over `indices` (reshuffled each pass, fixed seed)."""
    rng = np.random.default_rng(seed)
    order: List[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += list(rng.permutation(indices))
        yield np.asarray(order[:batch_size])
        order = order[batch_size:]


def _stack(dataset, rows: Sequence[int], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[int(i)] for i in rows]
    return (torch.stack([it["image"] for it in items]).to(device),
            torch.stack([it["mask"] for it in items]).to(device))


def train_segmentation(model: SegmentationModel, dataset, indices: np.ndarray, steps: int = 150,
                       batch_size: int = 16, lr: float = 1e-3, seed: int = 0, progress: bool = True,
                       desc: str = "segmentation") -> List[float]:
    """Fit the decoder (and the encoder unless frozen) with Dice + BCE; returns the loss per step."""
    from monai.losses import DiceCELoss
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    loss_fn = DiceCELoss(sigmoid=True, batch=True)  # Dice over the batch: empty images do not pull it to 0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    torch.manual_seed(seed)
    model.train()
    losses = []
    size = min(batch_size, max(2, len(indices)))
    for rows in tqdm(_batches(np.asarray(indices), steps, size, seed), total=steps, desc=desc,
                     disable=not progress, leave=False):
        images, masks = _stack(dataset, rows, device)
        loss = loss_fn(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def predict_masks(model: SegmentationModel, dataset, batch_size: int = 32, progress: bool = True,
                  desc: str = "segmentation: predict") -> Tuple[np.ndarray, np.ndarray]:
    """(probabilities float16 [N, 1, H, W], targets bool [N, 1, H, W]) over the whole dataset."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    model.eval()
    probs, targets = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc=desc, disable=not progress, leave=False):
        images, masks = _stack(dataset, range(start, min(len(dataset), start + batch_size)), device)
        probs.append(torch.sigmoid(model(images)).half().cpu().numpy())
        targets.append(masks.bool().cpu().numpy())
    return np.concatenate(probs), np.concatenate(targets)


def dice_rows(scores: np.ndarray, pct: str, n_boot: int, seed: int) -> List[Dict[str, float]]:
    """`Dice@<pct>` over the images with a non-empty target, with a bootstrap CI over them."""
    valid = scores[np.isfinite(scores)]
    if len(valid) == 0:
        return [metric_with_ci(f"Dice@{pct}", float("nan"))]
    ci = bootstrap_ci(lambda idx: float(np.mean(valid[idx])), len(valid), n_boot, seed)
    return [metric_with_ci(f"Dice@{pct}", float(np.mean(valid)), ci)]


def segmentation_evaluate(image_encoder: nn.Module, train_set, test_set, fractions: Sequence[float] = (0.01, 0.1, 1.0),
                          finetune: bool = False, steps: int = 150, batch_size: int = 16, lr: float = 1e-3,
                          seed: int = 0, n_boot: int = 200, progress: bool = True,
                          keep: int = 8) -> Tuple[List[Dict[str, float]], Optional[Dict[str, np.ndarray]]]:
    """Dice rows at each train fraction (each from a fresh copy of the encoder), and the largest
    fraction's predictions on the first `keep` positive test images for the figure panel."""
    from workbench.eval.probe import subsample_indices

    device = next(image_encoder.parameters()).device
    rows: List[Dict[str, float]] = []
    panel = None
    for fraction in sorted(fractions):
        pct = f"{100 * fraction:g}%"
        idx = subsample_indices(len(train_set), fraction, seed)
        torch.manual_seed(seed)
        model = SegmentationModel(copy.deepcopy(image_encoder), frozen=not finetune).to(device)
        train_segmentation(model, train_set, idx, steps, batch_size, lr, seed, progress, desc=f"segmentation {pct}")
        probs, targets = predict_masks(model, test_set, progress=progress)
        scores = dice_scores(probs >= 0.5, targets)
        rows += dice_rows(scores, pct, n_boot, seed)
        rows.append(metric_with_ci(f"n_train@{pct}", float(len(idx))))
        if fraction == max(fractions):
            chosen = np.flatnonzero(targets.reshape(len(targets), -1).any(1))[:keep]
            panel = {"study_ids": np.asarray([test_set.frame["study_id"].iat[i] for i in chosen], dtype=str),
                     "images": np.stack([test_set.raw_image(int(i)).numpy()[0] for i in chosen])
                     if len(chosen) else np.zeros((0, 1, 1), np.uint8),
                     "probs": probs[chosen, 0], "targets": targets[chosen, 0], "dice": scores[chosen]}
        del model
    return rows, panel
