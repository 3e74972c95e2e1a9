"""OBER's interfaces: the CLI on csv.gz and parquet, manifests -> ober.parquet, bad input,
determinism across PYTHONHASHSEED, scoring conventions."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.data.manifest import write_manifest
from workbench.ober import evaluate, label_manifest
from workbench.ober.cli import OberInputError, main, read_table

PROJECT = Path(__file__).resolve().parent.parent

REPORTS = pd.DataFrame({
    "uid": ["r1", "r2", "r3", "r4"],
    "findings": ["Small right pleural effusion. No pneumothorax.", "Heart size is normal.", float("nan"),
                 "Left lower lobe atelectasis versus pneumonia."],
    "impression": ["Mild cardiomegaly.", "No acute cardiopulmonary abnormality.", "Possible pneumonia.",
                   float("nan")],
})


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.ober", *args, "--no-progress"], cwd=PROJECT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("suffix", [".csv.gz", ".parquet"])
def test_cli_labels_a_table_and_keeps_the_id_column(tmp_path, suffix):
    src = tmp_path / f"reports{suffix}"
    if suffix == ".parquet":
        REPORTS.to_parquet(src, index=False)
    else:
        REPORTS.to_csv(src, index=False)
    out = tmp_path / f"labels{suffix}"
    res = run_cli("--input", str(src), "--output", str(out), "--label-set", "chestxray14")
    assert res.returncode == 0, res.stderr
    df = read_table(out)
    assert list(df["uid"].astype(str)) == ["r1", "r2", "r3", "r4"]
    assert float(df.loc[0, "Effusion"]) == 1 and float(df.loc[0, "Pneumothorax"]) == 0
    assert float(df.loc[0, "Cardiomegaly"]) == 1 and float(df.loc[1, "Cardiomegaly"]) == 0
    assert float(df.loc[2, "Pneumonia"]) == -1  # the NaN findings cell does not stop the impression
    assert float(df.loc[3, "Atelectasis"]) == 1  # "versus": the Open-i gold's convention (present_hedges)
    ents = json.loads(df.loc[0, "entities"])
    assert {e["concept"] for e in ents} >= {"pleural_effusion", "pneumothorax", "cardiomegaly"}
    assert ents[0]["laterality"] == "right" and ents[0]["severity"] == "mild"


def test_cli_workers_give_the_same_output_as_one_process(tmp_path, monkeypatch):
    from workbench.ober import study

    monkeypatch.setattr(study, "PARALLEL_MIN_REPORTS", 2)
    monkeypatch.setattr(study, "CHUNK", 2)
    src = tmp_path / "reports.parquet"
    pd.concat([REPORTS] * 3, ignore_index=True).assign(uid=lambda d: [f"r{i}" for i in range(len(d))]).to_parquet(src)
    assert main(["--input", str(src), "--output", str(tmp_path / "one.parquet"), "--no-progress"]) == 0
    assert main(["--input", str(src), "--output", str(tmp_path / "two.parquet"), "--workers", "2",
                 "--no-progress"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet"))


def tiny_manifest_frame() -> pd.DataFrame:
    rows = []
    texts = [("Small left pleural effusion.", "Effusion."), ("No pneumothorax.", "Normal chest."),
             ("Right upper lobe nodule.", "Nodule."), ("Heart is enlarged.", "Cardiomegaly.")]
    for i, (f, imp) in enumerate(texts):
        rows.append({"subject_id": f"p{i}", "study_id": f"s{i}", "dataset": "demo", "modality": "cxr", "view": "PA",
                     "image_path": f"/x/{i}.png", "image_paths": [f"/x/{i}.png"], "findings": f, "impression": imp,
                     "report": f"{f}\n\n{imp}", "split": ["train", "train", "val", "test"][i],
                     "label_Effusion": [1.0, 0.0, math.nan, math.nan][i],
                     "label_Pneumothorax": [math.nan, 1.0, math.nan, math.nan][i]})
    return pd.DataFrame(rows)


def test_manifest_input_writes_the_ober_parquet_format(tmp_path):
    manifest = write_manifest(tiny_manifest_frame(), tmp_path / "manifest.parquet")
    out = tmp_path / "ober.parquet"
    assert main(["--input", str(manifest), "--output", str(out), "--label-set", "demo", "--no-progress"]) == 0
    df = pd.read_parquet(out)
    assert list(df.columns[:3]) == ["study_id", "subject_id", "split"]
    assert {"entities", "findings", "Effusion", "Nodule", "Support_Devices"} <= set(df.columns)
    assert list(df["split"]) == ["train", "train", "val", "test"]
    f0 = json.loads(df.loc[0, "findings"])
    assert f0["Effusion"] == {"assertion": "present", "severity": ["mild"], "location": ["left"],
                              "source": "ober+dataset"}
    f1 = json.loads(df.loc[1, "findings"])  # the dataset says pneumothorax, OBER read "No pneumothorax"
    assert f1["Pneumothorax"]["source"] == "dataset" and df.loc[1, "Pneumothorax"] == 0
    assert df.loc[3, "Cardiomegaly"] == 1 and json.loads(df.loc[3, "findings"])["Cardiomegaly"]["source"] == "ober"


def test_label_manifest_without_merge_keeps_only_ober_findings():
    df = label_manifest(tiny_manifest_frame(), "demo", merge_dataset_labels=False, progress=False)
    assert "Pneumothorax" not in json.loads(df.loc[1, "findings"])


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (b"uid,findings\n", "no rows"),
    (b"uid,findings\n1,Pleural effusion \xe9\xff.\n", "UTF-8"),
])
def test_bad_input_gives_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(OberInputError, match=match) as info:
        read_table(path)
    assert str(path) in str(info.value)


def test_cli_missing_columns_and_types_fail_with_the_fix(tmp_path):
    src = tmp_path / "r.csv"
    REPORTS.to_csv(src, index=False)
    res = run_cli("--input", str(src), "--output", str(tmp_path / "o.csv"), "--text-columns", "report")
    assert res.returncode == 2 and "missing columns ['report']" in res.stderr and "--text-columns" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("--input", str(tmp_path / "r.txt"), "--output", str(tmp_path / "o.csv"))
    assert res.returncode == 2 and "unsupported file type" in res.stderr
    res = run_cli("--input", str(src), "--output", str(tmp_path / "o.csv"), "--label-set", "nope")
    assert res.returncode == 2 and "chestxray14" in res.stderr


def test_non_utf8_text_can_be_read_with_an_explicit_encoding(tmp_path):
    src = tmp_path / "latin.csv"
    src.write_bytes("uid,findings\n1,Pleural effusion (café).\n".encode("latin-1"))
    out = tmp_path / "o.csv"
    assert main(["--input", str(src), "--output", str(out), "--text-columns", "findings", "--encoding",
                 "latin-1", "--no-progress"]) == 0
    assert pd.read_csv(out).loc[0, "Effusion"] == 1


def test_output_is_identical_under_different_hash_seeds(tmp_path):
    src = tmp_path / "r.parquet"
    texts = ["Small right pleural effusion versus atelectasis. No pneumothorax or consolidation.",
             "Calcific plaques in the aorta and coronary arteries. Heart size is normal. Nodules in the thyroid.",
             "Possible left lower lobe pneumonia. Stable mild cardiomegaly. Biapical pleural thickening."]
    pd.DataFrame({"uid": ["a", "b", "c"], "report": texts}).to_parquet(src)
    outputs = []
    for seed in ("0", "12345"):
        out = tmp_path / f"o{seed}.parquet"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        for label_set in ("ctrate18", "chexpert14"):
            res = subprocess.run([sys.executable, "-m", "workbench.ober", "--input", str(src), "--output", str(out),
                                  "--label-set", label_set, "--text-columns", "report", "--no-progress"],
                                 cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, res.stderr
            outputs.append(out.read_bytes())
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]


def test_evaluate_counts_only_ones_as_positive_and_skips_normal():
    gold = pd.DataFrame({"A": [1, 1, 0, 0], "B": [0, 0, 0, 0], "normal": [0, 0, 1, 1]})
    pred = pd.DataFrame({"A": [1, -1, 1, np.nan], "B": [1, 0, 0, 0], "normal": [1, 1, 1, 1]})
    res = evaluate(pred, gold)
    table = res["per_label"]
    assert res["labels"] == ["A", "B"]
    assert (table.loc["A", "tp"], table.loc["A", "fp"], table.loc["A", "fn"]) == (1, 1, 1)
    assert res["micro_f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))
    assert res["macro_f1"] == pytest.approx(0.5)  # B has no gold positive: not in the macro mean
