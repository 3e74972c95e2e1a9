"""What each phantom study shows: findings with assertion, severity and location, sampled per study.

Every study draws from its own generator seeded by (seed, stream, index), so a study's content
never depends on how many studies are generated or on how the work is split across processes.
The co-occurrence follows common clinical pictures (heart failure: cardiomegaly with edema and
effusions; pneumonia: consolidation with a same-side effusion; ICU: devices with basal
atelectasis; COPD: emphysema, sometimes a nodule) rather than independent coin flips.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

SEVERITIES: Tuple[str, ...] = ("mild", "moderate", "severe")
LOCATION_WORDS: Tuple[str, ...] = ("right", "left", "bilateral", "upper", "middle", "lower", "apical", "basilar")
DEVICES: Tuple[str, ...] = ("ett", "cvc", "pacemaker", "ngt")

# Random-stream identifiers: one independent stream per purpose.
STREAM_CXR, STREAM_CT, STREAM_SUBJECTS, STREAM_REPORT, STREAM_CT_REPORT = 1, 2, 3, 4, 5


def study_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of one study: independent of every other study and of the worker count."""
    return np.random.default_rng([int(seed), int(stream), int(index)])


@dataclass(frozen=True)
class FindingSpec:
    """One drawn finding. `seed` drives its jitter and texture, so a spec renders identically."""

    name: str
    assertion: str = "present"  # present | uncertain (uncertain ones are drawn faintly)
    severity: Optional[str] = None  # mild | moderate | severe | None
    side: Optional[str] = None  # right | left | bilateral | None
    zone: Optional[str] = None  # upper | middle | lower | apical | basilar | None
    seed: int = 0
    devices: Tuple[str, ...] = ()  # Support_Devices only
    size_mm: Optional[float] = None  # Nodule / Mass diameter

    def location(self) -> List[str]:
        """Ground-truth location words (a subset of LOCATION_WORDS)."""
        return [w for w in (self.side, self.zone) if w]

    def sides(self) -> List[str]:
        """The hemithoraces this finding is drawn in."""
        if self.side == "bilateral":
            return ["right", "left"]
        return [self.side] if self.side else []


@dataclass(frozen=True)
class CxrAnatomy:
    """Per-study anatomy, pose and exposure of a frontal radiograph (normalised image units)."""

    rot_deg: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    zoom: float = 1.0
    thorax_hw: float = 0.38  # half-width of the rib cage
    body_hw: float = 0.45
    lung_top: float = 0.12
    dome_right: float = 0.70  # y of the right hemidiaphragm's dome
    dome_left: float = 0.72
    dome_curv: float = 2.8
    heart_ctr: float = 0.44  # cardiothoracic ratio of a normal heart
    heart_cy: float = 0.61
    heart_hh: float = 0.115
    med_hw: float = 0.065
    gain: float = 1.0
    gamma: float = 1.0
    offset: float = 0.0
    noise_sigma: float = 0.02
    rib_period: float = 0.082
    rib_phase: float = 0.3
    clavicle_y: float = 0.14
    breasts: bool = False
    gastric_bubble: bool = True
    texture_seed: int = 0


@dataclass(frozen=True)
class CxrStudySpec:
    """Everything that determines one 2D study's images."""

    anatomy: CxrAnatomy
    findings: Dict[str, FindingSpec]
    view: str  # PA | AP
    has_lateral: bool


@dataclass(frozen=True)
class CtAnatomy:
    """Per-study body habitus and scanner geometry of a chest CT phantom (millimetres)."""

    spacing: Tuple[float, float, float] = (5.5, 5.5, 4.8)
    body_a: float = 165.0  # body half-width (x)
    body_b: float = 115.0  # body half-depth (y)
    fat_mm: float = 12.0
    lung_a: float = 62.0
    lung_b: float = 78.0
    lung_cx: float = 78.0
    heart_r: float = 52.0
    dome_z: float = -95.0  # z of the diaphragm domes relative to the volume centre
    apex_z: float = 125.0
    noise_hu: float = 14.0
    texture_seed: int = 0


@dataclass(frozen=True)
class CtStudySpec:
    anatomy: CtAnatomy
    findings: Dict[str, FindingSpec]


def _severity(rng: np.random.Generator) -> str:
    return str(rng.choice(SEVERITIES, p=[0.45, 0.35, 0.20]))


def _side(rng: np.random.Generator, p_bilateral: float = 0.0) -> str:
    if rng.random() < p_bilateral:
        return "bilateral"
    return "right" if rng.random() < 0.55 else "left"


def _zone(rng: np.random.Generator, p=(0.3, 0.25, 0.45)) -> str:
    return str(rng.choice(("upper", "middle", "lower"), p=list(p)))


def _make(name: str, rng: np.random.Generator, side: Optional[str] = None, **kw) -> FindingSpec:
    """A finding with the per-name defaults of severity, side, zone and size."""
    seed = int(rng.integers(2**31))
    sev: Optional[str] = _severity(rng)
    zone: Optional[str] = None
    size_mm = None
    devices: Tuple[str, ...] = ()
    if name == "Cardiomegaly":
        side = None
    elif name == "Effusion":
        side = side or _side(rng, 0.3)
    elif name == "Pneumothorax":
        side, zone = side or _side(rng), "apical"
        if side == "bilateral":
            side = "right"
    elif name in ("Consolidation", "Lung_Opacity"):
        side = side or _side(rng, 0.15 if name == "Lung_Opacity" else 0.05)
        zone = _zone(rng, (0.2, 0.3, 0.5))
    elif name in ("Nodule", "Mass"):
        side = side or _side(rng)
        if side == "bilateral":
            side = "right"
        zone = _zone(rng, (0.45, 0.3, 0.25))
        sev = None
        size_mm = float(rng.uniform(6, 25)) if name == "Nodule" else float(rng.uniform(35, 70))
    elif name == "Atelectasis":
        side, zone = side or _side(rng, 0.25), "basilar"
    elif name == "Edema":
        side = "bilateral"
    elif name == "Emphysema":
        side = "bilateral"
    elif name == "Support_Devices":
        side, sev = None, None
        devices = kw.pop("devices", None) or ("ett",)
    spec = FindingSpec(name=name, severity=sev, side=side, zone=zone, seed=seed, devices=tuple(devices),
                       size_mm=size_mm)
    return replace(spec, **kw) if kw else spec


def _devices(rng: np.random.Generator, picture: str) -> Tuple[str, ...]:
    if picture == "icu":
        out = ["ett", "cvc"] if rng.random() < 0.7 else ["cvc"]
        if rng.random() < 0.5:
            out.append("ngt")
        return tuple(out)
    if picture == "cardiac":
        return ("pacemaker",)
    return (str(rng.choice(["cvc", "pacemaker", "ngt"])),)


PICTURES = ("chf", "pneumonia", "icu", "neoplasm", "copd", "pneumothorax", "atelectasis", "cardiac")
PICTURE_P = (0.16, 0.20, 0.12, 0.13, 0.10, 0.08, 0.10, 0.11)


def sample_cxr_findings(rng: np.random.Generator, p_normal: float = 0.35) -> Dict[str, FindingSpec]:
    """Findings of one radiograph: empty for a normal study, else a clinical picture plus extras."""
    if rng.random() < p_normal:
        return {}
    picture = str(rng.choice(PICTURES, p=list(PICTURE_P)))
    f: Dict[str, FindingSpec] = {}

    def add(name: str, p: float = 1.0, **kw) -> None:
        if name not in f and rng.random() < p:
            f[name] = _make(name, rng, **kw)

    if picture == "chf":
        add("Cardiomegaly", 0.85)
        add("Edema", 0.8)
        add("Effusion", 0.6, side="bilateral" if rng.random() < 0.5 else "right")
        add("Support_Devices", 0.2, devices=_devices(rng, "chf"))
    elif picture == "pneumonia":
        add("Consolidation" if rng.random() < 0.65 else "Lung_Opacity")
        main = next(iter(f.values()))
        add("Effusion", 0.25, side=main.side)
    elif picture == "icu":
        add("Support_Devices", devices=_devices(rng, "icu"))
        add("Atelectasis", 0.5)
        add("Lung_Opacity", 0.3)
        add("Effusion", 0.3)
        add("Edema", 0.15)
        add("Pneumothorax", 0.1)
    elif picture == "neoplasm":
        add("Nodule" if rng.random() < 0.6 else "Mass")
        add("Effusion", 0.15)
        add("Emphysema", 0.2)
    elif picture == "copd":
        add("Emphysema")
        add("Nodule", 0.15)
        add("Pneumothorax", 0.05)
    elif picture == "pneumothorax":
        add("Pneumothorax")
        add("Support_Devices", 0.25, devices=("cvc",))
    elif picture == "atelectasis":
        add("Atelectasis")
        side = f["Atelectasis"].side
        add("Effusion", 0.4, side=side)
    elif picture == "cardiac":
        add("Cardiomegaly")
        add("Support_Devices", 0.4, devices=_devices(rng, "cardiac"))
        add("Effusion", 0.2)
    if rng.random() < 0.12:
        from workbench.data.labels import DEMO_LABELS

        add(str(rng.choice(DEMO_LABELS)))
    if not f:
        add("Lung_Opacity")
    # Some findings are reported with hedging; those are drawn faintly and at mild severity.
    for name, spec in list(f.items()):
        if name != "Support_Devices" and rng.random() < 0.14:
            f[name] = replace(spec, assertion="uncertain", severity="mild" if spec.severity else None)
    return dict(sorted(f.items()))


def sample_cxr_anatomy(rng: np.random.Generator) -> CxrAnatomy:
    """Pose, habitus and exposure of one study."""
    u = rng.uniform
    dome_right = u(0.67, 0.73)
    return CxrAnatomy(
        rot_deg=float(np.clip(rng.normal(0, 2.2), -6, 6)),
        shift_x=float(np.clip(rng.normal(0, 0.015), -0.04, 0.04)),
        shift_y=float(np.clip(rng.normal(0, 0.015), -0.04, 0.04)),
        zoom=u(0.94, 1.05),
        thorax_hw=u(0.355, 0.405),
        body_hw=u(0.43, 0.49),
        lung_top=u(0.10, 0.145),
        dome_right=dome_right,
        dome_left=dome_right + u(0.005, 0.04),
        dome_curv=u(2.3, 3.3),
        heart_ctr=u(0.40, 0.47),
        heart_cy=u(0.585, 0.635),
        heart_hh=u(0.105, 0.13),
        med_hw=u(0.055, 0.072),
        gain=u(0.85, 1.15),
        gamma=u(0.8, 1.25),
        offset=u(-0.05, 0.05),
        noise_sigma=u(0.012, 0.032),
        rib_period=u(0.076, 0.09),
        rib_phase=u(0.0, 1.0),
        clavicle_y=u(0.12, 0.165),
        breasts=bool(rng.random() < 0.5),
        gastric_bubble=bool(rng.random() < 0.6),
        texture_seed=int(rng.integers(2**31)),
    )


def sample_cxr_study(seed: int, index: int) -> CxrStudySpec:
    """The full specification of 2D study number `index` of a demo generated with `seed`."""
    rng = study_rng(seed, STREAM_CXR, index)
    anatomy = sample_cxr_anatomy(rng)
    findings = sample_cxr_findings(rng)
    devices = findings["Support_Devices"].devices if "Support_Devices" in findings else ()
    p_ap = 0.85 if "ett" in devices else 0.2
    view = "AP" if rng.random() < p_ap else "PA"
    has_lateral = bool(rng.random() < (0.37 if view == "PA" else 0.12))
    return CxrStudySpec(anatomy=anatomy, findings=findings, view=view, has_lateral=has_lateral)


def sample_ct_findings(rng: np.random.Generator, p_normal: float = 0.3) -> Dict[str, FindingSpec]:
    """Findings of one CT volume (a subset of DEMO_CT_LABELS)."""
    if rng.random() < p_normal:
        return {}
    f: Dict[str, FindingSpec] = {}
    while not f:
        if rng.random() < 0.45:
            side = _side(rng)
            f["Nodule"] = FindingSpec("Nodule", side=side, zone=_zone(rng, (0.45, 0.2, 0.35)),
                                      seed=int(rng.integers(2**31)), size_mm=float(rng.uniform(6, 28)))
        if rng.random() < 0.3:
            f["Effusion"] = FindingSpec("Effusion", severity=_severity(rng), side=_side(rng, 0.35),
                                        seed=int(rng.integers(2**31)))
        if rng.random() < 0.35:
            f["Consolidation"] = FindingSpec("Consolidation", severity=_severity(rng), side=_side(rng, 0.2),
                                             zone=_zone(rng, (0.25, 0.25, 0.5)), seed=int(rng.integers(2**31)))
        if rng.random() < 0.3:
            f["Emphysema"] = FindingSpec("Emphysema", severity=_severity(rng), side="bilateral", zone="upper",
                                         seed=int(rng.integers(2**31)))
    for name, spec in list(f.items()):
        if rng.random() < 0.1:
            f[name] = replace(spec, assertion="uncertain", severity="mild" if spec.severity else None)
    return dict(sorted(f.items()))


def sample_ct_anatomy(rng: np.random.Generator, volume_size: Tuple[int, int, int]) -> CtAnatomy:
    """Habitus and voxel spacing: a 512-matrix scan downsampled to `volume_size`, anisotropic in z."""
    nx, ny, nz = volume_size
    u = rng.uniform
    body_a, body_b = u(140, 175), u(95, 125)
    pix = max(u(0.68, 0.88) * 512.0, 2 * body_a + 24)  # in-plane field of view (mm)
    z_extent = u(260.0, 320.0)  # slices thinner than pixels are wide: anisotropic voxels
    return CtAnatomy(
        spacing=(float(pix / nx), float(pix / ny), float(z_extent / nz)),
        body_a=body_a,
        body_b=body_b,
        fat_mm=u(6, 22),
        lung_a=u(52, 66),
        lung_b=u(68, 84),
        lung_cx=u(70, 84),
        heart_r=u(46, 58),
        dome_z=-z_extent / 2 + u(25, 60),
        apex_z=z_extent / 2 - u(8, 25),
        noise_hu=u(8, 22),
        texture_seed=int(rng.integers(2**31)),
    )


def sample_ct_study(seed: int, index: int, volume_size: Tuple[int, int, int]) -> CtStudySpec:
    """The full specification of CT volume number `index`."""
    rng = study_rng(seed, STREAM_CT, index)
    anatomy = sample_ct_anatomy(rng, volume_size)
    findings = sample_ct_findings(rng)
    if "Nodule" in findings:  # at least about two voxels across, so the grid can show it
        nod = findings["Nodule"]
        findings["Nodule"] = replace(nod, size_mm=float(round(max(nod.size_mm or 0.0, 2.2 * max(anatomy.spacing)), 1)))
    return CtStudySpec(anatomy=anatomy, findings=findings)


def plan_subjects(seed: int, n_studies: int, stream_offset: int = 0) -> Tuple[List[int], List[int]]:
    """Subject index per study (about 1.3 studies per subject) and unique 8-digit study ids.

    Returns (subject_of_study, study_ids); subject numbers are 0..n_subjects-1 in order.
    """
    rng = study_rng(seed, STREAM_SUBJECTS, stream_offset)
    counts: List[int] = []
    while sum(counts) < n_studies:
        counts.append(int(rng.choice([1, 2, 3, 4], p=[0.8, 0.13, 0.05, 0.02])))
    subject_of_study = [s for s, c in enumerate(counts) for _ in range(c)][:n_studies]
    study_ids = (50_000_000 + rng.choice(9_999_999, size=n_studies, replace=False)).tolist() if n_studies else []
    return subject_of_study, [int(s) for s in study_ids]


def mimic_subject_ids(seed: int, n_subjects: int) -> List[int]:
    """Unique 8-digit subject ids starting 10..19, as MIMIC's are (so pXX folders vary)."""
    rng = study_rng(seed, STREAM_SUBJECTS, 1)
    return [int(s) for s in (10_000_000 + rng.choice(9_999_999, size=n_subjects, replace=False))]
