"""The training plan notebook 03 prints before it trains: the real encoder and input size, a
measured step time, and a stop with the CPU-sized command when a CPU run would take too long."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.config import load_config
from workbench.train.plan import TrainingBudgetError, TrainingPlan, check_budget, plan_training


@pytest.fixture(scope="module")
def tiny_ct_run(tmp_path_factory):
    from workbench.data import prepare_run_data

    run = tmp_path_factory.mktemp("runs") / "ct"
    run.mkdir()
    prepare_run_data(load_config("tiny_ct", ["data.n_studies=4", "data.n_ct_studies=12"]), run, progress=False)
    return run


def test_plan_names_the_encoder_the_input_and_a_measured_step(tiny_ct_run):
    cfg = load_config("tiny_ct", ["training.max_steps=7", "training.batch_size=2"])
    plan = plan_training(cfg, tiny_ct_run)
    assert plan.method == "medfinder" and plan.image_encoder == "tiny_cnn_3d"
    assert plan.input_shape == (1, 32, 32, 32) and plan.total_steps == 7 and plan.device == "cpu"
    assert plan.seconds_per_step > 0
    assert abs(plan.estimated_minutes - 7 * plan.seconds_per_step / 60) < 1e-9
    text = plan.describe()
    assert "tiny_cnn_3d" in text and "1x32x32x32" in text and "7 (" in text


def test_epoch_budget_counts_steps_per_epoch(tiny_ct_run):
    cfg = load_config("tiny_ct", ["training.max_steps=-1", "training.num_epochs=3", "training.batch_size=2"])
    plan = plan_training(cfg, tiny_ct_run)
    assert plan.total_steps == 3 * plan.steps_per_epoch and plan.steps_per_epoch >= 1


PLAN = TrainingPlan(method="medfinder", image_encoder="resnet50_3d", text_encoder="minilm", input_shape=(1, 64, 64, 64),
                    device="cpu", batch_size=8, total_steps=800, steps_per_epoch=40, seconds_per_step=30.0)


def test_a_long_cpu_run_stops_naming_the_cpu_sized_config():
    with pytest.raises(TrainingBudgetError, match=r"about 400 min.*-p config medfinder_demo.*max_cpu_minutes 0"):
        check_budget(PLAN, 30)


def test_short_runs_gpu_runs_and_no_limit_pass():
    check_budget(dataclasses.replace(PLAN, total_steps=10), 30)
    check_budget(dataclasses.replace(PLAN, device="cuda"), 30)
    check_budget(PLAN, 0)


def test_a_method_without_a_cpu_config_is_told_a_step_budget_that_fits():
    with pytest.raises(TrainingBudgetError, match=r"\(-p max_steps 60\)"):
        check_budget(dataclasses.replace(PLAN, method="clip"), 30)
