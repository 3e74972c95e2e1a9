"""OBER's CLI refuses outputs that would destroy its input or fail after the work, before any
labelling, and never turns an empty report into a normal one (issue 14)."""

from __future__ import annotations

import errno
import json
import math

import pandas as pd
import pytest

from tests.test_ober_io import REPORTS, tiny_manifest_frame
from workbench.ober import cli, label_manifest, label_reports
from workbench.ober.cli import main


@pytest.fixture
def reports_csv(tmp_path):
    path = tmp_path / "reports.csv"
    REPORTS.to_csv(path, index=False)
    return path


@pytest.fixture
def no_labelling(monkeypatch):
    """Fail the test if the CLI gets as far as labelling."""
    def refuse(*args, **kwargs):
        raise AssertionError("the CLI labelled reports before refusing its output")

    monkeypatch.setattr(cli, "run_reports", refuse)
    monkeypatch.setattr(cli, "label_manifest", refuse)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_output_that_is_the_input_is_refused_and_the_input_kept(reports_csv, spelling, no_labelling, capsys):
    before = reports_csv.read_bytes()
    if spelling == "same":
        output = reports_csv
    elif spelling == "dotted":
        output = reports_csv.parent / "sub" / ".." / reports_csv.name
        (reports_csv.parent / "sub").mkdir()
    else:
        output = reports_csv.parent / "link.csv"
        output.symlink_to(reports_csv)
    assert main(["--input", str(reports_csv), "--output", str(output), "--no-progress"]) == 2
    assert "is the input" in one_error_line(capsys)
    assert reports_csv.read_bytes() == before


def test_missing_output_folder_is_refused_before_labelling(reports_csv, tmp_path, no_labelling, capsys):
    out = tmp_path / "no_such_folder" / "labels.csv"
    assert main(["--input", str(reports_csv), "--output", str(out), "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert "does not exist" in err and str(out.parent) in err
    assert not out.parent.exists()


def test_output_under_a_file_is_refused_before_labelling(reports_csv, tmp_path, no_labelling, capsys):
    assert main(["--input", str(reports_csv), "--output", str(reports_csv / "labels.csv"), "--no-progress"]) == 2
    assert "does not exist" in one_error_line(capsys)


def test_unwritable_output_folder_is_refused_before_labelling(reports_csv, tmp_path, no_labelling, monkeypatch,
                                                              capsys):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "mkstemp", denied)  # chmod does not stop root, so refuse the probe
    assert main(["--input", str(reports_csv), "--output", str(tmp_path / "labels.csv"), "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert "not writable" in err and "Permission denied" in err


@pytest.mark.parametrize("name", ["labels.txt", "labels.xlsx", "labels"])
def test_unsupported_output_suffix_is_refused_before_labelling(reports_csv, tmp_path, name, no_labelling, capsys):
    assert main(["--input", str(reports_csv), "--output", str(tmp_path / name), "--no-progress"]) == 2
    assert "unsupported output type" in one_error_line(capsys)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("name", ["reports.csv", "reports.csv.gz", "reports.parquet"])
def test_zero_byte_input_gives_one_sentence_naming_the_file(tmp_path, name, capsys):
    src = tmp_path / name
    src.write_bytes(b"")
    assert main(["--input", str(src), "--output", str(tmp_path / "labels.csv"), "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert str(src) in err and "empty" in err and "EmptyDataError" not in err


def test_empty_and_nan_reports_are_not_labelled_normal_and_are_counted():
    labels = label_reports(["", float("nan"), None, "  \n ", "Heart size is normal."], "chestxray14")
    assert labels.iloc[:4].isna().all().all()  # `normal` too: nothing was said
    assert labels.loc[4, "normal"] == 1
    assert labels.attrs["skips"] == {"empty_report": 4}
    chexpert = label_reports([float("nan")], "chexpert14")
    assert math.isnan(chexpert.loc[0, "No Finding"]) and chexpert.attrs["skips"] == {"empty_report": 1}


def test_cli_leaves_empty_reports_unlabelled_and_says_how_many(tmp_path, capsys):
    src = tmp_path / "reports.parquet"
    pd.DataFrame({"uid": ["a", "b", "c"], "findings": ["No effusion.", float("nan"), "   "],
                  "impression": ["Normal chest.", float("nan"), None]}).to_parquet(src)
    out = tmp_path / "labels.csv"
    assert main(["--input", str(src), "--output", str(out), "--no-progress"]) == 0
    df = pd.read_csv(out)
    assert df.loc[0, "normal"] == 1
    assert df.drop(columns=["uid", "entities"]).iloc[1:].isna().all().all()
    assert "empty_report=2" in capsys.readouterr().err


def test_manifest_empty_report_gets_no_labels_and_null_findings():
    frame = tiny_manifest_frame()
    frame.loc[1, ["findings", "impression", "report"]] = ["", "", ""]
    frame.loc[1, ["label_Effusion", "label_Pneumothorax"]] = [math.nan, math.nan]  # nor does the dataset say anything
    df = label_manifest(frame, "demo", progress=False)
    assert df.attrs["skips"] == {"empty_report": 1}
    assert pd.isna(df.loc[1, "findings"])  # null, not "{}": the miner drops it instead of reading a normal study
    assert df.drop(columns=["study_id", "subject_id", "split", "entities", "findings"]).iloc[1].isna().all()
    assert json.loads(df.loc[0, "findings"])["Effusion"]["assertion"] == "present"
