"""The notebook pipeline planned for one dataset: the steps that fit its modalities.

`python -m workbench.cli pipeline -p dataset ctrate -p data_root /data/ct-rate` must not run
radiograph methods on CT volumes, nor label CT reports with CheXpert's findings. The plan
takes the dataset's modalities (`workbench.data.defaults`), picks the methods that fit them
(radiographs: clip, medtrim; CT: medfinder), the config of each step from a *profile*, and is
printed before anything runs. After notebook 00 the plan is redrawn from the manifest's real
modalities (a DICOM folder or a 2D-only demo decides only then).

Profiles: `research` (the default for real data: the bundled research configs, e.g. MedFinder's
ResNet-50 on 224 x 224 x 96 volumes; GPU-sized), `demo` (the default for the demo data: CPU
minutes) and `tiny` (tests and CI: tiny random encoders, a few steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from workbench.data.defaults import DATASET_MODALITIES, label_set_for, mining_modality_for

METHODS_BY_MODALITY: Dict[str, Tuple[str, ...]] = {"cxr": ("clip", "medtrim"), "ct": ("medfinder",)}
# profile -> which bundled config each step uses. `prep` is notebook 00's, by the run's
# modalities ("cxr", "ct" or "both"): a CT run caches volumes at its 3D method's volume size.
PROFILES: Dict[str, Dict[str, Any]] = {
    "demo": {"prep": {"cxr": "demo", "ct": "medfinder_demo", "both": "demo"},
             "train": {"clip": "clip", "medtrim": "medtrim", "medfinder": "medfinder_demo"},
             "eval": {"cxr": "demo", "ct": "medfinder_demo"}},
    "research": {"prep": {"cxr": "demo", "ct": "medfinder", "both": "demo"},
                 "train": {"clip": "clip", "medtrim": "medtrim", "medfinder": "medfinder"},
                 "eval": {"cxr": "demo", "ct": "medfinder"}},
    "tiny": {"prep": {"cxr": "tiny", "ct": "tiny_ct", "both": "tiny"},
             "train": {"clip": "tiny", "medtrim": "tiny", "medfinder": "tiny_ct"},
             "eval": {"cxr": "tiny", "ct": "tiny_ct"}},
}
# Pipeline-level parameters: they shape the plan and are not passed to the notebooks.
PLAN_PARAMETERS = ("profile", "train_methods")


@dataclass
class Step:
    """One notebook run: its name and the parameters the plan gives it."""

    notebook: str
    params: Dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class PipelinePlan:
    """What the pipeline will run, and why (printed before it starts)."""

    dataset: str
    data_root: str
    profile: str
    modalities: Tuple[str, ...]
    label_set: str
    methods: List[str]
    steps: List[Step]

    def describe(self) -> str:
        lines = [f"[workbench] plan: dataset {self.dataset} at {self.data_root or '(generated)'}, profile "
                 f"{self.profile}, modalities {'+'.join(self.modalities)}, label set {self.label_set}, "
                 f"methods {', '.join(self.methods) or '(none)'}"]
        for step in self.steps:
            shown = " ".join(f"{k}={v}" for k, v in step.params.items())
            lines.append(f"  {step.notebook:<18} {shown}{'  # ' + step.note if step.note else ''}")
        return "\n".join(lines)

    def as_record(self) -> Dict[str, Any]:
        """The plan as `run.json` keeps it: the printed text and each step's parameters."""
        return {"plan": self.describe(), "steps": [{"notebook": s.notebook, "parameters": s.params} for s in self.steps]}


def _modality_key(modalities: Sequence[str]) -> str:
    return "both" if len(modalities) > 1 else modalities[0]


def plan_pipeline(params: Optional[Mapping[str, Any]] = None,
                  modalities: Optional[Sequence[str]] = None) -> PipelinePlan:
    """The steps for `params` (papermill-style: dataset, data_root, profile, train_methods, ...).

    `modalities`: what the manifest holds (after notebook 00); default: what the dataset's
    reader can produce. `train_methods` (comma list) restricts the trained methods; a method
    that fits none of the modalities is an error naming the ones that fit.
    """
    params = dict(params or {})
    dataset = str(params.get("dataset") or "demo")
    if dataset not in DATASET_MODALITIES:
        raise ValueError(f"Unknown dataset {dataset!r} for the pipeline; known: {sorted(DATASET_MODALITIES)}.")
    profile = str(params.get("profile") or ("demo" if dataset == "demo" else "research"))
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; use one of {sorted(PROFILES)}.")
    chosen = PROFILES[profile]
    mods = tuple(modalities) if modalities else DATASET_MODALITIES[dataset]
    if dataset == "demo" and not modalities and params.get("n_ct_studies") == 0:
        mods = ("cxr",)
    fitting = [m for mod in mods for m in METHODS_BY_MODALITY[mod]]
    wanted = [m.strip() for m in str(params.get("train_methods") or "").split(",") if m.strip()]
    unfit = [m for m in wanted if m not in fitting]
    if unfit:
        raise ValueError(f"train_methods {unfit} do not fit a {'+'.join(mods)} dataset; methods that fit: {fitting}.")
    methods = wanted or fitting
    label_set = label_set_for([dataset], mods)
    prep = {"dataset": dataset, "config": chosen["prep"][_modality_key(mods)]}
    if params.get("data_root"):
        prep["data_root"] = params["data_root"]
    steps = [Step("00_data_prep", prep),
             Step("01_ober", {}, note=f"label_set auto -> {label_set}"),
             Step("02_triplet_mining", {}, note=f"modality auto -> {mining_modality_for(mods)}")]
    steps += [Step("03_pretrain", {"method": m, "config": chosen["train"][m]}) for m in methods]
    evaluate = {"config": chosen["eval"]["cxr"]}
    if "ct" in mods:
        evaluate["ct_config"] = chosen["eval"]["ct"]
    steps.append(Step("04_evaluate", evaluate, note="frozen/locked baselines for each modality"))
    inspect = next((m for m in methods if m in METHODS_BY_MODALITY["cxr"]), methods[0] if methods else "")
    if inspect:
        steps.append(Step("05_inspect", {"method": inspect, "split": "val,test"}))  # held-out studies only
    return PipelinePlan(dataset=dataset, data_root=str(params.get("data_root") or ""), profile=profile,
                        modalities=mods, label_set=label_set, methods=methods, steps=steps)


def notebook_parameters(params: Mapping[str, Any], step: Step) -> Dict[str, Any]:
    """What one notebook receives: the user's parameters (minus the plan's own) under the step's."""
    shared = {k: v for k, v in params.items() if k not in PLAN_PARAMETERS}
    return {**shared, **step.params}
