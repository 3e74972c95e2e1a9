"""One fair comparison of every method: same split, same encoder pair, same step budget, same
evaluation suite; one leaderboard of mean +- std over seeds (issue 8).

    from workbench.sweep import run_sweep
    result = run_sweep(methods="all", seeds=3)        # or: python -m workbench.cli sweep
    result.markdown                                    # the table; files in result.folder

The spec is `workbench/configs/sweep.yaml` (or a YAML path): methods, baselines, seeds, the
shared `base` settings, the encoder profile every 2D method shares, the `ct` overrides of the
3D methods, and small per-method demo knobs. Each run's config is the shared settings plus
ONLY the `method` section of the method's own bundled config (its loss weights and knobs).

Layout: the sweep gets its own run folder `papermill_runs/<time>-sweep/` whose data
(manifest, cache, triplets) are links to the source run folder's, so no earlier training
there is overwritten. Every 2D run trains and is evaluated at the spec's `data.image_size`
(128 px: the CPU budget); when the source cached another size, the sweep caches the source's
images once at that size in its own `cache/` (the source is never touched). 3D methods and
their baselines train in its `ct/` sub-folder. A re-run with the same `out_dir` skips runs
whose encoders already exist. Written at the end:
`leaderboard.csv` (tidy: modality, method, metric, mean, std, n_seeds), `leaderboard.md` and
`leaderboard.png`.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from workbench.config import ConfigError, ExperimentConfig, load_config
from workbench.io import atomic_path, save_figure_atomic, write_text_atomic

LINKED_ARTIFACTS = ("manifest.parquet", "cache", "triplets.csv.xz", "ober.parquet", "data")


class SweepError(ValueError):
    """A sweep spec or request that cannot run; the message says what to change."""


@dataclass
class SweepSpec:
    """What `workbench/configs/sweep.yaml` holds (see that file for each key's meaning)."""

    methods: List[str]
    baselines: List[str] = field(default_factory=lambda: ["frozen", "locked"])
    methods_3d: List[str] = field(default_factory=lambda: ["medfinder"])
    seeds: int = 3
    split: str = "test"
    evaluations: List[str] = field(default_factory=lambda: ["retrieval", "classaware"])
    metrics: List[str] = field(default_factory=lambda: ["mean_R@10", "i2t_P@10"])
    headline: List[str] = field(default_factory=lambda: ["mean_R@10", "i2t_P@10"])
    encoders: str = "efficientnet"
    encoder_profiles: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    base: Dict[str, Any] = field(default_factory=dict)
    ct: Dict[str, Any] = field(default_factory=dict)
    per_method: Dict[str, Dict[str, Any]] = field(default_factory=dict)


def load_sweep_spec(name_or_path: str = "sweep") -> SweepSpec:
    """Read a sweep spec: a bundled name (`sweep`) or a YAML path; unknown keys fail by name."""
    import yaml

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(str(resources.files("workbench") / "configs" / f"{name_or_path}.yaml"))
    if not path.is_file():
        raise SweepError(f"Sweep spec {path} does not exist; pass a YAML path or 'sweep'.")
    raw = yaml.safe_load(path.read_text()) or {}
    known = set(SweepSpec.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SweepError(f"{path}: unknown sweep keys {unknown}; known: {sorted(known)}.")
    if "methods" not in raw:
        raise SweepError(f"{path} lists no `methods`.")
    spec = SweepSpec(**raw)
    if spec.encoders not in spec.encoder_profiles:
        raise SweepError(f"{path}: encoders={spec.encoders!r} is not among encoder_profiles {sorted(spec.encoder_profiles)}.")
    return spec


def _dotlist(mapping: Mapping[str, Any]) -> List[str]:
    import json

    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in mapping.items()]


def _method_section(method: str) -> Dict[str, Any]:
    """The `method` section of the method's bundled config (empty when it has none)."""
    from omegaconf import OmegaConf

    path = Path(str(resources.files("workbench") / "configs" / f"{method}.yaml"))
    if not path.is_file():
        return {}
    section = OmegaConf.to_container(OmegaConf.load(path)).get("method", {})  # type: ignore[union-attr]
    return dict(section or {})


def cache_sizes(run_dir: str | Path) -> Dict[str, Any]:
    """data.image_size / data.volume_size of the caches a run folder holds (what its data are)."""
    cache = Path(run_dir) / "cache"
    out: Dict[str, Any] = {}
    images = sorted(cache.glob("images_*.npy"))
    volumes = sorted(cache.glob("volumes_*.npy"))
    if len(images) == 1:
        out["data.image_size"] = int(images[0].stem.split("_")[1])
    if len(volumes) == 1:
        out["data.volume_size"] = [int(s) for s in volumes[0].stem.split("_")[1].split("x")]
    return out


def _sweep_cache(source: Path, folder: Path, image_size: Optional[int], progress: bool) -> Dict[str, Any]:
    """Give the sweep folder a `cache/` at `image_size` (links to the source's caches, plus the
    2D cache rebuilt from the source's images when the source holds another size); returns the
    data sizes every run uses."""
    from workbench.data.cache import build_image_cache
    from workbench.data.manifest import read_manifest

    sizes = cache_sizes(source)
    if not image_size or sizes.get("data.image_size", image_size) == image_size:
        _link_data(source, folder)
        return sizes
    cache = folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for src in sorted((source / "cache").glob("volumes_*")):  # 3D caches: shared as they are
        _link_file(src, cache / src.name)
    _link_data(source, folder)  # everything else (`cache` now exists, so it is kept)
    # reuses a cache already there only when it holds the same studies (a resumed sweep)
    build_image_cache(read_manifest(source / "manifest.parquet"), cache, int(image_size), progress=progress)
    return {**sizes, "data.image_size": int(image_size)}


def run_config(spec: SweepSpec, method: str, seed: int, is_3d: bool, extra: Optional[Mapping[str, Any]] = None) -> ExperimentConfig:
    """The config of one sweep run: shared settings (+ `ct` for 3D) + the method's own section."""
    from omegaconf import OmegaConf

    settings: Dict[str, Any] = {**spec.base, **spec.encoder_profiles[spec.encoders]}
    if is_3d:
        settings.update(spec.ct)
    settings.update(dict(extra or {}))
    settings.update(spec.per_method.get(method, {}))
    settings["training.random_seed"] = seed
    dotlist = _dotlist(settings)
    shared = load_config(None, [d for d in dotlist if not d.startswith("method.")])  # validates every key
    section = {**_method_section(method), "name": method}
    merged = OmegaConf.merge(OmegaConf.structured(shared), {"method": section},
                             OmegaConf.from_dotlist([d for d in dotlist if d.startswith("method.")]))
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except Exception as exc:  # omegaconf validation
        raise ConfigError(f"Sweep config for {method!r} is invalid: {exc}") from None


def _link_file(src: Path, dst: Path) -> None:
    """Link `dst` to `src` (a copy where links are impossible); an existing `dst` is kept."""
    if not src.exists() or dst.exists() or dst.is_symlink():
        return
    try:
        os.symlink(src.resolve(), dst, target_is_directory=src.is_dir())
    except OSError:
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def _link_data(source: Path, target: Path) -> None:
    """Give `target` the source run's data by links (copies where links are impossible)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in LINKED_ARTIFACTS:
        _link_file(source / name, target / name)


def _expand_methods(methods: str | Sequence[str], spec: SweepSpec) -> List[str]:
    from workbench.methods import list_methods

    chosen = list(spec.methods) if methods in ("all", None, "") else (
        [m.strip() for m in methods.split(",") if m.strip()] if isinstance(methods, str) else list(methods))
    # baselines first: trained methods start from this seed's `locked` pair (models.init_checkpoint)
    chosen = list(spec.baselines) + [m for m in chosen if m not in spec.baselines]
    unknown = [m for m in chosen if m not in list_methods()]
    if unknown:
        raise SweepError(f"Unknown methods {unknown}; registered: {list_methods()}.")
    return list(dict.fromkeys(chosen))


@dataclass
class SweepResult:
    """Where the sweep wrote, the tidy per-seed metrics and the leaderboard."""

    folder: Path
    metrics: pd.DataFrame
    leaderboard: pd.DataFrame
    markdown: str
    files: Dict[str, Path]
    skipped: Dict[str, str]


def leaderboard_table(metrics: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Tidy per-seed rows (modality, method, seed, metric, value) -> mean, std (ddof 1; 0 for
    one seed) and n_seeds per modality, method and metric."""
    rows = metrics[metrics["metric"].isin(names)]
    grouped = rows.groupby(["modality", "method", "metric"], sort=False)["value"]
    table = grouped.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                        n_seeds="count").reset_index()
    order = {m: i for i, m in enumerate(names)}
    return table.sort_values(["modality", "method", "metric"], key=lambda s: s.map(order) if s.name == "metric" else s,
                             kind="stable").reset_index(drop=True)


def leaderboard_markdown(table: pd.DataFrame, names: Sequence[str]) -> str:
    """One Markdown table per modality: method rows, metric columns as `mean ± std`."""
    parts = []
    for modality, sub in table.groupby("modality", sort=True):
        cells = sub.assign(text=[f"{m:.1f} ± {s:.1f}" for m, s in zip(sub["mean"], sub["std"])])
        wide = cells.pivot(index="method", columns="metric", values="text")
        cols = [n for n in names if n in wide.columns]
        seeds = sub.groupby("method")["n_seeds"].max()
        lines = [f"**{modality}** (mean ± std over seeds)", "",
                 "| method | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for method in wide.index:
            lines.append(f"| {method} | {int(seeds[method])} | " + " | ".join(str(wide.loc[method, c]) for c in cols) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def chance_levels(metrics: pd.DataFrame, names: Sequence[str]) -> Dict[tuple, float]:
    """(modality, metric) -> the chance level the suite recorded for it (`<metric>_chance`;
    a `mean_R@k` takes the i2t/t2i mean), so the plot can draw the floor a bar must clear."""
    chance: Dict[tuple, float] = {}
    for name in names:
        sources = [f"{d}_{name[len('mean_'):]}_chance" for d in ("i2t", "t2i")] if name.startswith("mean_") \
            else [f"{name}_chance"]
        rows = metrics[metrics["metric"].isin(sources)]
        for modality, values in rows.groupby("modality")["value"]:
            chance[(modality, name)] = float(values.mean())
    return chance


def leaderboard_figure(table: pd.DataFrame, headline: Sequence[str], chance: Optional[Mapping[tuple, float]] = None):
    """Bars of the headline metrics per method (error bars: std over seeds), one panel per
    modality; a method keeps its colour in every panel, and dashed lines mark chance."""
    import matplotlib

    if not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    modalities = sorted(table["modality"].unique())
    palette = plt.get_cmap("tab10")
    colours = {m: palette(i % 10) for i, m in enumerate(sorted(table["method"].unique()))}
    fig, axes = plt.subplots(1, max(1, len(modalities)), figsize=(5.5 * max(1, len(modalities)), 3.9), squeeze=False)
    for ax, modality in zip(axes[0], modalities):
        sub = table[(table["modality"] == modality) & table["metric"].isin(headline)]
        methods = sorted(dict.fromkeys(sub["method"]))
        metrics = [m for m in headline if m in set(sub["metric"])]
        width = 0.8 / max(1, len(methods))
        for i, method in enumerate(methods):
            rows = sub[sub["method"] == method].set_index("metric")
            x = np.arange(len(metrics)) + (i - (len(methods) - 1) / 2) * width
            ax.bar(x, [rows["mean"].get(m, np.nan) for m in metrics], width, color=colours[method],
                   yerr=[rows["std"].get(m, 0.0) for m in metrics], capsize=3, label=method)
        for j, metric in enumerate(metrics):
            level = (chance or {}).get((modality, metric))
            if level is not None:
                ax.hlines(level, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1,
                          label="chance" if j == 0 else None)
        ax.set_xticks(np.arange(len(metrics)), metrics)
        ax.set_title(f"{modality}: mean ± std over seeds")
        ax.set_ylabel("%")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def run_sweep(methods: str | Sequence[str] = "all", seeds: Optional[int] = None, run_dir: str | Path | None = "",
              config: str = "sweep", max_steps: Optional[int] = None, device: Optional[str] = None,
              out_dir: str | Path | None = None, overrides: Optional[Mapping[str, Any]] = None,
              progress: bool = True) -> SweepResult:
    """Train every chosen method plus the baselines for `seeds` seeds on one split, evaluate
    each with the same suite, and write the leaderboard (see the module docstring).

    run_dir: the run folder whose data to use ('' = the newest with a manifest; none at all =
    prepare the spec's demo data in a new one). overrides: extra dotlist settings for every
    run (e.g. {"data.n_studies": 64}) after the spec's `base`.
    """
    from workbench.data import prepare_run_data
    from workbench.eval.dense import DenseOptions
    from workbench.eval.suite import evaluate_run
    from workbench.runs import RunNotFoundError, find_run_dir, new_run_dir
    from workbench.train import train

    spec = load_sweep_spec(config)
    seeds = int(seeds if seeds is not None else spec.seeds)
    extra: Dict[str, Any] = dict(overrides or {})
    if max_steps is not None:
        extra["training.max_steps"] = int(max_steps)
    if device:
        extra["training.device"] = device
    chosen = _expand_methods(methods, spec)

    try:
        source = find_run_dir("manifest", run_dir or None)
    except RunNotFoundError:
        source = new_run_dir("data")
        prepare_run_data(run_config(spec, "clip", 0, False, extra), source, progress=progress)
    folder = Path(out_dir) if out_dir else new_run_dir("sweep")
    image_size = extra.get("data.image_size", spec.base.get("data.image_size"))
    extra = {**extra, **_sweep_cache(source, folder, image_size, progress)}

    from workbench.data.manifest import read_manifest

    manifest = read_manifest(folder)
    has_ct = bool((manifest["modality"] == "ct").any())
    skipped: Dict[str, str] = {}
    if "medtrim" in chosen and not (folder / "triplets.csv.xz").exists() and not extra.get("data.triplet_csv"):
        skipped["medtrim"] = f"{source} has no triplets.csv.xz (run notebooks/02_triplet_mining.ipynb first)"
    wanted_3d = [m for m in chosen if m in spec.methods_3d]
    if wanted_3d and not has_ct:
        for m in wanted_3d:
            skipped[m] = f"{source} holds no CT studies (demo: data.n_ct_studies > 0)"
    for method, why in skipped.items():
        print(f"[workbench] sweep: skipping {method}: {why}", flush=True)
    runs_2d = [m for m in chosen if m not in spec.methods_3d and m not in skipped]
    runs_3d = [m for m in chosen if m in spec.methods_3d and m not in skipped]
    plan: List[tuple[str, Path, bool]] = [(m, folder, False) for m in runs_2d]
    if runs_3d:
        _link_data(folder, folder / "ct")
        plan += [(m, folder / "ct", True) for m in list(spec.baselines) + runs_3d]

    from tqdm.auto import tqdm

    todo = [(m, f, is_3d, s) for s in range(seeds) for (m, f, is_3d) in plan]
    for method, target, is_3d, seed in tqdm(todo, desc="sweep runs", disable=not progress):
        if (target / "train" / f"{method}-{seed}" / "encoders.json").is_file():
            continue  # resumable: this run finished before
        cfg = run_config(spec, method, seed, is_3d, extra)
        train(cfg, target, progress=progress)

    tables = []
    targets = [folder] + ([folder / "ct"] if runs_3d else [])
    for target in targets:
        names = sorted({m for (m, f, _) in plan if f == target})
        dense = DenseOptions.from_config(run_config(spec, names[0], 0, target != folder, extra).eval)
        evaluated = evaluate_run(target, methods=names, evaluations=spec.evaluations, split=spec.split,
                                 device=extra.get("training.device", spec.base.get("training.device", "auto")),
                                 progress=progress, dense=dense)
        tables.append(evaluated)
    metrics = pd.concat(tables, ignore_index=True)
    metrics = metrics[metrics["method"].isin(chosen)]
    table = leaderboard_table(metrics, spec.metrics)
    markdown = leaderboard_markdown(table, spec.metrics)
    files = {"csv": folder / "leaderboard.csv", "md": folder / "leaderboard.md", "png": folder / "leaderboard.png"}
    with atomic_path(files["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    note = "".join(f"\n- skipped {m}: {why}" for m, why in skipped.items())
    write_text_atomic(files["md"], f"# Sweep leaderboard ({spec.split} split, {seeds} seed(s))\n\n{markdown}{note}\n")
    save_figure_atomic(leaderboard_figure(table, spec.headline, chance_levels(metrics, spec.headline)),
                       files["png"], dpi=120)
    return SweepResult(folder, metrics, table, markdown, files, skipped)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m workbench.cli sweep ...` lands here (see workbench.cli)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workbench.cli sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_arguments(parser) -> None:
    parser.add_argument("--methods", default="all", help="'all' or a comma list (frozen and locked always run)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default: the spec's)")
    parser.add_argument("--config", default="sweep", help="sweep spec: bundled name or YAML path")
    parser.add_argument("--run-dir", default="", help="run folder whose data to use (default: newest)")
    parser.add_argument("--out-dir", default=None, help="sweep folder (default: a new one; reuse to resume)")
    parser.add_argument("--max-steps", type=int, default=None, help="step budget of every run")
    parser.add_argument("--device", default=None)


def run_from_args(args) -> int:
    result = run_sweep(methods=args.methods, seeds=args.seeds, run_dir=args.run_dir, config=args.config,
                       max_steps=args.max_steps, device=args.device, out_dir=args.out_dir)
    print(result.markdown)
    print(f"[workbench] sweep leaderboard: {result.files['md']}")
    return 0
