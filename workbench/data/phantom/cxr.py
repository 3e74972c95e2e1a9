"""2D chest-radiograph phantoms: anatomy and findings drawn in pixels with numpy.

The renderer builds an attenuation map (brighter = more attenuating, as on a displayed
radiograph) from analytic shapes evaluated on a posed coordinate grid, then maps it through
an exposure curve and adds quantum noise. Everything is a pure function of the study spec,
so the same study can be rendered with and without a finding (`render_frontal`) and the
finding's effect measured in its own pixels.

Conventions: normalised anatomy coordinates X (0 = image left) and Y (0 = top); the patient's
right lung is on the image's left, as on a PA film. Boxes are [x0, y0, x1, y1] in pixels of
the stored image with x1, y1 exclusive (`image[y0:y1, x0:x1]` is the box).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from workbench.data.phantom.sampling import CxrAnatomy, FindingSpec

REGIONS_2D: Tuple[str, ...] = (
    "right lung", "left lung",
    "right upper zone", "right mid zone", "right lower zone",
    "left upper zone", "left mid zone", "left lower zone",
    "right apical zone", "left apical zone",
    "right costophrenic angle", "left costophrenic angle",
    "right hemidiaphragm", "left hemidiaphragm",
    "heart", "mediastinum", "trachea",
)

AIR_DEPTH = 0.55  # attenuation removed by fully aerated lung
CARDIOMEGALY_CTR = {"mild": 0.55, "moderate": 0.62, "severe": 0.69}
_SIGN = {"right": -1.0, "left": 1.0}  # image x direction of each hemithorax


@dataclass
class CxrRendering:
    """A rendered radiograph with what was drawn where."""

    image: np.ndarray  # uint8 (size, size)
    masks: Dict[str, np.ndarray] = field(default_factory=dict)  # finding -> bool mask
    boxes: Dict[str, List[int]] = field(default_factory=dict)  # finding -> [x0, y0, x1, y1]
    regions: Dict[str, List[int]] = field(default_factory=dict)  # region name -> box
    ctr: float = 0.0  # cardiothoracic ratio of the drawn heart


# ----------------------------------------------------------------------------- helpers
def _soft(f: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance `f` (negative inside), `edge` wide."""
    return np.clip(0.5 - f / edge, 0.0, 1.0)


def _gauss_interp(n_out: int, n_in: int) -> np.ndarray:
    """Row-normalised Gaussian weights that upsample `n_in` control points to `n_out` samples."""
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) * n_in / n_out - 0.5
    w = np.exp(-0.5 * ((pos[:, None] - np.arange(n_in, dtype=np.float32)[None, :]) / 0.75) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-variance smooth noise with about `cells` blobs across the image."""
    c = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    w = _gauss_interp(size, cells + 2)
    n = w @ c @ w.T
    return ((n - n.mean()) / (n.std() + 1e-6)).astype(np.float32)


def _segment_dist2(x: np.ndarray, y: np.ndarray, p0: Sequence[float], p1: Sequence[float]) -> np.ndarray:
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    l2 = max(dx * dx + dy * dy, 1e-12)
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / l2, 0.0, 1.0)
    return (x - p0[0] - t * dx) ** 2 + (y - p0[1] - t * dy) ** 2


def polyline_mask(x: np.ndarray, y: np.ndarray, points: Sequence[Sequence[float]], half_width: float,
                  edge: float) -> np.ndarray:
    """Soft mask of a polyline of the given half-width (a tube, a lead, a band)."""
    d2 = None
    for p0, p1 in zip(points[:-1], points[1:]):
        s = _segment_dist2(x, y, p0, p1)
        d2 = s if d2 is None else np.minimum(d2, s)
    return _soft(np.sqrt(d2) - half_width, edge)


def mask_box(mask: np.ndarray) -> Optional[List[int]]:
    """[x0, y0, x1, y1] (exclusive ends) of a boolean mask, or None when it is empty."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    y0, y1 = int(np.argmax(rows)), int(len(rows) - np.argmax(rows[::-1]))
    x0, x1 = int(np.argmax(cols)), int(len(cols) - np.argmax(cols[::-1]))
    return [x0, y0, x1, y1]


def _binary(soft: np.ndarray, thr: float = 0.5) -> np.ndarray:
    """Threshold a soft mask; a finding smaller than a pixel keeps its strongest pixel."""
    m = soft > thr
    if not m.any() and soft.max() > 0:
        m = soft >= soft.max()
    return m


def _grid(size: int, a: CxrAnatomy) -> Tuple[np.ndarray, np.ndarray]:
    """Anatomy coordinates (X, Y) of every pixel after the study's rotation, shift and zoom."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    dy, dx = t[:, None] - 0.5 - a.shift_y, t[None, :] - 0.5 - a.shift_x
    th = np.deg2rad(a.rot_deg)
    c, s = float(np.cos(th)), float(np.sin(th))
    x = 0.5 + (c * dx + s * dy) / a.zoom
    y = 0.5 + (-s * dx + c * dy) / a.zoom
    return x.astype(np.float32), y.astype(np.float32)


def _exposure(att: np.ndarray, a: CxrAnatomy, rng: np.random.Generator) -> np.ndarray:
    """Attenuation -> displayed uint8 (exposure curve, gamma, offset, quantum noise)."""
    k = 2.2 * a.gain
    lo, hi = 1.0 - np.exp(-k * 0.22), 1.0 - np.exp(-k * 1.45)
    img = (1.0 - np.exp(-k * np.clip(att, 0.0, None)) - lo) / (hi - lo)
    img = np.clip(img, 0.0, 1.0) ** a.gamma + a.offset
    img = img + a.noise_sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _finding_rng(spec: FindingSpec) -> np.random.Generator:
    return np.random.default_rng([int(spec.seed), 7])


def _strength(spec: FindingSpec) -> float:
    """Uncertain findings are drawn faintly."""
    return 0.5 if spec.assertion == "uncertain" else 1.0


def _sev(spec: FindingSpec, table: Dict[str, float], default: str = "moderate") -> float:
    return table[spec.severity or default]


# ----------------------------------------------------------------------------- anatomy
@dataclass
class _Lung:
    sign: float
    cx: float
    aw: float
    top: float
    dome: float
    curv: float
    soft: np.ndarray
    radius: np.ndarray  # normalised distance from the lung's centre (1 = pleural surface)
    depth: np.ndarray  # 0 at the pleura, 1 deep inside

    def dome_y(self, x):
        return self.dome + self.curv * (x - self.cx) ** 2

    @property
    def cp_y(self) -> float:
        """y of the lateral costophrenic angle."""
        return self.dome + self.curv * self.aw ** 2

    @property
    def x_lat(self) -> float:
        return self.cx + self.sign * self.aw

    def zone_y(self, zone: str) -> float:
        frac = {"apical": 0.08, "upper": 0.22, "middle": 0.5, "lower": 0.8, "basilar": 0.85}[zone]
        return self.top + frac * (self.cp_y - self.top)


@dataclass
class _Scene:
    """Working arrays of one frontal rendering, shared by the anatomy and finding painters."""

    size: int
    x: np.ndarray
    y: np.ndarray
    edge: float
    lungs: Dict[str, _Lung]
    heart: np.ndarray
    mediastinum: np.ndarray
    air: Dict[str, np.ndarray]  # attenuation removed by air, per side
    markings: np.ndarray
    att: np.ndarray
    ctr: float
    hilum_y: float


def _lung(x, y, a: CxrAnatomy, side: str, dome: float, curv: float, edge: float) -> _Lung:
    sg = _SIGN[side]
    x_lat, x_med = 0.5 + sg * a.thorax_hw, 0.5 + sg * a.med_hw
    cx, aw = (x_lat + x_med) / 2, abs(x_lat - x_med) / 2
    b = dome - a.lung_top
    q = np.sqrt(((x - cx) / aw) ** 2 + ((y - dome) / b) ** 2)
    above = y < dome
    radius = np.where(above, q, np.abs(x - cx) / aw)
    f_shape = (radius - 1.0) * min(aw, b)
    f_dome = y - (dome + curv * (x - cx) ** 2)
    f = np.maximum(f_shape, f_dome)
    soft = _soft(f, edge)
    depth = np.clip(-f / 0.05, 0.0, 1.0)
    return _Lung(sg, cx, aw, a.lung_top, dome, curv, soft, radius.astype(np.float32), depth)


def _build_scene(size: int, a: CxrAnatomy, findings: Dict[str, FindingSpec]) -> _Scene:
    """Body, lungs, heart, mediastinum, bones and lung markings; geometry already altered by
    findings that change anatomy (cardiomegaly, emphysema, atelectatic volume loss)."""
    x, y = _grid(size, a)
    edge = max(2.0 / size, 0.004)
    trng = np.random.default_rng([int(a.texture_seed), 1])

    domes = {"right": a.dome_right, "left": a.dome_left}
    curv = {"right": a.dome_curv, "left": a.dome_curv}
    air_scale, mark_scale = 1.0, 1.0
    emph = findings.get("Emphysema")
    if emph is not None:
        k = _strength(emph)
        drop = _sev(emph, {"mild": 0.03, "moderate": 0.05, "severe": 0.07}) * k
        flat = _sev(emph, {"mild": 0.7, "moderate": 0.5, "severe": 0.35})
        for s in domes:
            domes[s] += drop
            curv[s] *= 1 - (1 - flat) * k
        air_scale = 1 + _sev(emph, {"mild": 0.12, "moderate": 0.2, "severe": 0.28}) * k
        mark_scale = 1 - _sev(emph, {"mild": 0.25, "moderate": 0.4, "severe": 0.55}) * k
    atel = findings.get("Atelectasis")
    if atel is not None:
        lift = _sev(atel, {"mild": 0.005, "moderate": 0.03, "severe": 0.055}) * _strength(atel)
        for s in atel.sides():
            domes[s] -= lift

    lungs = {s: _lung(x, y, a, s, domes[s], curv[s], edge) for s in ("right", "left")}

    ctr = a.heart_ctr
    card = findings.get("Cardiomegaly")
    if card is not None:
        jitter = float(_finding_rng(card).uniform(-0.015, 0.015))
        target = CARDIOMEGALY_CTR[card.severity or "moderate"] + jitter
        ctr = a.heart_ctr + (target - a.heart_ctr) * (0.55 if card.assertion == "uncertain" else 1.0)
        ctr = max(ctr, 0.52)
    w_h = ctr * 2 * a.thorax_hw
    x_right_border = 0.5 - 0.36 * w_h
    hh = a.heart_hh * 1.2 * (1 + 0.6 * max(ctr - 0.45, 0.0))
    hy = min(domes.values()) + 0.035 - hh  # the heart rests on the diaphragm
    # Right atrial border (image left, gently convex) and left ventricle (image right, bulging
    # towards a low apex); together they span exactly the cardiothoracic width w_h.
    lv_x, lv_a = x_right_border + 0.6 * w_h, 0.4 * w_h
    ra_x, ra_a = x_right_border + 0.3 * w_h, 0.3 * w_h
    lv = _soft((np.sqrt(((x - lv_x) / lv_a) ** 2 + ((y - hy - 0.15 * hh) / (0.88 * hh)) ** 2) - 1) * lv_a, edge)
    ra = _soft((np.sqrt(((x - ra_x) / ra_a) ** 2 + ((y - hy) / hh) ** 2) - 1) * ra_a, edge)
    heart = np.maximum(lv, ra)

    column = _soft(np.abs(x - 0.5) - (a.med_hw + 0.008 + 0.02 * np.clip(y - 0.15, 0, 0.3)), edge)
    column = column * _soft(y - (hy - 0.5 * hh), edge)
    knob = _soft(np.sqrt((x - (0.5 + a.med_hw + 0.004)) ** 2 + (y - 0.30) ** 2) - 0.034, edge)
    mediastinum = np.maximum(column, knob)

    # Body: a superellipse, thicker centrally; abdomen below the domes.
    bx, by = ((x - 0.5) / a.body_hw) ** 2, ((y - 0.56) / 0.62) ** 2
    qb = bx * bx + by * by
    body = _soft((np.sqrt(np.sqrt(qb)) - 1) * a.body_hw, 2 * edge)
    thick = body * (0.55 + 0.45 * np.sqrt(np.clip(1 - bx, 0, 1)))
    dome_min = min(domes.values())
    att = thick + 0.12 * body * np.clip((y - dome_min) / 0.08, 0, 1)

    # Air in the lungs, less where heart, mediastinum or knob overlie them.
    cover = 1 - np.maximum(heart, mediastinum)
    air = {}
    for s, lg in lungs.items():
        air[s] = AIR_DEPTH * air_scale * lg.soft * cover * (0.72 + 0.28 * lg.depth)
        att = att - air[s]

    # Lung markings: vessels branching out of each hilum (radial ridges warped by smooth
    # noise so they wander and fork), tapering towards the periphery.
    hilum_y = 0.43 + 0.5 * (a.heart_cy - 0.61)
    warp = smooth_noise(trng, size, 10)
    fine = smooth_noise(trng, size, 26)
    markings = np.zeros_like(att)
    for s, lg in lungs.items():
        hx_s = 0.5 + lg.sign * (a.med_hw + 0.035)
        # Only pixels inside this lung's bounding window carry its markings.
        rows, cols = np.nonzero(np.any(air[s] > 0, axis=1))[0], np.nonzero(np.any(air[s] > 0, axis=0))[0]
        if len(rows):
            win = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            xw, yw = x[win] - hx_s, y[win] - hilum_y
            rho = np.sqrt(xw * xw + yw * yw)
            theta = np.arctan2(yw, xw * lg.sign)
            near = np.exp(-rho / 0.08)
            vessel = np.clip(1 - np.abs(np.sin(9.0 * theta + 1.3 * warp[win] + 0.35 * fine[win]))
                             / (0.16 + 0.25 * near), 0, 1)
            taper = 0.05 + 0.14 * np.exp(-rho / 0.2)
            markings[win] += (air[s][win] / AIR_DEPTH) * taper * (
                0.75 * vessel * vessel + 0.25 * np.clip(fine[win] * 0.5 + 0.5, 0, 1))
        hilum = _soft(np.sqrt((x - hx_s) ** 2 + ((y - hilum_y) / 1.6) ** 2) - 0.03, 3 * edge)
        att = att + 0.08 * hilum
    markings *= mark_scale
    att = att + markings + 0.09 * heart + 0.12 * mediastinum

    trachea = _soft(np.abs(x - 0.5 - 0.03 * np.clip(y - 0.2, 0, 1)) - 0.014, edge) * _soft(y - 0.36, 3 * edge)
    att = att - 0.1 * trachea
    # Bones: spine, posterior and anterior ribs, clavicles.
    spine = _soft(np.abs(x - 0.5) - 0.033, edge)
    att = att + spine * (0.12 + 0.05 * np.cos(2 * np.pi * y / 0.058)) * body
    d = np.abs(x - 0.5)
    cage = (_soft(0.03 - d, edge) * _soft(d - (a.thorax_hw + 0.015), edge)
            * _soft(a.lung_top - 0.035 - y, edge) * _soft(y - (dome_min + 0.07), 3 * edge))
    u = (y - 1.1 * d ** 2 + 0.3 * d) / a.rib_period - a.rib_phase
    post = np.sqrt(np.clip(1 - np.abs(u - np.floor(u) - 0.5) / 0.17, 0, 1))
    u2 = (y + 0.42 * d) / (1.15 * a.rib_period) - a.rib_phase
    ant = np.clip(1 - np.abs(u2 - np.floor(u2) - 0.5) / 0.2, 0, 1)
    att = att + cage * (0.085 * post + 0.035 * ant)
    # Clavicles: gently S-shaped bars rising laterally from the sternal notch.
    t = np.clip((d - 0.035) / 0.275, 0, 1)
    clav_y = a.clavicle_y + 0.025 - 0.07 * t + 0.02 * np.sin(np.pi * t)
    att = att + 0.15 * _soft(np.abs(y - clav_y) - 0.011, 2 * edge) * _soft(np.abs(d - 0.1725) - 0.1375, 2 * edge)

    if a.breasts:
        for sg in (-1.0, 1.0):
            br = _soft(np.sqrt(((x - (0.5 + sg * 0.24)) / 0.17) ** 2 + ((y - 0.86) / 0.13) ** 2) - 1, 0.05)
            att = att + 0.09 * br * body
    if a.gastric_bubble:
        gb = _soft(np.sqrt(((x - (0.5 + 0.17)) / 0.045) ** 2 + ((y - (domes["left"] + 0.05)) / 0.028) ** 2) - 1,
                   0.15)
        att = att - 0.22 * gb * body
    return _Scene(size, x, y, edge, lungs, heart, mediastinum, air, markings, att, ctr, hilum_y)


# ----------------------------------------------------------------------------- findings
def _fill(sc: _Scene, side: str, soft: np.ndarray, amount: float) -> np.ndarray:
    """Attenuation that replaces a fraction `amount` of a side's aerated lung by water density."""
    return amount * soft * (sc.air[side] + sc.markings)


def _paint_effusion(sc: _Scene, spec: FindingSpec):
    k = _strength(spec)
    h = _sev(spec, {"mild": 0.05, "moderate": 0.13, "severe": 0.26}) * (0.8 if k < 1 else 1.0)
    dA, soft_all = 0.0, 0.0
    for s in spec.sides():
        lg = sc.lungs[s]
        lat = np.clip(lg.sign * (sc.x - (lg.cx - lg.sign * lg.aw)) / (2 * lg.aw), 0, 1)
        level = lg.cp_y - h * (0.55 + 0.45 * lat ** 2)  # meniscus: fluid climbs the lateral wall
        fluid = np.clip((sc.y - level) / 0.015 + 0.5, 0, 1) * lg.soft
        dA = dA + _fill(sc, s, fluid, 0.95 * k) + 0.03 * k * fluid
        soft_all = np.maximum(soft_all, fluid)
    return dA, soft_all


def _paint_pneumothorax(sc: _Scene, spec: FindingSpec):
    k = _strength(spec)
    w = _sev(spec, {"mild": 0.09, "moderate": 0.17, "severe": 0.3})
    reach = _sev(spec, {"mild": 0.45, "moderate": 0.65, "severe": 0.9})
    dA, soft_all = 0.0, 0.0
    for s in spec.sides():
        lg = sc.lungs[s]
        y_cut = lg.top + reach * (lg.cp_y - lg.top)
        lower = np.clip((y_cut - sc.y) / 0.03, 0, 1)
        rim = np.clip((lg.radius - (1 - w)) / 0.02, 0, 1) * lg.soft * lower
        line = np.clip(1 - np.abs(lg.radius - (1 - w) + 0.012) / 0.012, 0, 1) * lg.soft * lower
        # No markings in the pleural space, extra lucency, and a thin visceral pleural line.
        dA = dA - k * rim * (sc.markings + 0.35 * sc.air[s]) + 0.05 * k * line * (1 - rim)
        soft_all = np.maximum(soft_all, rim)
    return dA, soft_all


def _blob(sc: _Scene, rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float,
          patchy: float) -> np.ndarray:
    g = np.exp(-(((sc.x - cx) / rx) ** 2 + ((sc.y - cy) / ry) ** 2))
    if patchy > 0:
        g = g * (1 + patchy * smooth_noise(rng, sc.size, 26))
    return g


def _zone_centre(lg: _Lung, zone: str, rng: np.random.Generator) -> Tuple[float, float]:
    return (lg.cx + lg.sign * lg.aw * float(rng.uniform(-0.25, 0.35)),
            lg.zone_y(zone) + float(rng.uniform(-0.03, 0.03)))


def _paint_consolidation(sc: _Scene, spec: FindingSpec):
    rng, k = _finding_rng(spec), _strength(spec)
    r = _sev(spec, {"mild": 0.06, "moderate": 0.085, "severe": 0.12})
    dA, soft_all = 0.0, 0.0
    for s in spec.sides():
        lg = sc.lungs[s]
        cx, cy = _zone_centre(lg, spec.zone or "lower", rng)
        g = _blob(sc, rng, cx, cy, r * rng.uniform(0.9, 1.3), r * rng.uniform(0.8, 1.1), 0.45)
        soft = np.clip((g - 0.3) / 0.3, 0, 1) * lg.soft
        # Air bronchograms: dark branching tubes running from the hilum into the opacity.
        hx = 0.5 + lg.sign * 0.1
        ang = np.arctan2(cy - sc.hilum_y, cx - hx)
        pts = [(hx + 0.3 * (cx - hx), sc.hilum_y + 0.3 * (cy - sc.hilum_y)), (cx, cy),
               (cx + r * np.cos(ang + 0.4), cy + r * np.sin(ang + 0.4))]
        tube = polyline_mask(sc.x, sc.y, pts, 0.006, sc.edge)
        tube = np.maximum(tube, polyline_mask(sc.x, sc.y, [(cx, cy), (cx + r * np.cos(ang - 0.5),
                                                                      cy + r * np.sin(ang - 0.5))], 0.005, sc.edge))
        dA = dA + _fill(sc, s, soft, 0.9 * k) + 0.03 * k * soft - 0.45 * k * tube * soft * sc.air[s]
        soft_all = np.maximum(soft_all, soft)
    return dA, soft_all


def _paint_lung_opacity(sc: _Scene, spec: FindingSpec):
    rng, k = _finding_rng(spec), _strength(spec)
    r = _sev(spec, {"mild": 0.08, "moderate": 0.11, "severe": 0.15})
    amp = _sev(spec, {"mild": 0.35, "moderate": 0.45, "severe": 0.55}) * k
    dA, soft_all = 0.0, 0.0
    for s in spec.sides():
        lg = sc.lungs[s]
        cx, cy = _zone_centre(lg, spec.zone or "lower", rng)
        g = _blob(sc, rng, cx, cy, r * rng.uniform(1.0, 1.4), r * rng.uniform(0.9, 1.2), 0.15) * lg.soft
        dA = dA + _fill(sc, s, np.clip(g, 0, 1), amp)
        soft_all = np.maximum(soft_all, np.clip((g - 0.3) / 0.2, 0, 1))
    return dA, soft_all


def _mm(sc: _Scene) -> float:
    """Normalised units per millimetre: the rib cage is about 300 mm wide."""
    lg = sc.lungs["right"]
    return abs(sc.lungs["left"].x_lat - lg.x_lat) / 300.0


def _paint_round(sc: _Scene, spec: FindingSpec, lobulated: bool):
    rng, k = _finding_rng(spec), _strength(spec)
    s = spec.side if spec.side in ("right", "left") else "right"
    lg = sc.lungs[s]
    cx, cy = _zone_centre(lg, spec.zone or "upper", rng)
    r = 0.5 * (spec.size_mm or (15.0 if not lobulated else 50.0)) * _mm(sc)
    ang = np.arctan2(sc.y - cy, sc.x - cx)
    rr = r * (1 + (0.12 * np.sin(3 * ang + rng.uniform(0, 6.28)) if lobulated else 0.0))
    disk = _soft(np.sqrt((sc.x - cx) ** 2 + (sc.y - cy) ** 2) - rr, sc.edge)
    disk = disk * np.clip(lg.soft * 2, 0, 1)
    return _fill(sc, s, disk, 0.9 * k) + 0.06 * k * disk, disk


def _paint_atelectasis(sc: _Scene, spec: FindingSpec):
    rng, k = _finding_rng(spec), _strength(spec)
    half = _sev(spec, {"mild": 0.006, "moderate": 0.011, "severe": 0.02})
    dA, soft_all = 0.0, 0.0
    for s in spec.sides():
        lg = sc.lungs[s]
        cy = lg.zone_y("basilar") - float(rng.uniform(0.03, 0.07))
        cx = lg.cx + lg.sign * lg.aw * float(rng.uniform(-0.1, 0.2))
        half_len = lg.aw * float(rng.uniform(0.4, 0.65))
        tilt = float(rng.uniform(-0.2, 0.2))
        pts = [(cx - half_len, cy - tilt * half_len), (cx + half_len, cy + tilt * half_len)]
        band = polyline_mask(sc.x, sc.y, pts, half, sc.edge) * lg.soft
        dA = dA + _fill(sc, s, band, 0.85 * k) + 0.03 * k * band
        soft_all = np.maximum(soft_all, band)
    return dA, soft_all


def _paint_edema(sc: _Scene, spec: FindingSpec):
    k = _strength(spec)
    amp = _sev(spec, {"mild": 0.3, "moderate": 0.45, "severe": 0.62}) * k
    dA, soft_all = 0.0, 0.0
    for s in ("right", "left"):
        lg = sc.lungs[s]
        hx = 0.5 + lg.sign * 0.11
        g = np.exp(-(((sc.x - hx) / 0.13) ** 2 + ((sc.y - sc.hilum_y - 0.03) / 0.17) ** 2)) * lg.soft
        soft = np.clip((g - 0.3) / 0.2, 0, 1)
        dA = dA + _fill(sc, s, g, amp)
        if spec.severity in ("moderate", "severe") and spec.assertion == "present":
            # Kerley B lines: short horizontal lines at the lateral lung bases.
            for j in range(4):
                yy = lg.cp_y - 0.035 - 0.022 * j
                pts = [(lg.x_lat, yy), (lg.x_lat - lg.sign * 0.045, yy)]
                line = polyline_mask(sc.x, sc.y, pts, 0.0035, sc.edge) * lg.soft
                dA = dA + _fill(sc, s, line, 0.5)
                soft = np.maximum(soft, line)
        soft_all = np.maximum(soft_all, soft)
    return dA, soft_all


def device_paths(device: str) -> List[List[Tuple[float, float]]]:
    """Polylines (anatomy coordinates) of a support device; the pacemaker generator is a box."""
    if device == "ett":
        return [[(0.503, -0.05), (0.503, 0.31)]]
    if device == "cvc":
        return [[(0.395, 0.0), (0.425, 0.15), (0.462, 0.26), (0.468, 0.37)]]
    if device == "ngt":
        return [[(0.497, -0.05), (0.492, 0.3), (0.5, 0.6), (0.56, 0.78), (0.62, 0.83)]]
    if device == "pacemaker":
        return [[(0.71, 0.215), (0.6, 0.22), (0.5, 0.3), (0.47, 0.45), (0.5, 0.58), (0.57, 0.665)],
                [(0.71, 0.225), (0.62, 0.24), (0.52, 0.33), (0.5, 0.48), (0.52, 0.56)]]
    raise ValueError(f"unknown device {device!r}; known: ett, cvc, ngt, pacemaker")


def _paint_devices(sc: _Scene, spec: FindingSpec):
    soft_all = np.zeros_like(sc.att)
    half = max(0.0045, 0.7 / sc.size)
    for dev in spec.devices or ("ett",):
        for pts in device_paths(dev):
            soft_all = np.maximum(soft_all, polyline_mask(sc.x, sc.y, pts, half, sc.edge))
        if dev == "pacemaker":
            box = _soft(np.maximum(np.abs(sc.x - 0.75) - 0.04, np.abs(sc.y - 0.2) - 0.027), sc.edge)
            soft_all = np.maximum(soft_all, box)
    return 0.9 * soft_all, soft_all


def _paint_emphysema(sc: _Scene, spec: FindingSpec):
    # Hyperlucency and flattened domes are part of the scene geometry; bullae are drawn here.
    rng, k = _finding_rng(spec), _strength(spec)
    soft_all = np.maximum(sc.lungs["right"].soft, sc.lungs["left"].soft)
    dA = 0.0
    if spec.severity in ("moderate", "severe") and k == 1.0:
        for s in ("right", "left"):
            lg = sc.lungs[s]
            cx, cy = lg.cx + lg.sign * lg.aw * float(rng.uniform(-0.2, 0.3)), lg.zone_y("apical") + 0.05
            bulla = _soft(np.sqrt((sc.x - cx) ** 2 + (sc.y - cy) ** 2) - 0.035, sc.edge) * lg.soft
            dA = dA - bulla * (sc.markings + 0.2 * sc.air[s])
    return dA, soft_all


_PAINTERS = {
    "Effusion": _paint_effusion,
    "Pneumothorax": _paint_pneumothorax,
    "Consolidation": _paint_consolidation,
    "Lung_Opacity": _paint_lung_opacity,
    "Nodule": lambda sc, sp: _paint_round(sc, sp, lobulated=False),
    "Mass": lambda sc, sp: _paint_round(sc, sp, lobulated=True),
    "Atelectasis": _paint_atelectasis,
    "Edema": _paint_edema,
    "Support_Devices": _paint_devices,
    "Emphysema": _paint_emphysema,
}


# ----------------------------------------------------------------------------- regions
def _region_masks(sc: _Scene) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    for s, lg in sc.lungs.items():
        m = lg.soft > 0.5
        h = lg.cp_y - lg.top
        out[f"{s} lung"] = m
        out[f"{s} upper zone"] = m & (sc.y < lg.top + h / 3)
        out[f"{s} mid zone"] = m & (sc.y >= lg.top + h / 3) & (sc.y < lg.top + 2 * h / 3)
        out[f"{s} lower zone"] = m & (sc.y >= lg.top + 2 * h / 3)
        out[f"{s} apical zone"] = m & (sc.y < lg.top + 0.15 * h)
        out[f"{s} costophrenic angle"] = m & (sc.y > lg.cp_y - 0.09) & (lg.sign * (sc.x - lg.cx) > 0)
        out[f"{s} hemidiaphragm"] = (np.abs(sc.y - lg.dome_y(sc.x)) < 0.015) & (np.abs(sc.x - lg.cx) < lg.aw)
    out["heart"] = sc.heart > 0.5
    out["mediastinum"] = sc.mediastinum > 0.5
    out["trachea"] = (np.abs(sc.x - 0.5) < 0.013) & (sc.y > 0.0) & (sc.y < 0.34)
    return out


# ----------------------------------------------------------------------------- public API
def render_frontal(anatomy: CxrAnatomy, findings: Dict[str, FindingSpec], size: int,
                   view: str = "PA") -> CxrRendering:
    """Render a frontal (PA/AP) radiograph of `anatomy` showing exactly `findings`.

    Pure function of its arguments: the noise and textures come from the anatomy's and each
    finding's seed, so removing one finding leaves every other pixel's recipe unchanged.
    """
    if view == "AP":  # portable AP films magnify the heart slightly and are taken less inspired
        anatomy = replace(anatomy, heart_ctr=min(anatomy.heart_ctr * 1.06, 0.5),
                          dome_right=anatomy.dome_right - 0.015, dome_left=anatomy.dome_left - 0.015)
    sc = _build_scene(size, anatomy, findings)
    masks: Dict[str, np.ndarray] = {}
    att = sc.att
    for name in sorted(findings):
        if name == "Cardiomegaly":  # drawn by the scene: the heart itself is enlarged
            masks[name] = _binary(sc.heart)
            continue
        if name not in _PAINTERS:
            raise ValueError(f"cannot draw finding {name!r}; drawable: {sorted(_PAINTERS) + ['Cardiomegaly']}")
        dA, soft = _PAINTERS[name](sc, findings[name])
        att = att + dA
        masks[name] = _binary(np.asarray(soft, dtype=np.float32))
    nrng = np.random.default_rng([int(anatomy.texture_seed), 2])
    image = _exposure(att, anatomy, nrng)
    boxes = {n: b for n, m in masks.items() if (b := mask_box(m)) is not None}
    regions = {n: b for n, m in _region_masks(sc).items() if (b := mask_box(m)) is not None}
    return CxrRendering(image=image, masks=masks, boxes=boxes, regions=regions, ctr=float(sc.ctr))


def render_lateral(anatomy: CxrAnatomy, findings: Dict[str, FindingSpec], size: int) -> np.ndarray:
    """A simpler lateral view (anterior to the image's left): one lung field, heart, spine,
    sternum and diaphragm, with effusion, cardiomegaly, focal opacities and emphysema shown."""
    a = anatomy
    x, y = _grid(size, replace(a, rot_deg=a.rot_deg * 0.5))
    edge = max(2.0 / size, 0.004)
    trng = np.random.default_rng([int(a.texture_seed), 3])
    body = _soft((np.sqrt(((x - 0.5) / 0.4) ** 2 + ((y - 0.58) / 0.7) ** 2) - 1) * 0.4, 2 * edge)
    att = body * 1.05
    dome, curv, air_scale = a.dome_right + 0.02, 1.3, 1.0
    emph = findings.get("Emphysema")
    if emph is not None:
        dome += 0.05 * _strength(emph)
        curv *= 0.5
        air_scale = 1.2
    lung = _soft((np.sqrt(((x - 0.53) / 0.29) ** 2 + ((y - dome) / (dome - a.lung_top)) ** 2) - 1) * 0.25, edge)
    lung = np.where(y < dome, lung, _soft(np.abs(x - 0.53) - 0.29, edge))
    lung = lung * _soft(y - (dome + curv * (x - 0.35) ** 2), edge)
    ctr = a.heart_ctr
    if "Cardiomegaly" in findings:
        ctr = CARDIOMEGALY_CTR[findings["Cardiomegaly"].severity or "moderate"]
    # The heart sits anteriorly on the diaphragm, behind the sternum.
    hr = 0.15 * ctr / 0.44
    heart = _soft(np.sqrt(((x - 0.2 - hr) / hr) ** 2 + ((y - dome + 0.02) / 0.15) ** 2) - 1, 0.03)
    air = 1.25 * AIR_DEPTH * air_scale * lung * (1 - heart)
    att = att - air
    # Vessels fan out from the hilum (centre of the lung field) and taper.
    rho = np.sqrt((x - 0.5) ** 2 + (y - 0.45) ** 2)
    theta = np.arctan2(y - 0.45, x - 0.5)
    vessel = np.clip(1 - np.abs(np.sin(8.0 * theta + 1.3 * smooth_noise(trng, size, 10))) / 0.2, 0, 1)
    hilum = _soft(np.sqrt(((x - 0.5) / 0.05) ** 2 + ((y - 0.45) / 0.07) ** 2) - 1, 0.4)
    att = att + (0.1 * vessel * vessel * np.exp(-rho / 0.15)) * air / AIR_DEPTH + 0.1 * heart + 0.1 * hilum
    spine = _soft(np.abs(x - 0.85) - 0.05, edge) * body
    att = att + spine * (0.18 + 0.08 * np.cos(2 * np.pi * y / 0.06))
    att = att + 0.12 * _soft(np.abs(x - (0.16 + 0.05 * y)) - 0.012, edge) * _soft(np.abs(y - 0.45) - 0.22, edge)
    for name, spec in sorted(findings.items()):
        rng, k = _finding_rng(spec), _strength(spec)
        if name == "Effusion":
            h = _sev(spec, {"mild": 0.05, "moderate": 0.12, "severe": 0.22})
            level = dome + curv * (0.82 - 0.35) ** 2 - h * (0.5 + 0.5 * np.clip((x - 0.45) / 0.35, 0, 1))
            fluid = np.clip((y - level) / 0.015 + 0.5, 0, 1) * lung
            att = att + 0.95 * k * fluid * air
        elif name in ("Consolidation", "Lung_Opacity", "Nodule", "Mass", "Atelectasis"):
            zy = {"upper": 0.3, "middle": 0.48, "lower": 0.66, "basilar": 0.7}.get(spec.zone or "lower", 0.6)
            cx, cy = float(rng.uniform(0.4, 0.7)), zy + float(rng.uniform(-0.03, 0.03))
            r = {"Nodule": 0.5 * (spec.size_mm or 15) * 0.0025, "Mass": 0.5 * (spec.size_mm or 50) * 0.0025}.get(
                name, 0.08)
            g = _soft(np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r, 2 * edge if r < 0.05 else 0.04)
            att = att + (0.5 if name == "Lung_Opacity" else 0.85) * k * g * air
        elif name == "Edema":
            g = np.exp(-(((x - 0.5) / 0.15) ** 2 + ((y - 0.45) / 0.15) ** 2))
            att = att + _sev(spec, {"mild": 0.3, "moderate": 0.45, "severe": 0.6}) * k * g * air
        elif name == "Support_Devices":
            for dev in spec.devices:
                if dev in ("ett", "ngt"):
                    pts = [(0.5 if dev == "ett" else 0.56, -0.05), (0.5 if dev == "ett" else 0.58, 0.3)]
                    att = att + 0.9 * polyline_mask(x, y, pts, max(0.0045, 0.7 / size), edge)
                elif dev == "pacemaker":
                    att = att + 0.9 * _soft(np.maximum(np.abs(x - 0.25) - 0.03, np.abs(y - 0.22) - 0.025), edge)
    nrng = np.random.default_rng([int(a.texture_seed), 4])
    return _exposure(att, a, nrng)
