"""3D chest-CT phantoms in Hounsfield units, with findings and an anisotropic RAS+ affine.

Anatomy is drawn in millimetres (so it has a realistic size whatever the voxel grid) and
sampled on the study's voxel grid: air outside the body (-1000 HU), subcutaneous fat
(-100 HU), soft tissue (40 HU), aerated lung (-850 HU) with vessels, heart and mediastinum,
trachea, aorta, spine, ribs and sternum (bone up to +700 HU), liver below the right dome.
Findings: solid nodule (sphere), dependent pleural effusion (posterior fluid, ~10 HU),
consolidation with air bronchograms, and emphysema-like low attenuation (~ -950 HU).

Array axes are (i, j, k) = (x, y, z) with x towards the patient's right, y anterior and z
superior (the affine is diagonal and positive: RAS+). Boxes are [x0, y0, z0, x1, y1, z1]
voxel indices with exclusive ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from workbench.data.phantom.sampling import CtAnatomy, FindingSpec

REGIONS_3D: Tuple[str, ...] = (
    "right lung", "left lung",
    "right upper zone", "right mid zone", "right lower zone",
    "left upper zone", "left mid zone", "left lower zone",
    "heart", "mediastinum", "trachea", "spine",
)
_SIGN = {"right": 1.0, "left": -1.0}  # +x is the patient's right


@dataclass
class CtRendering:
    """A rendered CT volume (int16 HU), its affine, and what was drawn where."""

    volume: np.ndarray
    affine: np.ndarray
    masks: Dict[str, np.ndarray] = field(default_factory=dict)
    boxes: Dict[str, List[int]] = field(default_factory=dict)
    regions: Dict[str, List[int]] = field(default_factory=dict)


def ct_affine(shape: Tuple[int, int, int], spacing: Tuple[float, float, float]) -> np.ndarray:
    """RAS+ voxel-to-world matrix with the volume centred on the world origin."""
    aff = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    aff[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
    return aff


def _gauss_interp(n_out: int, n_in: int) -> np.ndarray:
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) * n_in / n_out - 0.5
    w = np.exp(-0.5 * ((pos[:, None] - np.arange(n_in, dtype=np.float32)[None, :]) / 0.75) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise_3d(rng: np.random.Generator, shape: Tuple[int, int, int], cells: Tuple[int, int, int]) -> np.ndarray:
    """Zero-mean, unit-variance smooth 3D noise, `cells` blobs along each axis."""
    c = rng.standard_normal(tuple(n + 2 for n in cells)).astype(np.float32)
    for axis, (n_out, n_in) in enumerate(zip(shape, c.shape)):
        w = _gauss_interp(n_out, n_in)
        c = np.moveaxis(np.tensordot(w, np.moveaxis(c, axis, 0), axes=(1, 0)), 0, axis)
    return ((c - c.mean()) / (c.std() + 1e-6)).astype(np.float32)


def _box3(mask: np.ndarray) -> Optional[List[int]]:
    if not mask.any():
        return None
    out: List[int] = []
    ends: List[int] = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.any(mask, axis=other)
        out.append(int(np.argmax(hit)))
        ends.append(int(len(hit) - np.argmax(hit[::-1])))
    return out + ends


def _binary(soft: np.ndarray) -> np.ndarray:
    m = soft > 0.5
    if not m.any() and soft.max() > 0:
        m = soft >= soft.max()
    return m


def _soft(f: np.ndarray, edge: float) -> np.ndarray:
    return np.clip(0.5 - f / edge, 0.0, 1.0)


def _zone_z(a: CtAnatomy, zone: str) -> float:
    frac = {"upper": 0.22, "middle": 0.5, "lower": 0.78, "apical": 0.08, "basilar": 0.85}[zone]
    return a.apex_z - frac * (a.apex_z - a.dome_z)


def render_ct(anatomy: CtAnatomy, findings: Dict[str, FindingSpec],
              volume_size: Tuple[int, int, int]) -> CtRendering:
    """Render a chest CT of `anatomy` showing exactly `findings` (pure function of its arguments)."""
    a = anatomy
    nx, ny, nz = volume_size
    sx, sy, sz = a.spacing
    X = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * sx)[:, None, None]
    Y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * sy)[None, :, None]
    Z = ((np.arange(nz, dtype=np.float32) - (nz - 1) / 2) * sz)[None, None, :]
    edge = float(max(sx, sy)) * 1.2
    trng = np.random.default_rng([int(a.texture_seed), 11])
    shape = (nx, ny, nz)

    # Body with subcutaneous fat.
    yc = -10.0
    rb = np.sqrt((X / a.body_a) ** 2 + ((Y - yc) / a.body_b) ** 2)  # (nx, ny, 1)
    body = _soft((rb - 1) * a.body_b, edge)
    inner = _soft((rb - 1) * a.body_b + a.fat_mm, edge)
    hu = -1000.0 + body * (900.0) + inner * 140.0  # air -1000, fat -100, soft tissue +40
    hu = np.broadcast_to(hu, shape).astype(np.float32)

    # Lungs: cross-sections that widen from the apex to the base, sitting on the domes.
    span = a.apex_z - a.dome_z
    grow = np.sqrt(np.clip((a.apex_z - Z) / (0.55 * span), 0.0, 1.0))  # (1, 1, nz)
    lungs: Dict[str, np.ndarray] = {}
    heart_c = (-0.35 * a.heart_r, 0.3 * a.body_b, a.dome_z + 0.75 * a.heart_r)
    heart = _soft((np.sqrt(((X - heart_c[0]) / (1.15 * a.heart_r)) ** 2 + ((Y - heart_c[1]) / (0.85 * a.heart_r)) ** 2
                           + ((Z - heart_c[2]) / (0.95 * a.heart_r)) ** 2) - 1) * a.heart_r, edge)
    mediastinum = (_soft(np.abs(X + 4) - 24.0, edge) * _soft(-(Y + 0.45 * a.body_b), edge)
                   * _soft(Z - a.apex_z, edge) * inner)
    for side, sg in _SIGN.items():
        cx, cy = sg * a.lung_cx, -6.0
        r2 = ((X - cx) / (a.lung_a * np.maximum(grow, 1e-3))) ** 2 + ((Y - cy) / (a.lung_b * np.maximum(grow, 1e-3))) ** 2
        dome = a.dome_z + (10.0 if side == "right" else 0.0) + 38.0 * np.clip(1 - ((X - cx) / a.lung_a) ** 2
                                                                                - ((Y - cy) / a.lung_b) ** 2, 0, 1)
        f = np.maximum((np.sqrt(r2) - 1) * 25.0, dome - Z)
        f = np.maximum(f, Z - a.apex_z)
        lung = _soft(f, edge) * (1 - heart) * (1 - mediastinum)
        lungs[side] = lung.astype(np.float32)
    lung_all = np.maximum(lungs["right"], lungs["left"])

    # Vessels: thin ridges of smooth noise, denser towards the hila.
    grid_cells = tuple(max(4, int(round(n * s / 14.0))) for n, s in zip(shape, a.spacing))
    n1 = smooth_noise_3d(trng, shape, grid_cells)
    hil = np.exp(-((np.abs(X) - 40.0) ** 2 + (Y + 5) ** 2) / (2 * 45.0 ** 2))
    vessel = np.clip(1 - np.abs(n1) / (0.1 + 0.15 * hil), 0, 1) ** 2
    lung_hu = -860.0 + 800.0 * vessel * (0.3 + 0.7 * hil)
    hu = hu * (1 - lung_all) + lung_hu * lung_all
    hu = hu + heart * (45.0 - hu) * (body > 0.5) + mediastinum * (1 - heart) * (30.0 - hu) * 0.9

    # Airway, aorta, spine, ribs, sternum; liver below the right dome.
    carina_z = a.dome_z + 0.62 * span
    trachea = _soft(np.sqrt(X ** 2 + (Y - 8) ** 2) - 8.0, edge) * _soft(carina_z - Z, edge)
    hu = hu + trachea * (-1000.0 - hu)
    aorta = _soft(np.sqrt((X + 22) ** 2 + (Y + 0.45 * a.body_b - 12) ** 2) - 12.0, edge) * _soft(a.dome_z - 40 - Z, edge)
    hu = hu + aorta * (50.0 - hu) * (1 - lung_all)
    spine_c = -a.body_b + 48.0
    r_vert = np.sqrt(X ** 2 + (Y - spine_c) ** 2)
    vert = _soft(r_vert - 17.0, edge) * np.ones((1, 1, nz), np.float32)
    disc = (np.cos(2 * np.pi * Z / 27.0) > 0.8).astype(np.float32)
    bone = np.where(r_vert > 12.0, 700.0, 300.0)  # cortical shell around cancellous bone
    hu = hu + vert * ((bone - (bone - 90.0) * disc) - hu)
    ring = np.sqrt((X / (a.body_a - a.fat_mm - 6)) ** 2 + ((Y - yc) / (a.body_b - a.fat_mm - 6)) ** 2)
    ang = np.arctan2(Y - yc, X)
    band = np.cos(2 * np.pi * (Z + 18.0 * np.abs(ang)) / 32.0) > 0.55
    ribs = (np.abs(ring - 1) * a.body_b < 4.5) & band & (Z < a.apex_z + 10) & (Z > a.dome_z - 30) & (Y < 0.8 * a.body_b)
    hu = np.where(ribs, 650.0, hu)
    sternum = (_soft(np.abs(X) - 14.0, edge) * _soft(np.abs(Y - (yc + a.body_b - a.fat_mm - 8)) - 5.0, edge)
               * _soft(np.abs(Z - (a.dome_z + 0.55 * span)) - 0.3 * span, edge))
    hu = hu + sternum * (500.0 - hu)
    below = (Z < a.dome_z + 10.0) & (body > 0.5) & (lung_all < 0.5) & ~ribs
    hu = np.where(below & (vert < 0.5), 55.0, hu)

    masks: Dict[str, np.ndarray] = {}
    for name in sorted(findings):
        spec = findings[name]
        frng = np.random.default_rng([int(spec.seed), 13])
        k = 0.6 if spec.assertion == "uncertain" else 1.0
        if name == "Nodule":
            side = spec.side if spec.side in _SIGN else "right"
            lung = lungs[side]
            c = None
            for _ in range(12):
                cand = (_SIGN[side] * a.lung_cx + frng.uniform(-0.3, 0.3) * a.lung_a,
                        -6.0 + frng.uniform(-0.35, 0.35) * a.lung_b,
                        _zone_z(a, spec.zone or "upper") + frng.uniform(-10, 10))
                idx = (int(round(cand[0] / sx + (nx - 1) / 2)), int(round(cand[1] / sy + (ny - 1) / 2)),
                       int(round(cand[2] / sz + (nz - 1) / 2)))
                if all(0 <= i < n for i, n in zip(idx, shape)) and lung[idx] > 0.9:
                    c = cand
                    break
            if c is None:  # fall back to the lung voxel nearest the intended zone
                z_idx = int(np.clip(round(_zone_z(a, spec.zone or "upper") / sz + (nz - 1) / 2), 0, nz - 1))
                sl = lung[:, :, z_idx]
                ii, jj = np.unravel_index(int(np.argmax(sl)), sl.shape)
                c = (float(X[ii, 0, 0]), float(Y[0, jj, 0]), float(Z[0, 0, z_idx]))
            r = 0.5 * (spec.size_mm or 12.0)
            d = np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2)
            soft = _soft(d - r, 0.5 * min(a.spacing))
            hu = hu + soft * ((35.0 if k == 1 else -300.0) - hu)
        elif name == "Effusion":
            depth = {"mild": 22.0, "moderate": 42.0, "severe": 65.0}[spec.severity or "moderate"] * k
            top = {"mild": 0.3, "moderate": 0.5, "severe": 0.75}[spec.severity or "moderate"]
            # Free fluid fills the dependent pleural space completely: a sharp fluid level.
            fluid = np.zeros(shape, bool)
            for side in spec.sides():
                fluid |= ((lungs[side] > 0.3) & (Y < -6.0 - a.lung_b + depth)
                          & (Z < a.dome_z + top * span) & ~ribs)
            hu = np.where(fluid, 12.0, hu)
            soft = fluid.astype(np.float32)
        elif name == "Consolidation":
            r = {"mild": 18.0, "moderate": 28.0, "severe": 42.0}[spec.severity or "moderate"]
            n2 = smooth_noise_3d(frng, shape, (12, 12, 10))
            soft = np.zeros(shape, np.float32)
            for side in spec.sides():
                c = (_SIGN[side] * a.lung_cx + frng.uniform(-0.2, 0.2) * a.lung_a, -6.0 + frng.uniform(-0.3, 0.3) * a.lung_b,
                     _zone_z(a, spec.zone or "lower"))
                g = np.exp(-(((X - c[0]) ** 2 + (Y - c[1]) ** 2 + ((Z - c[2]) / 1.2) ** 2) / r ** 2)) * (1 + 0.3 * n2)
                soft = np.maximum(soft, np.clip((g - 0.35) / 0.15, 0, 1) * lungs[side])
            air_bronchogram = np.abs(smooth_noise_3d(frng, shape, (10, 10, 8))) < 0.12
            target = np.where(air_bronchogram, -800.0, 35.0 if k == 1 else -450.0)
            hu = hu + soft * (target - hu)
        elif name == "Emphysema":
            thr = {"mild": 1.1, "moderate": 0.7, "severe": 0.35}[spec.severity or "moderate"] + (1 - k)
            n3 = smooth_noise_3d(frng, shape, (16, 16, 12))
            upper = np.clip((Z - a.dome_z) / span, 0, 1)
            soft = ((n3 + 0.8 * upper) > thr + 0.4).astype(np.float32) * (lung_all > 0.5)
            hu = hu + soft * (-955.0 - hu)
        else:
            raise ValueError(f"cannot draw CT finding {name!r}; drawable: Consolidation, Effusion, Emphysema, Nodule")
        masks[name] = _binary(soft)

    nrng = np.random.default_rng([int(a.texture_seed), 12])
    hu = hu + a.noise_hu * nrng.standard_normal(shape).astype(np.float32)
    volume = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

    regions: Dict[str, np.ndarray] = {}
    zc = (np.arange(nz) - (nz - 1) / 2) * sz
    for side in ("right", "left"):
        m = lungs[side] > 0.5
        regions[f"{side} lung"] = m
        zs = np.where(np.any(m, axis=(0, 1)))[0]
        if len(zs):
            lo, hi = zc[zs[0]], zc[zs[-1]]
            third = (hi - lo) / 3
            regions[f"{side} upper zone"] = m & (Z >= hi - third)
            regions[f"{side} mid zone"] = m & (Z < hi - third) & (Z >= lo + third)
            regions[f"{side} lower zone"] = m & (Z < lo + third)
    regions["heart"] = heart > 0.5
    regions["mediastinum"] = mediastinum > 0.5
    regions["trachea"] = trachea > 0.5
    regions["spine"] = vert > 0.5
    boxes = {n: b for n, m in masks.items() if (b := _box3(m)) is not None}
    region_boxes = {n: b for n, m in regions.items() if (b := _box3(np.broadcast_to(m, shape))) is not None}
    return CtRendering(volume=volume, affine=ct_affine(volume_size, a.spacing), masks=masks, boxes=boxes,
                       regions=region_boxes)
