"""Typed experiment configuration: dataclasses, YAML files and dotted overrides via OmegaConf.

Why OmegaConf structured configs: typed merge (a string where an int belongs fails at load
time, not deep inside training), interpolation, and dotlist overrides for free. The section
and key names keep the MedTrim seed's argument names (`data.img_df`, `training.batch_size`,
`models.margin`, ...) so its users' scripts translate one to one.

Sections are owned by layers: `data` by workbench/data, `models` by workbench/models,
`training` by workbench/train, `method` by workbench/methods, `eval` by workbench/eval.
Method-specific knobs live under `method.params` and loss-term weights under
`method.loss_weights`, so adding a method never edits this file.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from workbench.tracking import parse_trackers


@dataclass
class DataConfig:
    """Where studies come from and how they are split and decoded."""

    dataset: str = "demo"  # reader name: demo | mimic | bimcv | ctrate | roco | iu | folders | csv | medtrim
    data_root: str = ""  # empty with dataset=demo: generate into the run folder
    report_root: str = ""  # MIMIC: reports under a second root (MedTrim's README layout)
    img_df: str = ""  # seed name: a CSV of image rows, path_base + full_path (dataset=medtrim)
    text_df: str = ""  # seed name: a CSV of report rows, path_base + text (dataset=medtrim)
    triplet_csv: str = ""  # seed name: mined triplets (default: the run folder's triplets.csv.xz)
    model_save_path: str = ""  # seed name: training output goes to <this>/<method>-<seed>/ (default: run_dir/train/)
    modality: str = "cxr"  # cxr | ct: which studies of a mixed manifest a run uses
    image_size: int = 224
    volume_size: List[int] = field(default_factory=lambda: [64, 64, 64])
    # CT preprocessing (workbench.data.transforms.ct_preprocessing): resample finer input to
    # this spacing (mm; CT-CLIP uses 0.75 x 0.75 x 1.5 before its 480 x 480 x 240 crop, a
    # cache resized to 64^3 needs no more than 3 mm), window in HU mapped to [0, 1], and how
    # the body's box meets volume_size (resize | pad)
    ct_pixdim: List[float] = field(default_factory=lambda: [3.0, 3.0, 3.0])
    ct_window: List[float] = field(default_factory=lambda: [-1000.0, 1000.0])
    ct_fit: str = "resize"
    n_studies: int = 2000  # demo: 2D studies to generate
    n_ct_studies: int = 400  # demo: 3D studies to generate (~40 test volumes: R@k above noise)
    split_fractions: List[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = 0
    label_set: str = "demo"
    max_text_tokens: int = 128
    csv_image_column: str = "filename"
    csv_text_column: str = "clinical_notes"
    csv_subject_column: str = "patientid"
    subject_regex: str = ""  # class folders: regex with one group giving the subject id
    boxes_file: str = ""  # region boxes (Chest ImaGenome-style) for ASG on real data
    strict: bool = False  # raise on the first bad file instead of skipping and counting


@dataclass
class ModelsConfig:
    """Encoders and projection heads shared by every method."""

    img_model: str = "tf_efficientnet_lite0"
    text_model: str = "minilm"
    img_pretrained: bool = True
    text_pretrained: bool = True
    img_weights: str = ""  # local path; empty: the registry's offline default
    text_weights: str = ""  # local path or HF cache name
    text_pooling: str = "mean"  # mean | cls
    embed_dim: int = 256
    projection: str = "linear"  # linear | mlp
    margin: float = 0.3  # seed name (MedTrim triplet margin)
    freeze_image: bool = False
    freeze_text: bool = False
    freeze_image_layers: int = 0
    freeze_text_layers: int = 0
    # batch-norm layers keep their (pretrained) running statistics while the rest trains: small
    # batches of radiographs shift batch statistics far from ImageNet's, which scrambles the
    # features a pretrained CNN gives (the "FrozenBN" practice of detection fine-tuning)
    freeze_batchnorm: bool = True
    tiny: bool = False  # tiny randomly initialised encoders (tests, CI)
    # 2.5D CT encoders (`efficientnet_lite0_25d_3d`): encode an axial slice every `slice_stride`,
    # resized to `slice_size` px (0: as cached), its RGB channels being its neighbours
    # (`neighbours`: z-1, z, z+1) or itself under three HU windows (`windows`: lung, full, mediastinum)
    slice_stride: int = 2
    slice_size: int = 0
    slice_channels: str = "windows"
    # memory/speed switches of the image encoder, off by default (on CPU they only cost time):
    # recompute activations in the backward pass; torch.compile the encoder (needs a compiler)
    grad_checkpointing: bool = False
    compile: bool = False
    # start from a saved encoder pair of the same architecture: a `train/<method>-<seed>` folder
    # (relative paths resolve against the run folder), or `locked` / `frozen` for this seed's
    # baseline in the run folder (trained first when absent), e.g. fine-tune after `locked`
    init_checkpoint: str = ""
    # a pretrained CLIP pair every method starts from (replaces img_model/text_model and the
    # heads): an OpenAI-format .pth (PubMedCLIP), a Hugging Face CLIPModel folder, an open_clip
    # folder with open_clip_config.json (BiomedCLIP), or an hf-hub: name in the local cache
    clip_model: str = ""


@dataclass
class TrainingConfig:
    """The one training loop's settings (names from the MedTrim seed where it has them)."""

    batch_size: int = 32
    num_workers: int = 0
    learning_rate: float = 1e-4
    encoder_lr_scale: float = 1.0  # per-group lr: encoders get learning_rate * this
    weight_decay: float = 0.01
    num_epochs: int = 3
    max_steps: int = -1  # > 0: stop after this many optimiser steps
    warmup_steps: int = 20
    grad_clip: float = 1.0
    grad_accum: int = 1
    amp: str = "auto"  # auto | bf16 | fp16 | off
    save_freq: int = 1  # epochs between checkpoints
    eval_every: int = 1  # epochs between validations
    select_metric: str = "val/mean_R@10"
    early_stopping_patience: int = 0  # 0: off
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    random_seed: int = 42
    pin_memory: bool = True
    resume: bool = False
    trackers: str = "tensorboard"  # comma-separated: tensorboard, mlflow; "none" for metrics.csv only

    def __post_init__(self) -> None:
        # A value the loop would misread (0 used to mean "no limit": a full epoch) fails here.
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"training.max_steps={self.max_steps} would train no step; use -1 to train "
                              "training.num_epochs epochs, or a positive number of optimiser steps.")
        try:
            parse_trackers(self.trackers)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key in ("batch_size", "grad_accum", "num_epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"training.{key}={getattr(self, key)} must be at least 1.")


@dataclass
class MethodConfig:
    """Which objective trains the encoders; its own knobs and loss-term weights."""

    name: str = "clip"
    loss_weights: Dict[str, float] = field(default_factory=dict)  # term -> weight; 0 switches off
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """What the evaluation suite computes."""

    split: str = "test"
    evaluations: List[str] = field(default_factory=lambda: ["retrieval", "classaware", "zeroshot", "probe"])
    bootstrap: int = 200
    chunk_size: int = 1024
    probe_fractions: List[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    # segmentation / detection fine-tuning (workbench.eval.dense.DenseOptions reads these)
    dense_fractions: List[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    dense_finetune: bool = False  # False: the image encoder stays frozen, only the head learns
    dense_steps: int = 150  # CPU-sized; the seeds train for epochs on a GPU
    dense_detection_steps: int = 60  # detector steps (each ~2x a U-Net step on CPU)
    dense_batch_size: int = 8
    dense_lr: float = 1e-3
    dense_random_init: bool = True  # also score the architecture with random weights
    segmentation_findings: str = "Pneumothorax,Effusion,Consolidation,Lung_Opacity,Atelectasis"
    detection_findings: str = "Lung_Opacity,Consolidation,Effusion,Mass"
    segmentation_annotations: str = ""  # SIIM-ACR train-rle.csv (else the demo's masks)
    detection_annotations: str = ""  # RSNA stage_2_train_labels.csv or Object-CXR train.csv


@dataclass
class ExperimentConfig:
    """One run's whole configuration; `run.json` records it resolved."""

    data: DataConfig = field(default_factory=DataConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run_dir: str = ""


# Notebook parameter -> config key. A notebook parameter, when set (not None / ""), wins over
# the config file; `overrides` (a dotlist) wins over both.
NOTEBOOK_PARAMETERS: Dict[str, str] = {
    "dataset": "data.dataset",
    "data_root": "data.data_root",
    "report_root": "data.report_root",
    "image_size": "data.image_size",
    "n_studies": "data.n_studies",
    "n_ct_studies": "data.n_ct_studies",
    "label_set": "data.label_set",
    "method": "method.name",
    "epochs": "training.num_epochs",
    "max_steps": "training.max_steps",
    "batch_size": "training.batch_size",
    "seed": "training.random_seed",
    "device": "training.device",
    "split": "eval.split",
    "dense_finetune": "eval.dense_finetune",
    "run_dir": "run_dir",
}


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says which and why."""


def _schema() -> DictConfig:
    return OmegaConf.structured(ExperimentConfig)


def bundled_configs() -> List[str]:
    """Names of the configs shipped in `workbench/configs/` (usable as `--config NAME`)."""
    folder = resources.files("workbench") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist; pass a YAML path or one of {bundled_configs()}.")
        return path
    bundled = Path(str(resources.files("workbench") / "configs" / f"{name_or_path}.yaml"))
    if not bundled.is_file():
        raise ConfigError(
            f"Unknown config {name_or_path!r}; bundled configs are {bundled_configs()} (or pass a .yaml path)."
        )
    return bundled


def _all_keys(node: Any, prefix: str = "") -> List[str]:
    keys: List[str] = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            full = f"{prefix}{key}"
            keys.append(full)
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                keys.extend(_all_keys(child, full + "."))
    return keys


def _unknown_key_error(key: str, source: str) -> ConfigError:
    valid = _all_keys(_schema())
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid top-level sections are {list(_schema().keys())}."
    return ConfigError(f"Unknown config key {key!r} in {source}{hint}")


def _free_form(key: str) -> bool:
    """Keys under these dicts are free-form (method-specific), not checked against the schema."""
    return key.startswith("method.params.") or key.startswith("method.loss_weights.")


def _check_keys(node: Mapping[str, Any], source: str, prefix: str = "") -> None:
    schema_keys = set(_all_keys(_schema()))
    for key, value in node.items():
        full = f"{prefix}{key}"
        if _free_form(full):
            continue
        if full not in schema_keys:
            raise _unknown_key_error(full, source)
        if isinstance(value, Mapping) and full not in ("method.params", "method.loss_weights"):
            _check_keys(value, source, full + ".")


def parse_overrides(args: Sequence[str]) -> List[str]:
    """Turn `--training.batch_size 64`, `--training.batch_size=64` and `training.batch_size=64`
    into OmegaConf's dotlist form. Flags without a value (`--training.resume`) mean true."""
    out: List[str] = []
    i = 0
    args = list(args)
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            body = arg[2:]
            if "=" in body:
                out.append(body)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                out.append(f"{body}={args[i + 1]}")
                i += 1
            else:
                out.append(f"{body}=true")
        elif "=" in arg:
            out.append(arg)
        else:
            raise ConfigError(f"Cannot read override {arg!r}; write it as --section.key VALUE or section.key=VALUE.")
        i += 1
    return out


def load_config(
    config: Optional[str] = None,
    overrides: Sequence[str] | str | None = None,
    params: Optional[Mapping[str, Any]] = None,
) -> ExperimentConfig:
    """Build a typed config: schema defaults <- YAML (bundled name or path) <- notebook
    parameters (`NOTEBOOK_PARAMETERS`, unset values ignored) <- dotted overrides.

    `overrides` is a list (CLI argv style or dotlist) or one whitespace-separated string, the
    form a papermill `-p overrides "training.batch_size=8 method.params.k=4"` passes.
    """
    merged = _schema()
    if config:
        path = _config_path(config)
        loaded = OmegaConf.load(path)
        _check_keys(OmegaConf.to_container(loaded, resolve=False), str(path))
        merged = _merge(merged, loaded, str(path))
    if params:
        dotlist = []
        for name, value in params.items():
            if name not in NOTEBOOK_PARAMETERS:
                raise ConfigError(f"Unknown notebook parameter {name!r}; known: {sorted(NOTEBOOK_PARAMETERS)}.")
            if value is None or value == "":
                continue
            dotlist.append((NOTEBOOK_PARAMETERS[name], value))
        for key, value in dotlist:
            OmegaConf.update(merged, key, value, merge=True)
    if overrides:
        if isinstance(overrides, str):
            overrides = overrides.split()
        # `key=` (what `models.init_checkpoint=""` becomes in a shell) means the empty string,
        # not OmegaConf's None
        dotlist = [f"{item}''" if item.endswith("=") else item for item in parse_overrides(overrides)]
        for item in dotlist:
            key = item.split("=", 1)[0]
            if not _free_form(key) and key not in set(_all_keys(_schema())):
                raise _unknown_key_error(key, "overrides")
        merged = _merge(merged, OmegaConf.from_dotlist(dotlist), "overrides")
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ConfigError(f"Invalid config value: {str(exc.msg).splitlines()[0]}") from None


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except (ConfigKeyError, ConfigAttributeError) as exc:
        raise _unknown_key_error(str(exc.full_key or exc.key), source) from None
    except ValidationError as exc:
        raise ConfigError(f"Invalid value for {exc.full_key!r} in {source}: {str(exc.msg).splitlines()[0]}") from None


def to_dict(cfg: ExperimentConfig) -> Dict[str, Any]:
    """Plain nested dict of a config (for run.json and hashing)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: ExperimentConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


# Keys that change where or how fast a run goes, not what it learns: left out of the setting
# hash so seeds and machines of one setting group together on the leaderboard.
_NON_SETTING_KEYS = {
    "run_dir",
    "data.data_root",
    "data.report_root",
    "data.img_df",
    "data.text_df",
    "data.triplet_csv",
    "data.model_save_path",
    "data.strict",
    "data.boxes_file",
    "models.img_weights",
    "models.text_weights",
    "models.init_checkpoint",
    "training.random_seed",
    "training.device",
    "training.num_workers",
    "training.pin_memory",
    "training.resume",
    "training.trackers",
    "eval",
}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in d.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, full + "."))
        else:
            flat[full] = value
    return flat


def flatten_config(cfg: ExperimentConfig) -> Dict[str, Any]:
    """Dotted key -> value of a whole config (what trackers record as a run's parameters)."""
    return _flatten(to_dict(cfg))


def setting_hash(cfg: ExperimentConfig, length: int = 8) -> str:
    """Hash of the model and objective settings only (not seed, paths, device, eval)."""
    flat = _flatten(to_dict(cfg))
    kept = {
        k: v
        for k, v in flat.items()
        if not any(k == skip or k.startswith(skip + ".") for skip in _NON_SETTING_KEYS)
    }
    blob = json.dumps(kept, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:length]


def config_hash(cfg: ExperimentConfig, length: int = 8) -> str:
    """Hash of the whole resolved config (names run folders)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:length]
