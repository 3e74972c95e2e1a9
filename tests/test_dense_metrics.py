"""Dice and mAP against values computed by hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_dice_matches_hand_computed_values_and_skips_empty_truth():
    from workbench.eval.segmentation import dice_rows, dice_scores

    pred = np.zeros((3, 1, 2, 2), bool)
    truth = np.zeros((3, 1, 2, 2), bool)
    pred[0, 0, 0] = True  # predicts the top row
    truth[0, 0, :, 0] = True  # truth is the left column: overlap 1 pixel, Dice 2*1/(2+2)
    pred[1, 0, 1, 1] = True  # truth empty: no Dice (NaN), left out of the mean
    truth[2, 0, 1] = True  # nothing predicted: Dice 0
    scores = dice_scores(pred, truth)
    assert scores[0] == pytest.approx(0.5) and np.isnan(scores[1]) and scores[2] == 0.0
    row = dice_rows(scores, "100%", n_boot=50, seed=0)[0]
    assert row["metric"] == "Dice@100%" and row["value"] == pytest.approx(0.25)
    assert 0.0 <= row["ci_low"] <= 0.25 <= row["ci_high"] <= 0.5


def test_dice_rejects_mismatched_shapes():
    from workbench.eval.segmentation import dice_scores

    with pytest.raises(ValueError, match=r"\[N, 1"):
        dice_scores(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 4, 5)))


def _box(*xyxy):
    return torch.tensor([list(xyxy)], dtype=torch.float32)


def test_map_matches_a_hand_computed_average_precision():
    """Two images, one ground-truth box each; detections ranked 0.9 (hit, IoU 1), 0.8 (miss),
    0.7 (IoU 0.52: a hit at IoU thresholds 0.40-0.50 only).

    Thresholds 0.40, 0.45, 0.50: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; COCO's 101-point
    interpolated precision is 1 up to recall 0.50 (51 points) and 2/3 after (50 points):
    AP = (51 + 50 * 2/3) / 101. Thresholds 0.55-0.75: recall stops at 1/2, AP = 51 / 101.
    mAP over the RSNA thresholds = (3 * 84.333/101 + 5 * 51/101) / 8; AP50 = 84.333/101.
    """
    from workbench.eval.detection import mean_average_precision

    preds = [{"boxes": torch.cat([_box(0, 0, 10, 10), _box(20, 20, 30, 30)]), "scores": torch.tensor([0.9, 0.8]),
              "labels": torch.tensor([1, 1])},
             {"boxes": _box(0, 0, 10, 5.2), "scores": torch.tensor([0.7]), "labels": torch.tensor([1])}]
    truth = [{"boxes": _box(0, 0, 10, 10), "labels": torch.tensor([1])},
             {"boxes": _box(0, 0, 10, 10), "labels": torch.tensor([1])}]
    high = (51 + 50 * 2 / 3) / 101
    low = 51 / 101
    out = mean_average_precision(preds, truth)
    assert out["mAP50"] == pytest.approx(high, abs=1e-4)
    assert out["mAP"] == pytest.approx((3 * high + 5 * low) / 8, abs=1e-4)


def test_map_is_nan_without_any_ground_truth_box():
    from workbench.eval.detection import mean_average_precision

    preds = [{"boxes": _box(0, 0, 4, 4), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}]
    truth = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert np.isnan(mean_average_precision(preds, truth)["mAP"])
