"""Notebook 01 runs headless under papermill on a tiny run folder and writes ober.parquet."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.test_ober_io import tiny_manifest_frame
from workbench.data.manifest import write_manifest


@pytest.mark.slow
def test_notebook_01_writes_ober_parquet_and_scores_the_demo_gold(run_dir, execute_notebook):
    write_manifest(tiny_manifest_frame(), run_dir / "manifest.parquet")
    executed = execute_notebook("01_ober", run_dir, label_set="demo", n_examples=2, n_worst=2)
    ober = pd.read_parquet(run_dir / "ober.parquet")
    assert len(ober) == 4 and {"study_id", "subject_id", "split", "entities", "findings", "Effusion"} <= set(ober.columns)
    outputs = json.dumps(json.loads(executed.read_text())["cells"])
    assert "micro-F1" in outputs  # the manifest's label_ columns were scored
    assert "ober-present" in outputs  # highlighted reports were rendered
