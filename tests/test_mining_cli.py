"""`python -m workbench.mining` round trip, its errors, and the mining benchmark's figures."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from workbench.mining.cli import main
from workbench.mining.synthetic import synthetic_entity_table
from workbench.mining.table import read_triplets


@pytest.fixture
def ober_parquet(tmp_path):
    table = synthetic_entity_table(240, seed=3)
    path = tmp_path / "ober.parquet"
    table.to_parquet(path)
    return path, table


def test_cli_writes_triplets_of_train_studies_and_reports_skips(ober_parquet, tmp_path, capsys):
    path, table = ober_parquet
    out = tmp_path / "triplets.csv.xz"
    code = main(["--input", str(path), "--output", str(out), "--big_batch_size", "64", "--mini_batch_size", "8",
                 "--total_iter", "5", "--scoring", "seed", "--seed", "2", "--device", "cpu", "--quiet"])
    assert code == 0
    triplets = read_triplets(out)
    assert list(triplets.columns) == ["anchor", "positive", "negative", "pos_score", "neg_score"]
    printed = capsys.readouterr().out
    skipped = int(printed.split("Skipped anchors: ")[1].split()[0])
    assert len(triplets) + skipped == 5 * 8
    train = set(table.loc[table["split"] == "train", "study_id"])
    assert set(triplets[["anchor", "positive", "negative"]].to_numpy().ravel()) <= train
    assert triplets["pos_score"].between(0, 1).all() and (triplets["neg_score"] < 0.6).all()


def test_module_entry_point_runs_the_cli(ober_parquet, tmp_path):
    path, _ = ober_parquet
    out = tmp_path / "t.csv"
    done = subprocess.run([sys.executable, "-m", "workbench.mining", "--input", str(path), "--output", str(out),
                           "--big_batch_size", "32", "--mini_batch_size", "4", "--total_iter", "3", "--all_anchors",
                           "--device", "cpu", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Skipped anchors" in done.stdout
    assert len(pd.read_csv(out)) + int(done.stdout.split("Skipped anchors: ")[1].split()[0]) == 3 * 4 * 4


def test_cli_bad_input_fails_with_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "ober.parquet"
    pd.DataFrame({"study_id": ["s1"], "report": ["no findings column"]}).to_parquet(bad)
    assert main(["--input", str(bad), "--output", str(tmp_path / "t.csv.xz")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "findings" in err
    assert main(["--input", str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "t.csv.xz")]) == 2
    assert "notebooks/01_ober.ipynb" in capsys.readouterr().err
    assert not (tmp_path / "t.csv.xz").exists()


def test_mining_benchmark_reports_its_headline_figures(capsys):
    from workbench.bench.mining import main as bench_main

    figures = bench_main(["--studies", "600", "--total_iter", "4", "--reference_iter", "2", "--device", "cpu"])
    assert set(figures) == {"seconds", "triplets", "speedup"}
    assert figures["triplets"] == 4 * 32 and figures["seconds"] > 0 and figures["speedup"] > 0
    assert "same triplets as the vectorised miner: True" in capsys.readouterr().out
