"""Linear probe on real paediatric chest X-rays (../shared/data/pneumonia_cxr), patient-level split."""

from __future__ import annotations

import torch

from workbench.config import ModelsConfig

from conftest import shared_data


def test_pneumonia_probe_on_real_images_beats_chance(tmp_path):
    root = shared_data("pneumonia_cxr")
    from workbench.data.readers.folders import PNEUMONIA_SUBJECT_REGEX
    from workbench.eval.probe import class_folder_probe
    from workbench.models import build_dual_encoder

    torch.manual_seed(0)
    cfg = ModelsConfig(tiny=True, img_pretrained=False, text_pretrained=False, embed_dim=16)
    model = build_dual_encoder(cfg).eval()
    rows = class_folder_probe(model, root, tmp_path, subject_regex=PNEUMONIA_SUBJECT_REGEX, image_size=64,
                              fractions=(1.0,), max_studies=240, n_boot=20, progress=False)
    auc = {r["metric"]: r for r in rows}["probe_AUC@100%"]
    # even a random tiny CNN's features separate normal from pneumonia films better than chance
    assert 0.6 < auc["value"] <= 1.0 and auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    again = class_folder_probe(model, root, tmp_path, subject_regex=PNEUMONIA_SUBJECT_REGEX, image_size=64,
                               fractions=(1.0,), max_studies=240, n_boot=20, progress=False)
    assert again == rows  # cached features, fixed seeds: the same numbers
