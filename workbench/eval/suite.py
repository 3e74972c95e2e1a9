"""`evaluate_run`: every chosen evaluation, for every checkpoint of a run, on one split.

Writes the tidy tables `eval/metrics.csv` and `eval/metrics.json` (one row per method x
evaluation x metric, with 95 % bootstrap CIs) atomically, merging with earlier evaluations of
other checkpoints or splits; per-checkpoint zero-shot scores go to `eval/<checkpoint>/` for ROC
curves. Model selection belongs to the validation split; report the test split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from workbench.config import ExperimentConfig, setting_hash
from workbench.eval.classaware import class_aware_precision, keyword_precision
from workbench.eval.dense import DENSE_EVALUATIONS, DenseOptions, dense_rows, random_init_encoder
from workbench.eval.embed import embed_texts, project_features, split_features
from workbench.eval.probe import linear_probe
from workbench.eval.retrieval import chance_retrieval_metrics, retrieval_ranks
from workbench.eval.stats import bootstrap_ci, metric_with_ci
from workbench.eval.zeroshot import finding_phrase, prompt_embeddings, zero_shot_evaluate
from workbench.io import atomic_path, write_json_atomic

EVALUATIONS = ("retrieval", "classaware", "zeroshot", "probe")  # the default set (cheap: frozen features)
# Every evaluation a caller may name; the dense ones fine-tune a decoder or detector per checkpoint.
ALL_EVALUATIONS = EVALUATIONS + DENSE_EVALUATIONS
RANDOM_INIT = "random-init"
KEY_COLUMNS = ["run", "checkpoint", "method", "setting_hash", "dataset", "modality", "split", "seed"]
COLUMNS = KEY_COLUMNS + ["evaluation", "metric", "value", "ci_low", "ci_high", "n"]


def parse_list(value: str | Sequence[str] | None, known: Sequence[str] | None = None, what: str = "value") -> List[str]:
    """'a,b' or ['a', 'b'] -> ['a', 'b']; 'all' / None / '' -> every known value."""
    if value is None or value == "" or value == "all":
        return list(known or [])
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if known is not None:
        unknown = [v for v in items if v not in known]
        if unknown:
            raise ValueError(f"Unknown {what} {unknown}; choose from {list(known)}.")
    return items


def _experiment_config(record: Dict) -> ExperimentConfig:
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), record.get("config", {}))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def retrieval_rows(img: np.ndarray, txt: np.ndarray, texts: Sequence[str], chunk_size: int, n_boot: int,
                   seed: int) -> List[Dict]:
    """R@K / MdR / MnR with bootstrap CIs over queries, plus the chance level beside each."""
    i2t, t2i = retrieval_ranks(img, txt, text_groups=list(texts), chunk_size=chunk_size)
    rows = []
    chance = chance_retrieval_metrics(len(img))
    for prefix, ranks in (("i2t_", i2t), ("t2i_", t2i)):
        stats = {f"R@{k}": (lambda r, k=k: 100.0 * np.mean(r <= k)) for k in (1, 5, 10)}
        stats["MdR"] = lambda r: float(np.median(r))
        stats["MnR"] = lambda r: float(np.mean(r))
        for name, fn in stats.items():
            ci = bootstrap_ci(lambda idx, fn=fn: fn(ranks[idx]), len(ranks), n_boot, seed)
            rows.append(metric_with_ci(prefix + name, fn(ranks), ci))
            rows.append(metric_with_ci(prefix + name + "_chance", chance[prefix + name]))
    for k in (1, 5, 10):
        rows.append(metric_with_ci(f"mean_R@{k}", 0.5 * (100 * np.mean(i2t <= k) + 100 * np.mean(t2i <= k))))
    return rows


def evaluate_checkpoint(checkpoint: str | Path, run_dir: str | Path, evaluations: Sequence[str] = EVALUATIONS,
                        split: str = "test", device: str = "auto", n_boot: int = 200, chunk_size: int = 1024,
                        probe_fractions: Sequence[float] = (0.01, 0.1, 1.0), batch_size: int = 32,
                        manifest: Optional[pd.DataFrame] = None, progress: bool = True,
                        dense: Optional[DenseOptions] = None) -> pd.DataFrame:
    """Tidy metric rows of one checkpoint on one split of the run's manifest (dense evaluations
    only for radiograph checkpoints: the 3D decoders are not built yet)."""
    from workbench.data.manifest import read_manifest
    from workbench.models import load_encoders

    checkpoint, run_dir = Path(checkpoint), Path(run_dir)
    record = json.loads((checkpoint / "run.json").read_text()) if (checkpoint / "run.json").is_file() else {}
    cfg = _experiment_config(record)
    seed = int(record.get("seed", cfg.training.random_seed) or 0)
    method = record.get("method") or cfg.method.name or checkpoint.name.rsplit("-", 1)[0]
    modality = cfg.data.modality
    model = load_encoders(checkpoint, device=device)
    manifest = read_manifest(run_dir) if manifest is None else manifest
    dense_chosen = [e for e in evaluations if e in DENSE_EVALUATIONS]
    evaluations = [e for e in evaluations if e not in DENSE_EVALUATIONS]
    rows: List[Dict] = []
    if dense_chosen and modality == "cxr":
        for task in dense_chosen:
            for row in dense_rows(task, model.image_encoder, manifest, run_dir, split, dense, seed, n_boot,
                                  panel_name=checkpoint.name, progress=progress):
                rows.append({"evaluation": task, **row})
    elif dense_chosen and progress:
        print(f"[eval] {checkpoint.name}: {', '.join(dense_chosen)} skipped: only 2D (radiograph) encoders "
              f"have dense heads so far.")
    if not evaluations:
        return _keyed(rows, run_dir, checkpoint.name, method, setting_hash(cfg), manifest, None, modality, split, seed)
    store = run_dir / "eval" / "features"
    common = dict(store_dir=store, modality=modality, batch_size=batch_size, progress=progress)
    feats = split_features(model, manifest, run_dir / "cache", split, **common)
    img, txt = project_features(model, feats.image_features, feats.text_features)

    def add(evaluation: str, new_rows: List[Dict]) -> None:
        for row in new_rows:
            rows.append({"evaluation": evaluation, "n": len(feats), **row})

    findings = [n[len("label_"):] for n in feats.label_names]
    if "retrieval" in evaluations:
        add("retrieval", retrieval_rows(img, txt, feats.texts, chunk_size, n_boot, seed))
    if "classaware" in evaluations and findings:
        precision = class_aware_precision(img, txt, feats.labels, chunk_size=chunk_size)
        queries = embed_texts(model, [finding_phrase(f) for f in findings])
        keyword = keyword_precision(queries, img, feats.labels, findings)
        add("classaware", [metric_with_ci(k, v) for k, v in {**precision, **keyword}.items()])
    if "zeroshot" in evaluations and findings:
        val = split_features(model, manifest, run_dir / "cache", "val", **common)
        val_img, _ = project_features(model, val.image_features, val.text_features)
        pos, neg = prompt_embeddings(lambda texts: embed_texts(model, texts), findings)
        scale = float(min(model.logit_scale.exp().item(), 100.0))
        zs_rows, scores = zero_shot_evaluate(val_img, val.labels, img, feats.labels, pos, neg, findings,
                                             logit_scale=scale, n_boot=n_boot, seed=seed)
        add("zeroshot", zs_rows)
        with atomic_path(run_dir / "eval" / checkpoint.name / f"zeroshot_{split}.npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, scores=scores, labels=feats.labels, findings=np.asarray(findings, dtype=str))
    if "probe" in evaluations and findings:
        train = split_features(model, manifest, run_dir / "cache", "train", **common)
        add("probe", linear_probe(train.image_features, train.labels, feats.image_features, feats.labels,
                                  fractions=probe_fractions, task="multilabel", seed=seed, n_boot=n_boot,
                                  names=findings))
    return _keyed(rows, run_dir, checkpoint.name, method, setting_hash(cfg), manifest, feats.study_ids, modality,
                  split, seed)


def _keyed(rows: List[Dict], run_dir: Path, checkpoint: str, method: str, setting: str, manifest: pd.DataFrame,
           study_ids: Optional[Sequence[str]], modality: str, split: str, seed: int) -> pd.DataFrame:
    """Rows with the key columns every metric row carries."""
    if study_ids is None:
        chosen = manifest["modality"].astype(str).eq(modality) & manifest["split"].astype(str).eq(split)
    else:
        chosen = manifest["study_id"].isin(study_ids)
    datasets = ",".join(sorted(set(manifest.loc[chosen, "dataset"].astype(str))))
    keys = {"run": run_dir.name, "checkpoint": checkpoint, "method": method, "setting_hash": setting,
            "dataset": datasets, "modality": modality, "split": split, "seed": seed}
    return pd.DataFrame([{**keys, **row} for row in rows], columns=COLUMNS)


def evaluate_random_init(reference: str | Path, run_dir: str | Path, evaluations: Sequence[str], split: str = "test",
                         device: str = "auto", n_boot: int = 200, seed: int = 0,
                         manifest: Optional[pd.DataFrame] = None, dense: Optional[DenseOptions] = None,
                         progress: bool = True) -> pd.DataFrame:
    """Dense rows of `reference`'s image architecture with random weights (`random-init-<seed>`):
    the floor that shows what pretraining adds to segmentation and detection."""
    from workbench.data.manifest import read_manifest

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir) if manifest is None else manifest
    encoder = random_init_encoder(reference, seed, device)
    name = f"{RANDOM_INIT}-{seed}"
    rows: List[Dict] = []
    for task in [e for e in evaluations if e in DENSE_EVALUATIONS]:
        for row in dense_rows(task, encoder, manifest, run_dir, split, dense, seed, n_boot, panel_name=name,
                              progress=progress):
            rows.append({"evaluation": task, **row})
    return _keyed(rows, run_dir, name, RANDOM_INIT, RANDOM_INIT, manifest, None, "cxr", split, seed)


def _modality(checkpoint: Path) -> str:
    record = json.loads((checkpoint / "run.json").read_text()) if (checkpoint / "run.json").is_file() else {}
    return _experiment_config(record).data.modality


def write_metrics(run_dir: str | Path, new: pd.DataFrame) -> pd.DataFrame:
    """Merge `new` into `eval/metrics.csv` (replacing rows of the same checkpoint, split and
    evaluation) and write the csv and json atomically; returns the merged table."""
    path = Path(run_dir) / "eval" / "metrics.csv"
    table = new
    if path.is_file() and not new.empty:
        old = pd.read_csv(path)
        replaced = old.set_index(["checkpoint", "split", "evaluation"]).index.isin(
            new.set_index(["checkpoint", "split", "evaluation"]).index.unique())
        table = pd.concat([old[~replaced], new], ignore_index=True)
    table = table[COLUMNS].sort_values(["checkpoint", "split", "evaluation", "metric"], kind="stable")
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    records = json.loads(table.to_json(orient="records"))
    write_json_atomic(path.with_suffix(".json"), {"columns": COLUMNS, "rows": records})
    return table.reset_index(drop=True)


def evaluate_run(run_dir: str | Path, methods: str | Sequence[str] = "all",
                 evaluations: str | Sequence[str] = EVALUATIONS, split: str = "test", seed: Optional[int] = None,
                 device: str = "auto", n_boot: int = 200, chunk_size: int = 1024,
                 probe_fractions: Sequence[float] = (0.01, 0.1, 1.0), batch_size: int = 32,
                 progress: bool = True, dense: Optional[DenseOptions] = None) -> pd.DataFrame:
    """Evaluate the run's checkpoints (`train/<method>-<seed>/`; `methods` 'all' or 'a,b'),
    write `eval/metrics.csv` + `.json`, and return this call's rows.

    `evaluations` may name any of `ALL_EVALUATIONS` ('all' is every one, the dense ones
    included); with `segmentation` / `detection`, `dense` says how they fine-tune, and a
    `random-init-<seed>` row set (the first radiograph checkpoint's architecture, random
    weights) is added unless `dense.random_init` is off."""
    from workbench.data.manifest import read_manifest
    from workbench.models import checkpoint_folders

    run_dir = Path(run_dir)
    chosen = parse_list(evaluations, ALL_EVALUATIONS, "evaluations")
    folders = checkpoint_folders(run_dir)
    wanted = parse_list(methods)
    if wanted:
        folders = [f for f in folders if f.name in wanted or f.name.rsplit("-", 1)[0] in wanted]
    if seed is not None:
        folders = [f for f in folders if f.name.rsplit("-", 1)[-1] == str(seed)]
    if not folders:
        raise FileNotFoundError(f"No checkpoints matching methods={methods!r} seed={seed!r} under {run_dir / 'train'}; "
                                f"train them first (notebooks/03_pretrain.ipynb or workbench.eval.baselines).")
    manifest = read_manifest(run_dir)
    tables = [evaluate_checkpoint(f, run_dir, chosen, split, device, n_boot, chunk_size, probe_fractions, batch_size,
                                  manifest=manifest, progress=progress, dense=dense) for f in folders]
    dense = dense or DenseOptions()
    if dense.random_init and any(e in DENSE_EVALUATIONS for e in chosen):
        reference = next((f for f in folders if _modality(f) == "cxr"), None)
        if reference is not None:
            tables.append(evaluate_random_init(reference, run_dir, chosen, split, device, n_boot,
                                               seed if seed is not None else 0, manifest, dense, progress))
    new = pd.concat(tables, ignore_index=True)
    write_metrics(run_dir, new)
    return new


def summary_table(results: pd.DataFrame, evaluation: str, metrics: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One evaluation as a checkpoint x metric table of `value [ci_low, ci_high]` strings
    (per-finding metrics, those with a '/', are left to the csv)."""
    rows = results[results["evaluation"] == evaluation]
    if metrics is None:
        metrics = list(dict.fromkeys(m for m in rows["metric"] if "/" not in m))
    rows = rows[rows["metric"].isin(metrics)]
    if rows.empty:
        return pd.DataFrame()
    text = [f"{v:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) and np.isfinite(hi) else "")
            for v, lo, hi in zip(rows["value"], rows["ci_low"], rows["ci_high"])]
    table = rows.assign(text=text).pivot_table(index=["checkpoint", "split"], columns="metric", values="text",
                                               aggfunc="last")
    return table[[m for m in metrics if m in table.columns]]
