"""The dense evaluations of the suite: `segmentation` (Dice) and `detection` (mAP) of a
checkpoint's image encoder at 1 / 10 / 100 % of the train split, frozen or fine-tuned.

Targets come from the demo's own ground truth (the phantom's masks and boxes of the chosen
findings) or from a released annotation file (SIIM-ACR RLE, RSNA boxes, Object-CXR shapes;
`workbench.data.annotations`) matched to the manifest by study id or image file stem. Results
are cached per image-encoder fingerprint and options, so checkpoints that share an image
encoder (`frozen` and `locked` do) are fine-tuned once. `random_init_encoder` gives the
same architecture with random weights: the reference a pretrained encoder must beat.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from workbench.io import atomic_path, write_json_atomic

DENSE_EVALUATIONS = ("segmentation", "detection")


@dataclass
class DenseOptions:
    """How the dense evaluations fine-tune and what they segment / detect."""

    fractions: List[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    finetune: bool = False  # False: encoder frozen, only the decoder / detector learns
    steps: int = 150  # segmentation
    detection_steps: int = 60  # Faster R-CNN steps cost ~2x a U-Net step on CPU
    batch_size: int = 8
    lr: float = 1e-3
    # demo targets (union per study); SIIM's pneumothorax and RSNA's opacities have phantom kin
    segmentation_findings: str = "Pneumothorax,Effusion,Consolidation,Lung_Opacity,Atelectasis"
    detection_findings: str = "Lung_Opacity,Consolidation,Effusion,Mass"  # RSNA-like opacities (phantom nodules are 2-3 px)
    segmentation_annotations: str = ""  # a SIIM-ACR train-rle.csv instead of the demo masks
    detection_annotations: str = ""  # an RSNA or Object-CXR CSV instead of the demo boxes
    random_init: bool = True  # also score the same architecture with random weights
    detection_boot: int = 50  # bootstrap resamples for mAP (each recomputes COCO AP)

    @classmethod
    def from_config(cls, eval_cfg) -> "DenseOptions":
        """From `EvalConfig`'s `dense_*` fields (those it has)."""
        values = {}
        for f in dataclasses.fields(cls):
            key = f"dense_{f.name}" if not f.name.startswith(("segmentation_", "detection_")) else f.name
            key = "dense_detection_steps" if f.name == "detection_steps" else key
            if hasattr(eval_cfg, key):
                value = getattr(eval_cfg, key)
                values[f.name] = list(value) if f.name == "fractions" else value
        return cls(**values)


def _findings(text: str) -> List[str]:
    return [f.strip() for f in str(text).split(",") if f.strip()]


def dense_annotations(task: str, manifest: pd.DataFrame, options: DenseOptions):
    """The annotations a task scores: a released file when given, else the demo's own."""
    from workbench.data.annotations import demo_annotations, read_annotations

    path = options.segmentation_annotations if task == "segmentation" else options.detection_annotations
    if path:
        return read_annotations(path)
    findings = options.segmentation_findings if task == "segmentation" else options.detection_findings
    return demo_annotations(manifest, _findings(findings))


def task_options(options: DenseOptions, task: str) -> Dict[str, object]:
    """The options that change a task's rows (the cache key): not the other task's, not `random_init`."""
    other = "detection" if task == "segmentation" else "segmentation"
    return {k: v for k, v in dataclasses.asdict(options).items()
            if k != "random_init" and not k.startswith(other + "_")}


def image_fingerprint(image_encoder: nn.Module, extra: str = "") -> str:
    """Short hash of the image encoder's weights and `extra`."""
    digest = hashlib.sha1(extra.encode())
    digest.update(type(image_encoder).__name__.encode())
    for name, tensor in image_encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def random_init_encoder(checkpoint: str | Path, seed: int = 0, device: str | torch.device = "cpu") -> nn.Module:
    """The checkpoint's image-encoder architecture with seeded random weights (no pretraining)."""
    from workbench.models import resolve_device
    from workbench.models.checkpoint import read_checkpoint_meta
    from workbench.models.registry import build_image_encoder
    from workbench.config import ModelsConfig

    meta = read_checkpoint_meta(checkpoint)
    known = {f.name for f in dataclasses.fields(ModelsConfig)}
    cfg = ModelsConfig(**{k: v for k, v in meta["models"].items() if k in known})
    arch = dataclasses.replace(cfg, img_model=meta["image_encoder"], img_pretrained=False, tiny=False)
    torch.manual_seed(seed)
    encoder = build_image_encoder(arch)
    return encoder.to(device if isinstance(device, torch.device) else resolve_device(device)).eval()


def dense_rows(task: str, image_encoder: nn.Module, manifest: pd.DataFrame, run_dir: str | Path, split: str = "test",
               options: Optional[DenseOptions] = None, seed: int = 0, n_boot: int = 200, panel_name: str = "",
               progress: bool = True) -> List[Dict[str, float]]:
    """Metric rows of one dense task for one image encoder (cached under `eval/dense/`); the
    largest fraction's predictions go to `eval/<panel_name>/<task>_<split>.npz` for the panel."""
    from workbench.data.dense import DenseDataset
    from workbench.eval.detection import detection_evaluate
    from workbench.eval.segmentation import segmentation_evaluate

    if task not in DENSE_EVALUATIONS:
        raise ValueError(f"Unknown dense evaluation {task!r}; choose from {DENSE_EVALUATIONS}.")
    options = options or DenseOptions()
    run_dir = Path(run_dir)
    annotations = dense_annotations(task, manifest, options)
    train_set = DenseDataset(manifest, run_dir / "cache", annotations, split="train")
    test_set = DenseDataset(manifest, run_dir / "cache", annotations, split=split)
    for name, ds in (("train", train_set), (split, test_set)):
        if len(ds) == 0:
            raise ValueError(f"No {name}-split radiograph of {run_dir} has {task} annotations "
                             f"({annotations.source}); check the findings / annotation file and the manifest.")
    settings = json.dumps({"task": task, "split": split, "seed": seed, "n_boot": n_boot,
                           "options": task_options(options, task), "n": [len(train_set), len(test_set)],
                           "studies": hashlib.sha1(",".join(test_set.frame["study_id"]).encode()).hexdigest()},
                          sort_keys=True)
    key = image_fingerprint(image_encoder, settings)
    store = run_dir / "eval" / "dense" / f"{key}_{task}.json"
    panel_store = store.with_suffix(".npz")
    if store.is_file():
        rows = json.loads(store.read_text())["rows"]
    else:
        common = dict(fractions=options.fractions, finetune=options.finetune, steps=options.steps, lr=options.lr,
                      seed=seed, progress=progress)
        if task == "segmentation":
            rows, panel = segmentation_evaluate(image_encoder, train_set, test_set, batch_size=options.batch_size,
                                                n_boot=n_boot, **common)
        else:
            common["steps"] = options.detection_steps
            rows, panel = detection_evaluate(image_encoder, train_set, test_set,
                                             batch_size=max(2, options.batch_size // 2),
                                             n_boot=min(n_boot, options.detection_boot), **common)
        if panel is not None:
            _save_npz(panel_store, panel)
        write_json_atomic(store, {"settings": json.loads(settings), "rows": rows})
    rows = [{**row, "n": len(test_set)} for row in rows]
    if panel_name and panel_store.is_file():
        target = run_dir / "eval" / panel_name / f"{task}_{split}.npz"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(panel_store.read_bytes())
    return rows


def _save_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def dense_summary(results: pd.DataFrame, task: str) -> pd.DataFrame:
    """checkpoint x fraction table of `value [ci_low, ci_high]` for Dice (segmentation) or mAP."""
    metric = "Dice" if task == "segmentation" else "mAP"
    rows = results[(results["evaluation"] == task) & results["metric"].str.startswith(metric + "@")]
    if rows.empty:
        return pd.DataFrame()
    text = [f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else "")
            for v, lo, hi in zip(rows["value"], rows["ci_low"], rows["ci_high"])]
    table = rows.assign(text=text).pivot_table(index="checkpoint", columns="metric", values="text", aggfunc="last")
    order = sorted(table.columns, key=lambda m: float(m.split("@")[1].rstrip("%")))
    return table[order]

