"""Detection fine-tuning: torchvision's Faster R-CNN with an FPN over a trained image encoder, mAP.

The seeds' detection protocol (MGCA, Wang et al. 2022 §4.1, on RSNA pneumonia and Object-CXR at
1 / 10 / 100 % of the training set; CM-CGNS and ASG follow it) judges what the pre-trained
encoder gives a detector. Here the detector is torchvision's maintained Faster R-CNN
(Ren et al. 2015) over a `FeaturePyramidNetwork` on the encoder's stride 4-32 maps, one
foreground class, the encoder frozen or fine-tuned. The score is torchmetrics'
`MeanAveragePrecision` (COCO-style AP) averaged over IoU 0.4:0.05:0.75, the RSNA challenge's
thresholds that MGCA reports on (`mAP`), and AP at IoU 0.5 (`mAP50`); 95 % bootstrap CIs
resample test images.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from workbench.eval.stats import bootstrap_ci, metric_with_ci
from workbench.models.pyramid import FeaturePyramid, freeze_module

IOU_THRESHOLDS = [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]  # RSNA Pneumonia challenge's
FPN_STRIDES = (4, 8, 16, 32)


class PyramidBackbone(nn.Module):
    """Encoder pyramid (strides 4-32) + torchvision FPN -> OrderedDict of maps, as torchvision's
    detectors expect (`out_channels` attribute included)."""

    def __init__(self, image_encoder: nn.Module, out_channels: int = 64, frozen: bool = True) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        self.pyramid = FeaturePyramid(image_encoder, 2)
        self.levels = [i for i, s in enumerate(self.pyramid.strides) if s in FPN_STRIDES] or \
            list(range(1, len(self.pyramid.strides)))
        self.fpn = FeaturePyramidNetwork([self.pyramid.channels[i] for i in self.levels], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.frozen = frozen
        freeze_module(self.pyramid, frozen)

    def train(self, mode: bool = True) -> "PyramidBackbone":
        super().train(mode)
        if self.frozen:
            self.pyramid.eval()
        return self

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.pyramid(images)
        return self.fpn(OrderedDict((str(k), maps[i]) for k, i in enumerate(self.levels)))


def build_detector(image_encoder: nn.Module, image_size: int, frozen: bool = True) -> nn.Module:
    """Faster R-CNN (two classes: background, finding) on the encoder; inputs are already
    normalised and sized, so torchvision's transform neither rescales nor renormalises."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = PyramidBackbone(image_encoder, frozen=frozen)
    names = [str(k) for k in range(len(backbone.levels))]
    n_maps = len(names) + 1  # + the max-pooled extra level
    base = max(4, image_size // 32)
    anchors = AnchorGenerator(sizes=tuple((base * 2 ** k,) for k in range(n_maps)),
                              aspect_ratios=((0.5, 1.0, 2.0),) * n_maps)
    # A few objects per radiograph: far fewer proposals and sampled ROIs, and a 256-wide box head
    # instead of torchvision's COCO-sized 1024 (most of the CPU time otherwise).
    return FasterRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors,
                      box_roi_pool=MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2),
                      box_head=TwoMLPHead(backbone.out_channels * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, 2),
                      min_size=image_size, max_size=image_size, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
                      rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                      rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=64,
                      box_detections_per_img=20, box_score_thresh=0.01)


def _targets(boxes: Sequence[torch.Tensor], device: torch.device) -> List[Dict[str, torch.Tensor]]:
    return [{"boxes": b.to(device).reshape(-1, 4), "labels": torch.ones(len(b), dtype=torch.int64, device=device)}
            for b in boxes]


def train_detector(model: nn.Module, dataset, indices: np.ndarray, steps: int = 150, batch_size: int = 8,
                   lr: float = 1e-3, seed: int = 0, progress: bool = True, desc: str = "detection") -> List[float]:
    """Fit the detector with its own RPN + ROI losses (summed); returns the loss per step."""
    from tqdm.auto import tqdm

    from workbench.eval.segmentation import _batches

    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    torch.manual_seed(seed)
    model.train()
    losses = []
    size = min(batch_size, max(2, len(indices)))
    for rows in tqdm(_batches(np.asarray(indices), steps, size, seed), total=steps, desc=desc,
                     disable=not progress, leave=False):
        items = [dataset[int(i)] for i in rows]
        terms = model([it["image"].to(device) for it in items], _targets([it["boxes"] for it in items], device))
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def predict_boxes(model: nn.Module, dataset, batch_size: int = 16, progress: bool = True,
                  desc: str = "detection: predict") -> Tuple[List[Dict[str, torch.Tensor]], List[Dict[str, torch.Tensor]]]:
    """(predictions, targets) per image as torchmetrics expects them (boxes, scores, labels)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    model.eval()
    preds, targets = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc=desc, disable=not progress, leave=False):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        for out, it in zip(model([it["image"].to(device) for it in items]), items):
            preds.append({k: v.cpu() for k, v in out.items()})
            targets.append({"boxes": it["boxes"].reshape(-1, 4), "labels": torch.ones(len(it["boxes"]), dtype=torch.int64)})
    return preds, targets


def mean_average_precision(preds: Sequence[Dict[str, torch.Tensor]], targets: Sequence[Dict[str, torch.Tensor]],
                           iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> Dict[str, float]:
    """torchmetrics' COCO-style mAP over `iou_thresholds` (`mAP`) and at IoU 0.5 (`mAP50`);
    -1 from torchmetrics (no ground-truth box at all) becomes NaN."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=list(iou_thresholds))
    metric.update(list(preds), list(targets))
    out = metric.compute()
    values = {"mAP": float(out["map"]), "mAP50": float(out["map_50"]) if 0.5 in iou_thresholds else float("nan")}
    return {k: (float("nan") if v < 0 else v) for k, v in values.items()}


def detection_evaluate(image_encoder: nn.Module, train_set, test_set, fractions: Sequence[float] = (0.01, 0.1, 1.0),
                       finetune: bool = False, steps: int = 150, batch_size: int = 8, lr: float = 1e-3, seed: int = 0,
                       n_boot: int = 50, progress: bool = True,
                       keep: int = 8) -> Tuple[List[Dict[str, float]], Optional[Dict[str, np.ndarray]]]:
    """mAP rows at each train fraction (a fresh copy of the encoder each), and the largest
    fraction's boxes on the first `keep` positive test images for the figure panel."""
    from workbench.eval.probe import subsample_indices

    device = next(image_encoder.parameters()).device
    size = int(test_set.size)
    rows: List[Dict[str, float]] = []
    panel = None
    for fraction in sorted(fractions):
        pct = f"{100 * fraction:g}%"
        idx = subsample_indices(len(train_set), fraction, seed)
        torch.manual_seed(seed)
        model = build_detector(copy.deepcopy(image_encoder), size, frozen=not finetune).to(device)
        train_detector(model, train_set, idx, steps, batch_size, lr, seed, progress, desc=f"detection {pct}")
        preds, targets = predict_boxes(model, test_set, progress=progress)
        values = mean_average_precision(preds, targets)
        for name in ("mAP", "mAP50"):
            stat = lambda sel, name=name: mean_average_precision([preds[i] for i in sel],  # noqa: E731
                                                                 [targets[i] for i in sel])[name]
            ci = bootstrap_ci(stat, len(preds), n_boot, seed) if n_boot > 0 else None
            rows.append(metric_with_ci(f"{name}@{pct}", values[name], ci))
        rows.append(metric_with_ci(f"n_train@{pct}", float(len(idx))))
        if fraction == max(fractions):
            chosen = [i for i, t in enumerate(targets) if len(t["boxes"])][:keep]
            panel = {"study_ids": np.asarray([test_set.frame["study_id"].iat[i] for i in chosen], dtype=str),
                     "images": np.stack([test_set.raw_image(i).numpy()[0] for i in chosen])
                     if chosen else np.zeros((0, 1, 1), np.uint8)}
            for tag, source, fields in (("pred", preds, ("boxes", "scores")), ("gt", targets, ("boxes",))):
                counts = [len(source[i]["boxes"]) for i in chosen]
                panel[f"{tag}_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
                for f in fields:
                    parts = [source[i][f].numpy() for i in chosen]
                    panel[f"{tag}_{f}"] = np.concatenate(parts) if parts else np.zeros((0, 4) if f == "boxes" else 0)
        del model
    return rows, panel
