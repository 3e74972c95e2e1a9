"""One bad-input suite for every entry point a user feeds files to: each reader, the OBER and
mining command lines, the trainer and the checkpoint loaders (issue 14).

Every case builds one realistic broken input on disk and checks the contract: the call fails
with the expected error type, and its message is one line that names the offending file (or
key) and says what to do, with no Python object reprs or tracebacks in it.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Tuple

import numpy as np
import pandas as pd
import pytest
import torch

from released_layouts import radiograph, write_bimcv_r, write_ct_rate, write_gzip_csv, write_mimic_cxr_jpg, write_nifti
from workbench.config import ConfigError, load_config
from workbench.data import build_manifest
from workbench.data.reports import TableError
from workbench.data.skips import BadInputError


class CommandFailed(Exception):
    """A command line that returned non-zero; the message is what it printed on stderr."""


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Path], Any]  # builds the bad input under tmp_path and calls the entry point
    error: type
    says: Tuple[str, ...]  # fragments the message must hold ("{tmp}" = the test's tmp_path)

    def __str__(self) -> str:
        return self.name


def run_cli(main: Callable, argv: list, capsys) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    if code != 0:
        raise CommandFailed(err)


# ---------------------------------------------------------------- readers
def mimic_metadata_without_view(tmp: Path) -> Any:
    facts = write_mimic_cxr_jpg(tmp / "m", n_good=2)
    write_gzip_csv(pd.DataFrame({"dicom_id": ["x"], "study_id": ["1"]}),
                   facts.root / "mimic-cxr-2.0.0-metadata.csv.gz")
    return build_manifest("mimic", facts.root, report_root=facts.extra["report_root"])


def iu_reports_without_uid(tmp: Path) -> Any:
    pd.DataFrame({"id": ["1"], "findings": ["Clear lungs."]}).to_csv(tmp / "indiana_reports.csv", index=False)
    return build_manifest("iu", tmp)


def bimcv_empty_report_table(tmp: Path) -> Any:
    facts = write_bimcv_r(tmp / "b", n_good=2)
    table = next(facts.root.rglob("*.tsv"), None) or next(p for p in facts.root.rglob("*.csv*"))
    table.write_bytes(b"")
    return build_manifest("bimcv", facts.root)


def ctrate_metadata_without_spacing(tmp: Path) -> Any:
    facts = write_ct_rate(tmp / "c", n_train=2, n_valid=1)
    for path in (facts.root / "metadata").glob("*.csv"):
        pd.read_csv(path).drop(columns=["ZSpacing"]).to_csv(path, index=False)
    return build_manifest("ctrate", facts.root)


def roco_table_without_caption(tmp: Path) -> Any:
    folder = tmp / "data" / "train" / "radiology"
    radiograph(folder / "images" / "ROCO_1.jpg", seed=0)
    pd.DataFrame({"id": ["ROCO_1"], "name": ["ROCO_1.jpg"]}).to_csv(folder / "radiologytraindata.csv", index=False)
    return build_manifest("roco", tmp)


def csv_pairs_corrupt_gzip(tmp: Path) -> Any:
    (tmp / "pairs.csv.gz").write_bytes(gzip.compress(b"image,text\na.png,Clear.\n")[:-12])
    return build_manifest("csv", tmp / "pairs.csv.gz")


def medtrim_img_df_without_full_path(tmp: Path) -> Any:
    pd.DataFrame({"path_base": ["s1"], "image": ["a.jpg"]}).to_csv(tmp / "img_df.csv", index=False)
    pd.DataFrame({"path_base": ["s1"], "text": ["Clear."]}).to_csv(tmp / "text_df.csv", index=False)
    return build_manifest("medtrim", tmp, img_df=tmp / "img_df.csv", text_df=tmp / "text_df.csv")


def folders_missing_root(tmp: Path) -> Any:
    return build_manifest("folders", tmp / "no_such_folder")


def dicom_corrupt_file_strict(tmp: Path) -> Any:
    (tmp / "p1" / "s1").mkdir(parents=True)
    (tmp / "p1" / "s1" / "image.dcm").write_bytes(b"DICM" + b"\x00" * 200)
    (tmp / "p1" / "s1" / "report.txt").write_text("Clear lungs.")
    return build_manifest("dicom", tmp, strict=True)


def demo_root_without_ground_truth(tmp: Path) -> Any:
    (tmp / "mimic").mkdir()
    return build_manifest("demo", tmp)


def truncated_jpeg_strict(tmp: Path) -> Any:
    image = radiograph(tmp / "images" / "a.jpg", seed=0)
    image.write_bytes(image.read_bytes()[:200])
    pd.DataFrame({"image": ["images/a.jpg"], "text": ["Clear."]}).to_csv(tmp / "pairs.csv", index=False)
    return build_manifest("csv", tmp / "pairs.csv", image_column="image", text_column="text",
                          subject_column="", strict=True)


def oversized_image_strict(tmp: Path) -> Any:
    from PIL import Image

    radiograph(tmp / "images" / "big.png", seed=0, size=(96, 80))
    pd.DataFrame({"image": ["images/big.png"], "text": ["Clear."]}).to_csv(tmp / "pairs.csv", index=False)
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000  # the 96x80 image is then over twice the limit: Pillow's bomb guard
    try:
        return build_manifest("csv", tmp / "pairs.csv", image_column="image", text_column="text",
                          subject_column="", strict=True)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def corrupt_nifti_strict(tmp: Path) -> Any:
    (tmp / "CT0001" / "ct").mkdir(parents=True)
    (tmp / "CT0001" / "ct" / "sub-1_ct.nii.gz").write_bytes(b"not a gzip stream")
    (tmp / "meta").mkdir()
    pd.DataFrame({"path": ["CT0001/ct/sub-1_ct.nii.gz"], "Report_en": ["No nodules."]}).to_csv(
        tmp / "meta" / "curated_ct_report_path_En.csv", index=False)
    return build_manifest("bimcv", tmp, strict=True)


def all_nan_volume(tmp: Path) -> Any:
    from workbench.data.transforms import load_volume_with_repairs

    path = write_nifti(tmp / "nan.nii.gz", np.full((8, 8, 8), np.nan, dtype=np.float32))
    return load_volume_with_repairs(str(path), (8, 8, 8))


READER_CASES = [
    Case("mimic: metadata table without ViewPosition", mimic_metadata_without_view, TableError,
         ("mimic-cxr-2.0.0-metadata.csv.gz", "ViewPosition", "rename")),
    Case("iu: report table without uid", iu_reports_without_uid, TableError, ("indiana_reports.csv", "'uid'")),
    Case("bimcv: empty report table", bimcv_empty_report_table, TableError, ("{tmp}", "empty", "restore")),
    Case("ctrate: metadata without ZSpacing", ctrate_metadata_without_spacing, TableError,
         ("_metadata.csv", "ZSpacing")),
    Case("roco: split table without caption", roco_table_without_caption, TableError,
         ("radiologytraindata.csv", "caption")),
    Case("csv: truncated .csv.gz", csv_pairs_corrupt_gzip, TableError, ("pairs.csv.gz", "re-download")),
    Case("medtrim: img_df without full_path", medtrim_img_df_without_full_path, TableError,
         ("img_df.csv", "full_path")),
    Case("folders: data_root missing", folders_missing_root, FileNotFoundError, ("no_such_folder", "does not exist")),
    Case("dicom: corrupt file (strict)", dicom_corrupt_file_strict, BadInputError, ("image.dcm", "re-export")),
    Case("demo: no ground_truth.parquet", demo_root_without_ground_truth, FileNotFoundError, ("ground_truth",)),
    Case("truncated JPEG (strict)", truncated_jpeg_strict, BadInputError, ("a.jpg", "re-export")),
    Case("oversized image (strict) is not called corrupt", oversized_image_strict, BadInputError,
         ("big.png", "oversized image", "MAX_IMAGE_PIXELS")),
    Case("bimcv: corrupt NIfTI (strict)", corrupt_nifti_strict, BadInputError, ("sub-1_ct.nii.gz", "re-export")),
    Case("all-NaN volume", all_nan_volume, ValueError, ("nan.nii.gz", "every voxel is NaN", "re-export")),
]


# ---------------------------------------------------------------- OBER and mining command lines
def ober_output_is_input(tmp: Path, capsys) -> Any:
    from workbench.ober.cli import main

    (tmp / "r.csv").write_text("uid,findings,impression\n1,Clear lungs.,Normal.\n")
    run_cli(main, ["--input", str(tmp / "r.csv"), "--output", str(tmp / "r.csv"), "--no-progress"], capsys)


def ober_zero_byte_input(tmp: Path, capsys) -> Any:
    from workbench.ober.cli import main

    (tmp / "r.csv").write_bytes(b"")
    run_cli(main, ["--input", str(tmp / "r.csv"), "--output", str(tmp / "out.csv"), "--no-progress"], capsys)


def ober_unsupported_suffix(tmp: Path, capsys) -> Any:
    from workbench.ober.cli import main

    (tmp / "r.csv").write_text("uid,findings,impression\n1,Clear lungs.,Normal.\n")
    run_cli(main, ["--input", str(tmp / "r.csv"), "--output", str(tmp / "out.xlsx"), "--no-progress"], capsys)


def ober_unknown_label_set(tmp: Path, capsys) -> Any:
    from workbench.ober.cli import main

    (tmp / "r.csv").write_text("uid,findings,impression\n1,Clear lungs.,Normal.\n")
    run_cli(main, ["--input", str(tmp / "r.csv"), "--output", str(tmp / "o.csv"), "--label-set", "chexpert15"],
            capsys)


def mining_missing_entity_table(tmp: Path, capsys) -> Any:
    from workbench.mining.cli import main

    run_cli(main, ["--input", str(tmp / "ober.parquet"), "--output", str(tmp / "t.csv"), "--quiet"], capsys)


def mining_zero_triplets(tmp: Path, capsys) -> Any:
    from workbench.mining.cli import main

    findings = [json.dumps({"effusion": {"assertion": "present"}})] * 6  # all alike: no negative exists
    pd.DataFrame({"study_id": [f"s{i}" for i in range(6)], "subject_id": [f"p{i}" for i in range(6)],
                  "split": "train", "findings": findings}).to_parquet(tmp / "ober.parquet")
    run_cli(main, ["--input", str(tmp / "ober.parquet"), "--output", str(tmp / "t.csv"), "--quiet",
                   "--total_iter", "2", "--mini_batch_size", "4", "--big_batch_size", "6"], capsys)


CLI_CASES = [
    Case("ober: output is the input", ober_output_is_input, CommandFailed, ("r.csv", "is the input")),
    Case("ober: 0-byte input", ober_zero_byte_input, CommandFailed, ("r.csv", "empty")),
    Case("ober: unsupported output suffix", ober_unsupported_suffix, CommandFailed, ("out.xlsx", ".parquet")),
    Case("ober: unknown label set", ober_unknown_label_set, CommandFailed, ("chexpert15", "chexpert14")),
    Case("mining: entity table missing", mining_missing_entity_table, CommandFailed, ("ober.parquet", "01_ober")),
    Case("mining: zero triplets is a failure", mining_zero_triplets, CommandFailed, ("mined no triplet", "t.csv")),
]


# ---------------------------------------------------------------- trainer
def max_steps_zero(tmp: Path) -> Any:
    return load_config("tiny", ["training.max_steps=0"])


def unknown_method(tmp: Path) -> Any:
    from workbench.methods import create_method

    cfg = load_config("tiny")
    cfg.method.name = "medtrimm"
    return create_method(cfg.method.name, cfg)


def misspelt_override(tmp: Path) -> Any:
    return load_config("tiny", ["--training.batch_sise", "8"])


def triplets_without_negative(tmp: Path) -> Any:
    from workbench.mining.table import read_triplets

    pd.DataFrame({"anchor": ["a"], "positive": ["b"]}).to_csv(tmp / "triplets.csv", index=False)
    return read_triplets(tmp / "triplets.csv")


def init_checkpoint_missing(tmp: Path) -> Any:
    from workbench.models.dual import build_dual_encoder

    cfg = load_config("tiny", [f"models.init_checkpoint={tmp / 'no_such_checkpoint'}"])
    return build_dual_encoder(cfg.models)


def resume_from_a_foreign_file(tmp: Path) -> Any:
    from safetensors.torch import save_file

    from test_trainer import PatternPairs, seeded_method, tiny_cfg
    from workbench.train.trainer import Trainer

    (tmp / "checkpoint").mkdir()
    save_file({"w": torch.zeros(2)}, str(tmp / "checkpoint" / "last.safetensors"))  # another program's file
    cfg = tiny_cfg(tmp, resume=True, max_steps=2, eval_every=0)
    return Trainer(seeded_method(cfg), cfg, tmp, train_data=PatternPairs(8), progress=False).fit()


TRAINER_CASES = [
    Case("trainer: training.max_steps=0", max_steps_zero, ConfigError, ("training.max_steps=0", "-1")),
    Case("trainer: unknown method name", unknown_method, KeyError, ("medtrimm", "medtrim")),
    Case("trainer: misspelt override key", misspelt_override, ConfigError, ("batch_sise", "batch_size")),
    Case("trainer: triplet file without negative", triplets_without_negative, TableError,
         ("triplets.csv", "negative")),
    Case("trainer: init_checkpoint that does not exist", init_checkpoint_missing, FileNotFoundError,
         ("models.init_checkpoint=", "no_such_checkpoint", "'locked'")),
    Case("trainer: resume from another program's safetensors", resume_from_a_foreign_file, Exception,
         ("last.safetensors", "training.resume=false")),
]


# ---------------------------------------------------------------- checkpoint loaders
def saved_checkpoint(tmp: Path) -> Path:
    from workbench.models.checkpoint import save_encoders
    from workbench.models.dual import build_dual_encoder

    cfg = load_config("tiny", ["models.embed_dim=16"]).models
    return save_encoders(build_dual_encoder(cfg), tmp / "ckpt", cfg)


def load_encoders_from_empty_folder(tmp: Path) -> Any:
    from workbench.models.checkpoint import load_encoders

    (tmp / "run").mkdir()
    return load_encoders(tmp / "run")


def load_encoders_with_corrupt_json(tmp: Path) -> Any:
    from workbench.models.checkpoint import load_encoders

    folder = saved_checkpoint(tmp)
    (folder / "encoders.json").write_text('{"format": "workbench.encoders", ')
    return load_encoders(folder)


def load_encoders_with_truncated_weights(tmp: Path) -> Any:
    from workbench.models.checkpoint import load_encoders

    folder = saved_checkpoint(tmp)
    weights = folder / "encoders.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return load_encoders(folder)


def load_encoders_with_foreign_weights(tmp: Path) -> Any:
    from safetensors.torch import save_file

    from workbench.models.checkpoint import load_encoders

    folder = saved_checkpoint(tmp)
    save_file({"w": torch.zeros(3)}, str(folder / "encoders.safetensors"))
    return load_encoders(folder)


def training_state_that_is_a_pickle(tmp: Path) -> Any:
    from workbench.train.checkpoint import load_state

    torch.save({"network": {"w": torch.zeros(2)}}, tmp / "last.safetensors")
    return load_state(tmp / "last.safetensors")


def weights_file_holding_code(tmp: Path) -> Any:
    from test_checkpoint_safety import Malicious
    from workbench.models.weights import read_state_dict

    torch.save({"state_dict": Malicious(tmp / "code-ran")}, tmp / "weights.pth")
    try:
        return read_state_dict(tmp / "weights.pth")
    finally:
        assert not (tmp / "code-ran").exists(), "loading the weights file ran its code"


CHECKPOINT_CASES = [
    Case("image weights: a pickle holding code", weights_file_holding_code, ValueError,
         ("weights.pth", "tensors-only", ".safetensors")),
    Case("load_encoders: no checkpoint in the folder", load_encoders_from_empty_folder, FileNotFoundError,
         ("run", "encoders.json", "train a method")),
    Case("load_encoders: corrupt encoders.json", load_encoders_with_corrupt_json, ValueError,
         ("encoders.json", "train the method again")),
    Case("load_encoders: truncated encoders.safetensors", load_encoders_with_truncated_weights, ValueError,
         ("encoders.safetensors", "safetensors", "train the method again")),
    Case("load_encoders: weights of another model", load_encoders_with_foreign_weights, ValueError,
         ("encoders.safetensors", "does not fit")),
    Case("training checkpoint: a pickle under a safetensors name", training_state_that_is_a_pickle, ValueError,
         ("not a safetensors file",)),
]

CASES = READER_CASES + CLI_CASES + TRAINER_CASES + CHECKPOINT_CASES


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_fails_with_one_line_naming_the_file_and_the_fix(case: Case, tmp_path, capsys, request):
    run = case.run
    if case in CLI_CASES:
        def run(tmp, _run=case.run):  # noqa: E306 - a CLI case also needs capsys
            return _run(tmp, capsys)
    with pytest.raises(case.error) as info:
        run(tmp_path)
    message = str(info.value.args[0]) if isinstance(info.value, KeyError) else str(info.value)
    for fragment in case.says:
        assert fragment.replace("{tmp}", str(tmp_path)) in message, f"{case}: {fragment!r} not in {message!r}"
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert " object at 0x" not in message and "<monai" not in message, message


# ---------------------------------------------------------------- item 7's other messages
def test_an_oversized_image_is_counted_as_oversized_not_corrupt(tmp_path, monkeypatch):
    from PIL import Image

    from workbench.data.readers.common import check_image
    from workbench.data.skips import SkipCounter

    path = radiograph(tmp_path / "big.png", seed=0)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    skips = SkipCounter()
    assert not check_image(path, skips)
    assert skips.as_dict() == {"oversized_image": 1}


@pytest.mark.parametrize("argv", [["--models.init_checkpoint", ""], ["models.init_checkpoint="],
                                  ["--models.init_checkpoint="]])
def test_an_empty_value_typed_in_a_shell_is_the_empty_string(argv):
    cfg = load_config("tiny", ["models.init_checkpoint=/some/where"] + argv)
    assert cfg.models.init_checkpoint == ""


def test_widget_errors_show_exception_text_escaped():
    from workbench.viz.widgets import error_html

    shown = error_html(FileNotFoundError("No image <img src=x onerror=alert(1)> & co"))
    assert "<img" not in shown and "&lt;img src=x onerror=alert(1)&gt; &amp; co" in shown
    assert shown.startswith("<p class='wb-error'")


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_artifacts_honour_the_umask(tmp_path, umask):
    import os

    from workbench.io import write_text_atomic
    from workbench.models.checkpoint import save_encoders
    from workbench.models.dual import build_dual_encoder

    old = os.umask(umask)
    try:
        written = write_text_atomic(tmp_path / "metrics.json", "{}")
        cfg = load_config("tiny", ["models.embed_dim=16"]).models
        folder = save_encoders(build_dual_encoder(cfg), tmp_path / "ckpt", cfg)
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (folder / "encoders.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (folder / "text").stat().st_mode & 0o777 == 0o777 & ~umask


def test_saving_encoders_clears_what_a_killed_save_left(tmp_path):
    from workbench.models.checkpoint import load_encoders, save_encoders
    from workbench.models.dual import build_dual_encoder

    folder = tmp_path / "ckpt"
    (folder / ".text.k1ll3d_1").mkdir(parents=True)
    (folder / ".text.k1ll3d_1" / "tokenizer.json").write_text("{")
    (folder / ".encoders.safetensors.abcd1234.tmp.safetensors").write_bytes(b"half")
    cfg = load_config("tiny", ["models.embed_dim=16"]).models
    save_encoders(build_dual_encoder(cfg), folder, cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["encoders.json", "encoders.safetensors", "text"]
    load_encoders(folder)
