"""A tiny end-to-end dense fine-tune: demo phantoms, a tiny random CNN, CPU, a few steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

FINDINGS = "Cardiomegaly,Support_Devices,Effusion,Emphysema"  # the phantoms' most frequent boxes


def _radiograph_run(run, manifest):
    """A run folder of the tiny demo's radiographs: manifest and 64-px cache."""
    from workbench.data.cache import build_image_cache
    from workbench.data.manifest import write_manifest

    run.mkdir(parents=True, exist_ok=True)
    manifest = manifest[manifest["modality"] == "cxr"].reset_index(drop=True)
    write_manifest(manifest, run / "manifest.parquet")
    build_image_cache(manifest, run / "cache", 64, progress=False, num_workers=1)
    return run


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory, tiny_manifest):
    from workbench.config import load_config
    from workbench.eval.baselines import ensure_baselines

    run = _radiograph_run(tmp_path_factory.mktemp("dense") / "run", tiny_manifest)
    ensure_baselines(run, load_config("tiny"), seed=0, methods=["frozen"], progress=False)
    return run


def _options(**extra):
    from workbench.eval.dense import DenseOptions

    return DenseOptions(fractions=[0.25, 1.0], steps=3, batch_size=4, segmentation_findings=FINDINGS,
                        detection_findings=FINDINGS, detection_boot=5, **extra)


def test_dense_evaluations_report_dice_and_map_per_fraction_beside_random_init(dense_run):
    from workbench.eval.suite import evaluate_run
    from workbench.models import load_encoders

    before = {k: v.clone() for k, v in load_encoders(dense_run / "train" / "frozen-0").image_encoder.state_dict().items()}
    rows = evaluate_run(dense_run, "frozen", "segmentation,detection", n_boot=10, progress=False, dense=_options())
    assert set(rows["checkpoint"]) == {"frozen-0", "random-init-0"}
    for checkpoint in ("frozen-0", "random-init-0"):
        mine = rows[rows["checkpoint"] == checkpoint].set_index(["evaluation", "metric"])["value"]
        for pct in ("25%", "100%"):
            assert 0.0 <= mine[("segmentation", f"Dice@{pct}")] <= 1.0
            assert 0.0 <= mine[("detection", f"mAP@{pct}")] <= 1.0
        n_test = int(rows.loc[rows["checkpoint"] == checkpoint, "n"].iloc[0])
        assert n_test > 0 and mine[("segmentation", "n_train@25%")] < mine[("segmentation", "n_train@100%")]
    assert (dense_run / "eval" / "frozen-0" / "segmentation_test.npz").is_file()
    assert (dense_run / "eval" / "frozen-0" / "detection_test.npz").is_file()
    table = pd.read_csv(dense_run / "eval" / "metrics.csv")
    assert {"segmentation", "detection"} <= set(table["evaluation"])
    after = load_encoders(dense_run / "train" / "frozen-0").image_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the checkpoint is never fine-tuned in place


def test_dense_results_are_cached_per_image_encoder_and_options(dense_run):
    from workbench.data.manifest import read_manifest
    from workbench.eval.dense import dense_rows
    from workbench.models import load_encoders

    encoder = load_encoders(dense_run / "train" / "frozen-0").image_encoder
    manifest = read_manifest(dense_run)
    first = dense_rows("segmentation", encoder, manifest, dense_run, options=_options(), n_boot=10, progress=False)
    stored = sorted((dense_run / "eval" / "dense").glob("*_segmentation.json"))
    again = dense_rows("segmentation", encoder, manifest, dense_run, options=_options(), n_boot=10, progress=False)
    assert first == again and sorted((dense_run / "eval" / "dense").glob("*_segmentation.json")) == stored
    dense_rows("segmentation", encoder, manifest, dense_run, options=_options(finetune=True), n_boot=10,
               progress=False)
    assert len(list((dense_run / "eval" / "dense").glob("*_segmentation.json"))) == len(stored) + 1


def test_fine_tuning_updates_the_encoder_and_freezing_does_not():
    from workbench.eval.segmentation import SegmentationModel, train_segmentation
    from workbench.models.image2d import TinyCNN

    class Toy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            image = torch.randn(3, 32, 32, generator=g)
            return {"image": image, "mask": (image[:1] > 0).float()}

    for finetune in (False, True):
        torch.manual_seed(0)
        encoder = TinyCNN()
        start = [p.clone() for p in encoder.parameters()]
        model = SegmentationModel(encoder, frozen=not finetune)
        losses = train_segmentation(model, Toy(), np.arange(4), steps=3, batch_size=2, progress=False)
        changed = any(not torch.equal(a, b) for a, b in zip(start, encoder.parameters()))
        assert changed == finetune and len(losses) == 3 and np.isfinite(losses).all()


def test_unknown_evaluation_and_one_scale_encoder_fail_clearly():
    from workbench.eval.suite import parse_list, ALL_EVALUATIONS
    from workbench.models.pyramid import FeaturePyramid

    with pytest.raises(ValueError, match="segmentation"):
        parse_list("segmentaton", ALL_EVALUATIONS, "evaluations")
    with pytest.raises(ValueError, match="CNN"):
        FeaturePyramid(torch.nn.Linear(3, 3))


@pytest.mark.slow
def test_notebook04_reports_dice_and_map_with_mask_and_box_panels(tmp_path, tiny_manifest, execute_notebook):
    import nbformat

    run = _radiograph_run(tmp_path / "run", tiny_manifest)
    overrides = (f"method.params.epochs=2 eval.bootstrap=10 eval.dense_fractions=[0.25,1.0] eval.dense_steps=3 "
                 f"eval.dense_batch_size=4 eval.segmentation_findings={FINDINGS} eval.detection_findings={FINDINGS}")
    out = execute_notebook("04_evaluate", run, config="tiny", evaluations="segmentation,detection",
                           overrides=overrides)
    table = pd.read_csv(run / "eval" / "metrics.csv")
    assert set(table["evaluation"]) == {"segmentation", "detection"}
    assert set(table["checkpoint"]) == {"frozen-0", "locked-0", "random-init-0"}
    assert {"Dice@25%", "Dice@100%", "mAP@25%", "mAP@100%"} <= set(table["metric"])
    executed = nbformat.read(out, as_version=4)
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # Dice and mAP bars, the mask panel and the box panel
