"""`python -m workbench.mining` round trip, its errors, and the mining benchmark's figures."""

from __future__ import annotations

import json
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


@pytest.fixture
def no_mining(monkeypatch):
    """Fail the test if the CLI gets as far as mining."""
    import workbench.mining.cli as mining_cli

    def refuse(*args, **kwargs):
        raise AssertionError("the CLI mined before refusing its output")

    monkeypatch.setattr(mining_cli, "mine_triplets", refuse)


@pytest.mark.parametrize("which", ["input", "manifest"])
def test_cli_refuses_to_write_over_a_file_it_reads(ober_parquet, tmp_path, which, no_mining, capsys):
    _, table = ober_parquet
    src = tmp_path / "ober.csv"
    table.to_csv(src, index=False)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("study_id\n")
    target = src if which == "input" else manifest
    before = target.read_bytes()
    assert main(["--input", str(src), "--output", str(target), "--manifest", str(manifest), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is the input" in err and err.count("\n") == 1
    assert target.read_bytes() == before


@pytest.mark.parametrize("output, message", [
    ("triplets.parquet", "unsupported output type"),
    ("missing_folder/triplets.csv.xz", "does not exist"),
])
def test_cli_refuses_a_bad_output_before_mining(ober_parquet, tmp_path, output, message, no_mining, capsys):
    path, _ = ober_parquet
    assert main(["--input", str(path), "--output", str(tmp_path / output), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path / output) in err and err.count("\n") == 1


def test_cli_exits_nonzero_and_writes_nothing_when_no_triplet_is_mined(ober_parquet, tmp_path, capsys):
    path, _ = ober_parquet
    out = tmp_path / "triplets.csv.xz"
    code = main(["--input", str(path), "--output", str(out), "--big_batch_size", "32", "--mini_batch_size", "4",
                 "--total_iter", "3", "--positive_cap", "0", "--device", "cpu", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "mined no triplet" in err and "--positive_cap" in err and err.count("\n") == 1
    assert not out.exists()


def test_nan_findings_are_dropped_and_counted_not_mined_as_normal(ober_parquet, tmp_path, capsys):
    from workbench.mining import encode_findings, mine_triplets
    from workbench.mining.encode import FindingsFormatError
    from workbench.mining.schedule import MiningConfig

    path, table = ober_parquet
    train = table.index[table["split"] == "train"]
    blank = list(table.loc[train[:12], "study_id"])
    table.loc[train[:6], "findings"] = None
    table.loc[train[6:12], "findings"] = ""
    result = mine_triplets(table, MiningConfig(big_batch_size=64, mini_batch_size=8, total_iter=20, all_anchors=True),
                           device="cpu", progress=False)
    assert result.skips == {"missing_findings": 12}
    assert result.n_studies == len(train) - 12
    assert not set(blank) & set(result.triplets[["anchor", "positive", "negative"]].to_numpy().ravel())
    with pytest.raises(FindingsFormatError, match="missing"):
        encode_findings([json.dumps({}), float("nan")], study_ids=["s1", "s2"])
    table.to_parquet(path)
    assert main(["--input", str(path), "--output", str(tmp_path / "t.csv"), "--big_batch_size", "32",
                 "--mini_batch_size", "4", "--total_iter", "2", "--device", "cpu", "--quiet"]) == 0
    assert "Studies not mined: missing_findings=12" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["ober.csv", "ober.parquet"])
def test_zero_byte_entity_table_gives_one_sentence_naming_the_file(tmp_path, name, capsys):
    src = tmp_path / name
    src.write_bytes(b"")
    assert main(["--input", str(src), "--output", str(tmp_path / "t.csv.xz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "empty" in err and err.count("\n") == 1 and "No columns" not in err
