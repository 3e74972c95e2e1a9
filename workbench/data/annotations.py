"""Dense annotations of the seeds' downstream sets, read into one form: masks and boxes per image.

The seeds judge an image encoder by fine-tuning it for segmentation and detection (MGCA, Wang et
al. 2022 §4.1; CM-CGNS and ASG follow it): SIIM-ACR pneumothorax masks (Dice), RSNA pneumonia
boxes (mAP) and Object-CXR foreign-object annotations (mAP). Each reader turns its release's CSV
into `DenseAnnotations` keyed by image id (SIIM `ImageId`, RSNA `patientId`, Object-CXR
`image_name` stem), which is also the file stem of the released images, so a manifest of those
images finds its targets by study id or by image file stem. The demo's own ground truth
(`masks/<study_id>.npz` and `finding_boxes`, written by `workbench.data.phantom`) reads into the
same form with `demo_annotations`.

Boxes are float [x0, y0, x1, y1] in pixels of the stored image (x1, y1 exclusive, as the phantom
writes them); masks are boolean [H, W] in the stored image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

SIIM_COLUMNS = ("ImageId", "EncodedPixels")
RSNA_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
OBJECT_CXR_COLUMNS = ("image_name", "annotation")
SIIM_SIZE = (1024, 1024)  # every SIIM-ACR radiograph is 1024 x 1024


class AnnotationError(ValueError):
    """An annotation file or entry that cannot be read; the message names the file and the fix."""


# ----------------------------------------------------------------------------- SIIM run lengths
def rle_decode(encoded: str, height: int, width: int, source: str = "") -> np.ndarray:
    """SIIM-ACR's run-length string -> bool [height, width] mask.

    SIIM's convention: pairs `start length` where each start counts from the END of the previous
    run (relative; the first from pixel 0), over pixels in column-major order (down each column,
    then the next column). "-1" or an empty string is an empty mask.
    """
    text = str(encoded).strip()
    mask = np.zeros(height * width, dtype=bool)
    if text in ("", "-1", "nan"):
        return mask.reshape(width, height).T
    where = f" in {source}" if source else ""
    try:
        values = np.asarray([int(v) for v in text.split()], dtype=np.int64)
    except ValueError:
        raise AnnotationError(f"EncodedPixels {text[:40]!r}{where} is not a list of integers; SIIM's RLE is "
                              f"'start length start length ...' (relative starts) or -1 for an empty mask.") from None
    if len(values) % 2 or (values < 0).any():
        raise AnnotationError(f"EncodedPixels{where} has {len(values)} values (needs start/length pairs of "
                              f"non-negative integers); re-export the mask with rle_encode.")
    position = 0
    for start, length in zip(values[0::2], values[1::2]):
        position += int(start)
        if position + int(length) > mask.size:
            raise AnnotationError(f"EncodedPixels{where} runs past the end of a {height} x {width} image "
                                  f"(pixel {position + int(length)} > {mask.size}); give the image's true size.")
        mask[position:position + int(length)] = True
        position += int(length)
    return mask.reshape(width, height).T


def rle_encode(mask: np.ndarray) -> str:
    """bool [H, W] mask -> SIIM's relative, column-major run-length string ("-1" when empty)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    if len(edges) == 0:
        return "-1"
    starts, ends = edges[0::2], edges[1::2]
    previous_end = np.concatenate([[0], ends[:-1]])
    return " ".join(f"{s - p} {e - s}" for s, e, p in zip(starts, ends, previous_end))


# ----------------------------------------------------------------------------- the common form
@dataclass
class DenseAnnotations:
    """Masks (lazily decoded) and boxes per image id, from one source.

    `masks[id]` is a callable returning the bool mask in the stored image (decoding is deferred:
    SIIM holds 12,000 1024 x 1024 masks); `boxes[id]` a float [N, 4] xyxy array (N may be 0).
    An id absent from both is unannotated; an id present with an empty mask / no boxes is a
    negative image (SIIM's "-1", RSNA's Target 0, Object-CXR's empty annotation).
    """

    source: str
    masks: Dict[str, object] = field(default_factory=dict)
    boxes: Dict[str, np.ndarray] = field(default_factory=dict)

    def key(self, study_id: str, image_path: str = "") -> Optional[str]:
        """The id under which a manifest row is annotated: its study id, else its image's file stem."""
        for candidate in (str(study_id), Path(str(image_path)).stem if image_path else ""):
            if candidate and (candidate in self.masks or candidate in self.boxes):
                return candidate
        return None

    def mask(self, key: str) -> Optional[np.ndarray]:
        loader = self.masks.get(key)
        return None if loader is None else np.asarray(loader(), dtype=bool)  # type: ignore[operator]

    def box_array(self, key: str) -> Optional[np.ndarray]:
        value = self.boxes.get(key)
        if value is None and key in self.masks:  # a mask without boxes: boxes of its extent
            mask = self.mask(key)
            return mask_boxes(mask) if mask is not None else None
        return value


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """[1, 4] xyxy (exclusive ends) around a non-empty mask, [0, 4] for an empty one."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return np.zeros((0, 4), np.float32)
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return np.asarray([[x0, y0, x1 + 1, y1 + 1]], np.float32)


def _read_table(path: str | Path, columns: Sequence[str], what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} annotation file {path} does not exist; give the CSV released with the "
                                f"dataset (columns {list(columns)}).")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise AnnotationError(f"{path} lacks columns {missing} (has {list(table.columns)}); a {what} file has "
                              f"columns {list(columns)}.")
    return table


def read_siim(path: str | Path, size: Tuple[int, int] = SIIM_SIZE) -> DenseAnnotations:
    """SIIM-ACR `train-rle.csv` (`ImageId, EncodedPixels`): an image with several rows (several
    pneumothorax instances) gets their union, the mask Kaggle's metric scores."""
    table = _read_table(path, SIIM_COLUMNS, "SIIM-ACR")
    height, width = int(size[0]), int(size[1])
    grouped: Dict[str, List[str]] = {}
    for image_id, encoded in zip(table["ImageId"].str.strip(), table["EncodedPixels"]):
        grouped.setdefault(image_id, []).append(encoded)
    for image_id, codes in grouped.items():  # fail at read time, not mid-training
        for code in codes:
            _check_rle(code, height * width, f"{path} (ImageId {image_id})")

    def loader(codes: List[str], image_id: str):
        def decode() -> np.ndarray:
            out = np.zeros((height, width), dtype=bool)
            for code in codes:
                out |= rle_decode(code, height, width, f"{path} (ImageId {image_id})")
            return out
        return decode

    return DenseAnnotations("siim", masks={k: loader(v, k) for k, v in grouped.items()})


def _check_rle(code: str, n_pixels: int, source: str) -> None:
    text = str(code).strip()
    if text in ("", "-1"):
        return
    try:
        values = [int(v) for v in text.split()]
    except ValueError:
        raise AnnotationError(f"EncodedPixels {text[:40]!r} in {source} is not a list of integers; SIIM's RLE is "
                              f"'start length ...' (relative starts) or -1 for an empty mask.") from None
    if len(values) % 2 or min(values) < 0 or sum(values) > n_pixels:
        raise AnnotationError(f"EncodedPixels in {source} is not a valid run-length code for {n_pixels} pixels "
                              f"(odd count, negative value or past the image end); check the image size.")


def read_rsna(path: str | Path) -> DenseAnnotations:
    """RSNA Pneumonia `stage_2_train_labels.csv` (`patientId, x, y, width, height, Target`): one
    row per box (Target 1) or one row with empty coordinates for a negative image (Target 0)."""
    table = _read_table(path, RSNA_COLUMNS, "RSNA pneumonia")
    boxes: Dict[str, List[List[float]]] = {}
    for line, row in enumerate(table.itertuples(index=False), start=2):
        pid = str(row.patientId).strip()
        boxes.setdefault(pid, [])
        if str(row.Target).strip() not in ("1", "1.0"):
            continue
        try:
            x, y, w, h = (float(v) for v in (row.x, row.y, row.width, row.height))
        except ValueError:
            raise AnnotationError(f"{path} line {line} (patientId {pid}) has Target 1 but no numeric x, y, width, "
                                  f"height; fix the row or set Target 0.") from None
        if w <= 0 or h <= 0:
            raise AnnotationError(f"{path} line {line} (patientId {pid}) has a box of width {w} x height {h}; "
                                  f"boxes need positive sizes.")
        boxes[pid].append([x, y, x + w, y + h])
    return DenseAnnotations("rsna", boxes={k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in boxes.items()})


def _object_cxr_shape(entry: str, source: str) -> np.ndarray:
    """One Object-CXR shape `TYPE x1 y1 x2 y2 [...]` -> its [x0, y0, x1, y1] box: 0 rectangle and
    1 ellipse give their bounding box directly, 2 polygon the extent of its points."""
    parts = entry.split()
    try:
        kind, coords = int(parts[0]), np.asarray([float(v) for v in parts[1:]], np.float64)
    except (ValueError, IndexError):
        raise AnnotationError(f"Object-CXR shape {entry!r} in {source} is not 'TYPE x1 y1 x2 y2 ...' with TYPE 0 "
                              f"(rectangle), 1 (ellipse) or 2 (polygon).") from None
    if kind in (0, 1) and len(coords) == 4:
        x0, y0, x1, y1 = coords
    elif kind == 2 and len(coords) >= 6 and len(coords) % 2 == 0:
        xs, ys = coords[0::2], coords[1::2]
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    else:
        raise AnnotationError(f"Object-CXR shape {entry!r} in {source}: type {kind} with {len(coords)} coordinates "
                              f"(rectangle/ellipse take 4, a polygon at least 3 points).")
    if x1 <= x0 or y1 <= y0:
        raise AnnotationError(f"Object-CXR shape {entry!r} in {source} has x1 <= x0 or y1 <= y0; the release "
                              f"gives upper-left then lower-right corners.")
    return np.asarray([x0, y0, x1, y1], np.float32)


def read_object_cxr(path: str | Path) -> DenseAnnotations:
    """Object-CXR `train.csv` / `dev.csv` (`image_name, annotation`): shapes separated by ';',
    an empty annotation for an image without foreign objects. Keyed by the image name's stem."""
    table = _read_table(path, OBJECT_CXR_COLUMNS, "Object-CXR")
    boxes: Dict[str, np.ndarray] = {}
    for name, annotation in zip(table["image_name"], table["annotation"]):
        key = Path(str(name).strip()).stem
        shapes = [s.strip() for s in str(annotation).split(";") if s.strip()]
        where = f"{path} ({name})"
        boxes[key] = np.stack([_object_cxr_shape(s, where) for s in shapes]) if shapes else np.zeros((0, 4), np.float32)
    return DenseAnnotations("object_cxr", boxes=boxes)


# ----------------------------------------------------------------------------- the demo's own
def demo_annotations(manifest: pd.DataFrame, findings: Sequence[str]) -> DenseAnnotations:
    """The phantom generator's masks and boxes of `findings` (union per study), for every row of
    `manifest` that has a `mask_path`; a study without any of them is a negative image."""
    if "mask_path" not in manifest.columns:
        raise AnnotationError("The manifest has no mask_path column: dense targets need the demo data "
                              "(dataset=demo) or a SIIM / RSNA / Object-CXR annotation file.")
    wanted = [f.replace("_", " ") for f in findings] + [f.replace(" ", "_") for f in findings]
    masks: Dict[str, object] = {}
    boxes: Dict[str, np.ndarray] = {}
    for sid, mask_path, box_json in zip(manifest["study_id"].astype(str), manifest["mask_path"].astype(str),
                                        manifest.get("finding_boxes", pd.Series([""] * len(manifest))).astype(str)):
        if not mask_path:
            continue
        stored = json.loads(box_json) if box_json else {}
        boxes[sid] = np.asarray([stored[k] for k in dict.fromkeys(wanted) if k in stored], np.float32).reshape(-1, 4)
        masks[sid] = _npz_union(mask_path, wanted)
    return DenseAnnotations("demo", masks=masks, boxes=boxes)


def _npz_union(path: str, names: Sequence[str]):
    def load() -> np.ndarray:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Mask file {path} is missing; regenerate the demo data (notebook 00) or "
                                    f"point the manifest's mask_path at the masks/ folder.")
        with np.load(path, allow_pickle=False) as z:
            arrays = [z[n] for n in dict.fromkeys(names) if n in z.files]
            shape = z[z.files[0]].shape if z.files else None
        if shape is None:
            return np.zeros((0, 0), bool)  # a study with no drawn finding: size taken from the image
        return np.any(np.stack(arrays), axis=0) if arrays else np.zeros(shape, bool)
    return load


def demo_finding_counts(manifest: pd.DataFrame) -> Mapping[str, int]:
    """How many studies of the manifest have a box of each finding (for choosing targets)."""
    counts: Dict[str, int] = {}
    for box_json in manifest.get("finding_boxes", pd.Series(dtype=str)).astype(str):
        for name in (json.loads(box_json) if box_json else {}):
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def read_annotations(path: str | Path) -> DenseAnnotations:
    """Any of the three released formats, told apart by their header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file {path} does not exist; give SIIM-ACR's train-rle.csv, RSNA's "
                                f"stage_2_train_labels.csv or Object-CXR's train.csv.")
    header = [c.strip() for c in pd.read_csv(path, nrows=0).columns]
    if set(SIIM_COLUMNS) <= set(header):
        return read_siim(path)
    if set(RSNA_COLUMNS) <= set(header):
        return read_rsna(path)
    if set(OBJECT_CXR_COLUMNS) <= set(header):
        return read_object_cxr(path)
    raise AnnotationError(f"{path} has columns {header}: not SIIM-ACR {list(SIIM_COLUMNS)}, RSNA "
                          f"{list(RSNA_COLUMNS)} or Object-CXR {list(OBJECT_CXR_COLUMNS)}.")
