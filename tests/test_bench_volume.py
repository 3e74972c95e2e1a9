"""The train benchmark's 3D case prices the demo and the research CT encoder on the same work,
and the benchmark's last line stays key=value pairs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workbench.bench.train import main


@pytest.mark.slow
def test_3d_case_returns_seconds_per_step_of_both_ct_encoders(capsys):
    figures = main(["--case", "3d", "--volume-size", "16", "16", "16", "--volume-batch", "2", "--volume-steps", "1"])
    assert set(figures) == {"s_per_step_3d_demo", "s_per_step_3d_research"}
    assert all(v > 0 for v in figures.values())
    out = capsys.readouterr().out
    assert "medfinder_demo" in out and "(medfinder)" in out and "16x16x16" in out


@pytest.mark.slow
def test_benchmark_last_line_is_key_value_pairs():
    done = subprocess.run([sys.executable, "-m", "workbench.bench", "train", "--case", "3d", "--volume-size", "16", "16",
                           "16", "--volume-batch", "2", "--volume-steps", "1"], capture_output=True, text=True, check=True)
    last = done.stdout.strip().splitlines()[-1]
    pairs = dict(part.split("=", 1) for part in last.split())
    assert set(pairs) == {"s_per_step_3d_demo", "s_per_step_3d_research"} and float(pairs["s_per_step_3d_demo"]) > 0
