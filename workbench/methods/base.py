"""The one protocol every training objective implements, so the trainer never names a method.

A method owns (1) the networks it trains (`network`: the shared DualEncoder plus any heads of
its own), (2) a dict of NAMED loss terms per batch, (3) which data fields and transforms it
needs, (4) optional hooks, stages and extra state. The trainer sums the terms with
`loss_weights` (config `method.loss_weights`; weight 0 switches a term off and the method then
skips computing it), logs every term by name, and steps through `stages`.

Adding a method = one file under `workbench/methods/` with `@METHODS.register("name")`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from workbench.config import ExperimentConfig
from workbench.methods.params import MethodParams, parse_params


class MethodConfigError(ValueError):
    """A method option or loss weight that cannot be applied; the message names the fix."""


@dataclass(frozen=True)
class Stage:
    """One phase of training: which loss terms are active, until which step or epoch.

    `terms=None` means every term of the method. A stage ends when the global optimiser step
    reaches `until_step` or the epoch index reaches `until_epoch` (whichever is set); the last
    stage runs to the end. Example (CM-CGNS): [Stage("align", ("global", "local"),
    until_epoch=5), Stage("align+recon")].
    """

    name: str
    terms: Optional[Tuple[str, ...]] = None
    until_step: Optional[int] = None
    until_epoch: Optional[int] = None

    def covers(self, step: int, epoch: int) -> bool:
        if self.until_step is not None and step >= self.until_step:
            return False
        if self.until_epoch is not None and epoch >= self.until_epoch:
            return False
        return True


def _identity(x: Tensor) -> Tensor:
    return x


def move_to(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Recursively move the tensors of a (nested) batch to `device`; other values pass through."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return type(batch)(move_to(v, device, non_blocking) for v in batch)
    return batch


class Method:
    """Base class of every objective. Subclasses set the class attributes and `losses`.

    Class attributes:
      name             registry name (also the run folder `train/<name>-<seed>/`).
      loss_terms       names of every term `losses` can return.
      default_loss_weights  weights of those terms before `method.loss_weights` overrides.
      required_fields  batch fields the method reads (image, text, image2, boxes, regions,
                       labels, triplet); the default datasets load exactly these.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[Type[MethodParams]] = MethodParams  # the typed `method.params` (workbench.methods.params)
    loss_terms: ClassVar[Tuple[str, ...]] = ()
    default_loss_weights: ClassVar[Dict[str, float]] = {}
    required_fields: ClassVar[Tuple[str, ...]] = ("image", "text")

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, heads: Optional[Mapping[str, nn.Module]] = None) -> None:
        self.cfg = cfg
        self.p = self.parse_params(cfg)
        self.model = model
        self.heads = nn.ModuleDict(dict(heads or {}))
        # One module holding everything trained: what DDP wraps, what checkpoints store.
        self.network = nn.ModuleDict({"model": model, "heads": self.heads})
        self.loss_weights: Dict[str, float] = self.resolve_loss_weights(cfg.method.loss_weights)
        self.active_terms: set[str] = {t for t, w in self.loss_weights.items() if w != 0}
        # Replaced by the trainer under DDP with a gradient-preserving all-gather, so
        # contrastive losses see every rank's negatives; identity on one process.
        self.gather: Callable[[Tensor], Tensor] = _identity
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, cfg: ExperimentConfig) -> "Method":
        """Build the method with the shared encoder pair of `cfg.models`."""
        from workbench.models import build_dual_encoder

        return cls(cfg, build_dual_encoder(cfg.models))

    @classmethod
    def parse_params(cls, cfg: ExperimentConfig) -> Any:
        """`cfg.method.params` checked against `cls.Params` (a misspelt key names the closest one)."""
        return parse_params(cls.Params, cfg.method.params, cls.name)

    def resolve_loss_weights(self, overrides: Mapping[str, float]) -> Dict[str, float]:
        weights = {t: float(self.default_loss_weights.get(t, 1.0)) for t in self.loss_terms}
        for term, value in dict(overrides or {}).items():
            if term not in weights:
                raise MethodConfigError(
                    f"Unknown loss term {term!r} for method {self.name!r} in method.loss_weights; "
                    f"its terms are {list(self.loss_terms)}."
                )
            weights[term] = float(value)
        return weights

    # ------------------------------------------------------------------ the objective
    def losses(self, batch: Mapping[str, Any]) -> Dict[str, Tensor]:
        """Named scalar loss terms of one batch (only the terms in `active_terms`)."""
        raise NotImplementedError

    def term_on(self, term: str) -> bool:
        """Whether `losses` should compute `term` now (weight non-zero and its stage active)."""
        return term in self.active_terms

    def weighted_total(self, terms: Mapping[str, Tensor]) -> Tensor:
        """Sum of active terms times their weights (what the trainer back-propagates)."""
        parts = [self.loss_weights[name] * value for name, value in terms.items() if name in self.active_terms]
        if not parts:
            raise MethodConfigError(
                f"Method {self.name!r} produced no active loss term (weights {self.loss_weights}); "
                "set at least one method.loss_weights entry above 0."
            )
        return torch.stack([p.float() for p in parts]).sum()

    @property
    def stages(self) -> List[Stage]:
        """Training phases; the default is one stage with every term."""
        return [Stage("train")]

    def stage_at(self, step: int, epoch: int) -> Stage:
        for stage in self.stages:
            if stage.covers(step, epoch):
                return stage
        return self.stages[-1]

    def set_stage(self, stage: Stage) -> None:
        """Activate the stage's terms (minus those switched off by a zero weight)."""
        allowed = set(stage.terms) if stage.terms is not None else set(self.loss_terms)
        unknown = allowed - set(self.loss_terms)
        if unknown:
            raise MethodConfigError(f"Stage {stage.name!r} names unknown terms {sorted(unknown)}; known {list(self.loss_terms)}.")
        self.active_terms = {t for t in allowed if self.loss_weights.get(t, 0.0) != 0}

    # ------------------------------------------------------------------ hooks and state
    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch (e.g. re-cluster, refresh a memory bank)."""

    def on_step_end(self, step: int, losses: Mapping[str, float]) -> None:
        """Called after each optimiser step with the step's loss values."""

    def state_dict(self) -> Dict[str, Any]:
        """Extra non-parameter state saved in checkpoints (parameters live in `network`)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    # ------------------------------------------------------------------ parameters and device
    def encoder_modules(self) -> List[nn.Module]:
        """Modules that get the encoder learning rate (learning_rate * encoder_lr_scale)."""
        return [m for m in (getattr(self.model, "image_encoder", None), getattr(self.model, "text_encoder", None))
                if isinstance(m, nn.Module)]

    def trainable_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    def parameter_groups(self, learning_rate: float, encoder_lr_scale: float = 1.0,
                         weight_decay: float = 0.0) -> List[Dict[str, Any]]:
        """AdamW groups: encoders at lr * encoder_lr_scale, heads at lr; biases, norms and the
        temperature get no weight decay (decay would pull the temperature towards 1)."""
        encoder_ids = {id(p) for m in self.encoder_modules() for p in m.parameters()}
        groups: Dict[Tuple[str, bool], List[nn.Parameter]] = {}
        seen: set[int] = set()
        for name, p in self.network.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            part = "encoder" if id(p) in encoder_ids else "head"
            decay = p.ndim >= 2 and "logit_scale" not in name
            groups.setdefault((part, decay), []).append(p)
        out = []
        for (part, decay), params in sorted(groups.items()):
            lr = learning_rate * (encoder_lr_scale if part == "encoder" else 1.0)
            out.append({"params": params, "lr": lr, "weight_decay": weight_decay if decay else 0.0,
                        "name": f"{part}{'' if decay else '_no_decay'}"})
        if not out:
            raise MethodConfigError(
                f"Method {self.name!r} has no trainable parameter (everything frozen); unfreeze an encoder "
                "(models.freeze_image / models.freeze_text) or use a method with trainable heads."
            )
        return out

    def to(self, device: torch.device | str) -> "Method":
        self.device = torch.device(device)
        self.network.to(self.device)
        return self

    def train(self, mode: bool = True) -> "Method":
        self.network.train(mode)
        return self

    def eval(self) -> "Method":
        return self.train(False)

    # ------------------------------------------------------------------ data
    def transforms(self, split: str) -> Optional[Callable[[Any], Any]]:
        """Per-sample transform for `split` (None: the dataset's deterministic default)."""
        return None

    def text_mode(self, split: str) -> str:
        return "full"

    def train_dataset(self, run_dir: str | Path) -> torch.utils.data.Dataset:
        """The training set: the run folder's train split with `required_fields`."""
        return self.study_dataset(run_dir, "train", self.required_fields, self.transforms("train"), self.text_mode("train"))

    def eval_dataset(self, run_dir: str | Path, split: str = "val") -> torch.utils.data.Dataset:
        """Image-report pairs for validation retrieval (deterministic transforms)."""
        return self.study_dataset(run_dir, split, ("image", "text"), self.transforms(split), "full")

    def study_dataset(self, run_dir: str | Path, split: str, fields: Sequence[str],
                      transform: Optional[Callable], text_mode: str) -> torch.utils.data.Dataset:
        from workbench.data import StudyDataset
        from workbench.data.manifest import read_manifest

        run_dir = Path(run_dir)
        manifest = read_manifest(run_dir / "manifest.parquet")
        fields = tuple(f for f in fields if f not in ("triplet",))
        return StudyDataset(manifest, run_dir / "cache", split=split, modality=self.cfg.data.modality,
                            fields=fields, transform=transform, text_mode=text_mode)

    def epoch_size(self, dataset: torch.utils.data.Dataset) -> int:
        """Samples per epoch (all processes together): `method.params.steps_per_epoch` x
        batch_size when set (validation then comes every that many steps on one process),
        else one pass over the dataset. MedTrim's triplet pool overrides the default."""
        steps = self.p.steps_per_epoch
        if steps:
            return int(steps) * self.cfg.training.batch_size * max(1, self.cfg.training.grad_accum)
        return len(dataset)  # type: ignore[arg-type]

    def tokenize(self, texts: Sequence[str]) -> Dict[str, Tensor]:
        """Tokenise on the CPU (collate may run in loader workers) with the model's own
        tokenizer, truncated to min(data.max_text_tokens, the model's true context length)."""
        text_encoder = self.model.text_encoder
        context = int(getattr(self.model, "max_text_tokens", getattr(text_encoder, "max_length", 512)))
        limit = min(self.cfg.data.max_text_tokens, context)
        enc = text_encoder.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def collate(self, items: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        """Stack tensors, tokenise `text` into input_ids/attention_mask, keep the rest as lists."""
        return collate_items(items, self.tokenize)

    # ------------------------------------------------------------------ methods that train themselves
    trains_itself: ClassVar[bool] = False

    def train_standalone(self, run_dir: str | Path, progress: bool = True) -> Path:
        """For `trains_itself` methods (the frozen/locked baselines): do the whole run, write
        `train/<name>-<seed>/` with its own run.json, return that folder."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation and export
    @torch.no_grad()
    def embed(self, batch: Mapping[str, Any]) -> Tuple[Tensor, Tensor]:
        """Normalised image and text embeddings of a pair batch (for validation retrieval)."""
        image = self.model.encode_image(batch["image"], normalize=True)
        text = self.model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True)
        return image, text

    def export(self, folder: str | Path) -> Path:
        """Write the encoders in the shared checkpoint format (`workbench.models.save_encoders`)."""
        from workbench.models import save_encoders
        from workbench.models.clip_pairs import ClipDualEncoder, save_clip_pair

        if isinstance(self.model, ClipDualEncoder):
            return save_clip_pair(self.model, folder)
        save_encoders(self.model, folder, self.cfg.models, extra_state=self.export_state())
        return Path(folder)

    def export_state(self) -> Optional[Dict[str, Any]]:
        """Extra state stored beside the exported encoders (e.g. cluster centroids)."""
        return None


def collate_items(items: Sequence[Mapping[str, Any]], tokenize: Callable[[Sequence[str]], Dict[str, Tensor]]) -> Dict[str, Any]:
    """Default collate: tensors stacked, `text` tokenised (kept as `text` too), others listed."""
    if not items:
        raise ValueError("Cannot collate an empty batch.")
    out: Dict[str, Any] = {}
    for key in items[0].keys():
        values = [item[key] for item in items]
        if isinstance(values[0], Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], Mapping):
            out[key] = collate_items(values, tokenize)
        else:
            out[key] = values
    if "text" in out:
        out.update(tokenize(out["text"]))
    return out

