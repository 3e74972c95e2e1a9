"""The two honest baselines every method must beat.

`frozen`: the offline encoders with untrained (seeded random) projections, the floor, near
chance on retrieval. `locked`: the same frozen encoders with only the projections (and the
temperature) trained by the symmetric InfoNCE loss on train-split features computed once:
LiT's locked-image tuning (Zhai et al. 2022, §3) with the text tower locked too, the CLIP loss
of Radford et al. 2021 (Fig. 3 pseudocode). Model selection on the validation split (mean
R@10). Both save in the shared checkpoint format under `run_dir/train/<frozen|locked>-<seed>/`
with a run.json, so they sit on the leaderboard like any trained method.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from workbench.config import ExperimentConfig, to_dict
from workbench.eval.embed import project_features, split_features
from workbench.eval.retrieval import retrieval_metrics
from workbench.models import build_dual_encoder, resolve_device, save_encoders
from workbench.runs import RunRecord

BASELINES = ("frozen", "locked")


def baseline_folder(run_dir: str | Path, method: str, seed: int, tag: str = "") -> Path:
    """`train/<method><tag>-<seed>`: `tag` keeps one run folder's CT baselines (`-ct`) apart
    from its radiograph ones."""
    return Path(run_dir) / "train" / f"{method}{tag}-{seed}"


def modality_tag(modality: str) -> str:
    """Folder tag of a modality's baselines: radiographs keep the plain name, CT gets `-ct`."""
    return "" if modality == "cxr" else f"-{modality}"


def _baseline_config(cfg: ExperimentConfig, method: str, seed: int) -> ExperimentConfig:
    cfg = copy.deepcopy(cfg)
    cfg.method.name = method
    cfg.models.init_checkpoint = ""
    cfg.training.random_seed = seed
    cfg.models.freeze_image = True
    cfg.models.freeze_text = True
    return cfg


def _build(cfg: ExperimentConfig, seed: int):
    torch.manual_seed(seed)
    device = resolve_device(cfg.training.device)
    return build_dual_encoder(cfg.models).to(device).eval(), device


def train_frozen(run_dir: str | Path, cfg: ExperimentConfig, seed: int = 0, tag: str = "") -> Path:
    """Save the offline encoders with seeded random projections as `train/frozen<tag>-<seed>/`."""
    cfg = _baseline_config(cfg, "frozen", seed)
    folder = baseline_folder(run_dir, "frozen", seed, tag)
    with RunRecord(folder, to_dict(cfg), seed=seed, extra={"method": "frozen"}) as record:
        model, _ = _build(cfg, seed)
        save_encoders(model, folder, cfg.models, extra_state={"method": "frozen", "seed": seed})
        record.update(checkpoint=str(folder))
    return folder


def info_nce(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of unit-norm pairs (CLIP, Radford et al. 2021, Fig. 3)."""
    logits = logit_scale.exp() * image_emb @ text_emb.T
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train_locked(run_dir: str | Path, cfg: ExperimentConfig, seed: int = 0, epochs: Optional[int] = None,
                 lr: Optional[float] = None, batch_size: Optional[int] = None, progress: bool = True,
                 tag: str = "") -> Path:
    """Train only the projections on cached train-split features; keep the best val epoch.

    `method.params` may set `epochs` (default 40), `lr` (1e-3) and `batch_size` (256).
    """
    from tqdm.auto import tqdm

    from workbench.data.manifest import read_manifest

    run_dir = Path(run_dir)
    cfg = _baseline_config(cfg, "locked", seed)
    params = dict(cfg.method.params)
    epochs = int(epochs or params.get("epochs", 40))
    lr = float(lr or params.get("lr", 1e-3))
    batch_size = int(batch_size or params.get("batch_size", 256))
    folder = baseline_folder(run_dir, "locked", seed, tag)
    with RunRecord(folder, to_dict(cfg), seed=seed, extra={"method": "locked"}) as record:
        model, device = _build(cfg, seed)
        manifest = read_manifest(run_dir)
        store = run_dir / "eval" / "features"
        common = dict(store_dir=store, modality=cfg.data.modality, batch_size=cfg.training.batch_size,
                      progress=progress)
        train = split_features(model, manifest, run_dir / "cache", "train", **common)
        val = split_features(model, manifest, run_dir / "cache", "val", **common)
        heads = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(heads, lr=lr, weight_decay=cfg.training.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        x_img = torch.as_tensor(train.image_features, device=device)
        x_txt = torch.as_tensor(train.text_features, device=device)
        n = len(train)
        history: List[Dict[str, float]] = []
        best_score, best_state, best_epoch = -math.inf, None, 0
        for epoch in tqdm(range(1, epochs + 1), desc="locked: projections", disable=not progress, leave=False):
            model.train()
            order = torch.randperm(n, generator=generator).to(device)
            losses = []
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                if len(idx) < 2:
                    continue
                img = F.normalize(model.image_proj(x_img[idx]), dim=-1)
                txt = F.normalize(model.text_proj(x_txt[idx]), dim=-1)
                loss = info_nce(img, txt, model.logit_scale)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))  # CLIP's cap on the temperature
                losses.append(float(loss.detach()))
            model.eval()
            v_img, v_txt = project_features(model, val.image_features, val.text_features)
            metrics = retrieval_metrics(v_img, v_txt, text_groups=val.texts)
            score = 0.5 * (metrics["i2t_R@10"] + metrics["t2i_R@10"])
            history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                            "val_mean_R@10": score})
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if best_state is not None:
            model.load_state_dict(best_state)
        save_encoders(model, folder, cfg.models, extra_state={
            "method": "locked", "seed": seed, "best_epoch": best_epoch, "val_mean_R@10": best_score,
            "history": history})
        record.update(checkpoint=str(folder), best_epoch=best_epoch, val_mean_R10=best_score, history=history,
                      n_train=n, n_val=len(val))
    return folder


def ensure_baselines(run_dir: str | Path, cfg: ExperimentConfig, seed: int = 0,
                     methods: Sequence[str] = BASELINES, progress: bool = True, tag: str = "") -> List[Path]:
    """Train the baselines that the run folder does not hold yet; return their folders."""
    folders = []
    for method in methods:
        if method not in BASELINES:
            raise ValueError(f"Unknown baseline {method!r}; baselines are {BASELINES}.")
        folder = baseline_folder(run_dir, method, seed, tag)
        if not (folder / "encoders.json").is_file():
            folder = train_frozen(run_dir, cfg, seed, tag=tag) if method == "frozen" else \
                train_locked(run_dir, cfg, seed, progress=progress, tag=tag)
        folders.append(folder)
    return folders


def ensure_modality_baselines(run_dir: str | Path, configs: Mapping[str, ExperimentConfig], seed: int = 0,
                              methods: Sequence[str] = BASELINES, progress: bool = True) -> List[Path]:
    """The baselines of every modality in `configs` (modality -> the config whose encoders they
    use: a CT run needs a 3D encoder). Radiograph baselines are `train/<name>-<seed>`, CT ones
    `train/<name>-ct-<seed>`, so a mixed run folder holds both side by side."""
    folders: List[Path] = []
    for modality, cfg in configs.items():
        cfg = copy.deepcopy(cfg)
        cfg.data.modality = modality
        folders += ensure_baselines(run_dir, cfg, seed, methods, progress=progress, tag=modality_tag(modality))
    return folders
