"""One inspection session: a run's trained encoders, the studies to inspect and their embeddings.

Everything heavy happens here once (loading the checkpoint, embedding the split); the
embeddings are cached in the run folder under `inspect/embeddings-<key>.npz`, the key hashing
the checkpoint's weights, the split, the modality and the inspected studies, so reopening the
same run reloads them instead of re-running the encoders. Every inspector takes a session.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
import torch

from workbench.data.labels import LABEL_PREFIX, label_column, label_columns
from workbench.io import atomic_path

INSPECT_DIR = "inspect"
ALL_SPLITS = ("train", "val", "test")
ASSERTION_NAMES = {1.0: "present", 0.0: "absent", -1.0: "uncertain"}


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def inspection_key(checkpoint: Path, split: str, modality: str, study_ids: List[str]) -> str:
    """Hash of the checkpoint's weights, the split, the modality and the inspected studies."""
    from workbench.models.checkpoint import WEIGHTS_FILE

    digest = hashlib.sha1(_file_digest(Path(checkpoint) / WEIGHTS_FILE).encode())
    digest.update(f"|{split}|{modality}|".encode())
    digest.update(",".join(study_ids).encode())
    return digest.hexdigest()[:12]


def parse_splits(split: str) -> List[str]:
    """'val', 'train,val' or 'all' -> the split names; an unknown name fails with the known ones."""
    names = list(ALL_SPLITS) if split in ("all", "") else [s.strip() for s in split.split(",") if s.strip()]
    unknown = [s for s in names if s not in ALL_SPLITS]
    if unknown:
        raise ValueError(f"Unknown split {unknown}; use one of {list(ALL_SPLITS)}, a comma list, or 'all'.")
    return names


def select_studies(manifest: pd.DataFrame, splits: List[str], modality: str, max_points: int,
                   seed: int = 0) -> pd.DataFrame:
    """The manifest rows to inspect: chosen splits and modality, at most `max_points` of them
    (a seeded random subset, kept in manifest order, so the same call picks the same studies)."""
    rows = manifest[manifest["split"].astype(str).isin(splits) & manifest["modality"].astype(str).eq(modality)]
    if max_points and len(rows) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=int(max_points), replace=False))
        rows = rows.iloc[keep]
    return rows.reset_index(drop=True)


def gt_findings(gt_json: Any) -> Dict[str, dict]:
    """The generator's ground truth of one study (finding -> {assertion, severity, location});
    empty when the manifest has none (real data)."""
    if not isinstance(gt_json, str) or not gt_json.strip():
        return {}
    try:
        parsed = json.loads(gt_json)
    except json.JSONDecodeError:
        return {}
    return {str(k): (v if isinstance(v, dict) else {"assertion": v}) for k, v in parsed.items()}


def present_findings(row: pd.Series) -> List[str]:
    """Findings a study has (label columns equal to 1), in label order."""
    names = []
    for col in label_columns(row.index):
        value = pd.to_numeric(pd.Series([row[col]]), errors="coerce").iloc[0]
        if value == 1:
            names.append(col[len(LABEL_PREFIX):])
    return names


def primary_finding(row: pd.Series) -> str:
    """One colour per study: its single present finding, 'no finding', or 'several findings'."""
    found = present_findings(row)
    if not found:
        return "no finding"
    return found[0] if len(found) == 1 else "several findings"


def assertion_of(row: pd.Series, finding: str) -> str:
    """present / absent / uncertain / unmentioned of one finding in one study."""
    col = label_column(finding)
    if col not in row.index:
        return "unmentioned"
    value = pd.to_numeric(pd.Series([row[col]]), errors="coerce").iloc[0]
    return ASSERTION_NAMES.get(float(value), "unmentioned") if pd.notna(value) else "unmentioned"


def phrase_of(finding: str) -> str:
    """The words a report would use for a finding name ('Lung_Opacity' -> 'lung opacity')."""
    return finding.replace("_", " ").lower()


def load_finding_masks(mask_path: str, size: Optional[int] = None) -> Dict[str, np.ndarray]:
    """The generator's boolean masks (finding -> [H, W]) of one study, letterboxed to the cache's
    `size` exactly as the image was, so masks and cached images share pixels."""
    if not isinstance(mask_path, str) or not mask_path:
        return {}
    path = Path(mask_path)
    if not path.is_file():
        raise FileNotFoundError(f"Mask file {path} named in the manifest's mask_path is missing; regenerate the "
                                "demo data (notebooks/00_data_prep.ipynb) or drop the column.")
    from workbench.data.cache import letterbox

    masks: Dict[str, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as stored:
        for name in stored.files:
            mask = np.asarray(stored[name]).astype(bool)
            if mask.ndim == 2 and size is not None and mask.shape != (size, size):
                mask = letterbox(mask.astype(np.uint8) * 255, size) > 127
            masks[name] = mask
    return masks


@dataclass
class InspectionSession:
    """A run's encoders and the embedded studies every inspector reads (row i = study i)."""

    run_dir: Path
    checkpoint: Path
    split: str
    modality: str
    model: torch.nn.Module
    frame: pd.DataFrame
    dataset: Any  # workbench.data.StudyDataset over `frame`
    image_emb: np.ndarray
    text_emb: np.ndarray
    key: str
    computed: bool = False  # True when the embeddings were computed (not loaded) by this session
    extras: Dict[str, Any] = field(default_factory=dict)

    @property
    def inspect_dir(self) -> Path:
        return self.run_dir / INSPECT_DIR

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __len__(self) -> int:
        return len(self.frame)

    def study_ids(self) -> List[str]:
        return [str(s) for s in self.frame["study_id"]]

    def index_of(self, study_id: str) -> int:
        ids = self.study_ids()
        if study_id not in ids:
            raise KeyError(f"Study {study_id!r} is not among the {len(ids)} inspected studies of split {self.split!r}.")
        return ids.index(study_id)

    def report(self, i: int) -> str:
        return str(self.frame["report"].iat[i])

    def model_input(self, i: int) -> torch.Tensor:
        """The model-ready image of study i ([3, H, W] or [1, D, H, W]), as evaluation sees it."""
        return self.dataset.transform(self.dataset.raw_image(i))

    def display_image(self, i: int) -> np.ndarray:
        """The cached uint8 image of study i ([H, W], or [D, H, W] for a volume)."""
        return self.dataset.raw_image(i)[0].numpy()

    def finding_masks(self, i: int) -> Dict[str, np.ndarray]:
        """Ground-truth masks of study i at the displayed resolution (2D demo data only)."""
        if "mask_path" not in self.frame.columns or self.modality != "cxr":
            return {}
        size = int(self.display_image(i).shape[-1])
        return load_finding_masks(str(self.frame["mask_path"].iat[i]), size)


def _modality_of(checkpoint: Path) -> str:
    meta = json.loads((checkpoint / "encoders.json").read_text())
    return "ct" if str(meta.get("image_encoder", "")).endswith("_3d") else "cxr"


def _embed(model, dataset, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from workbench.eval.embed import compute_features, project_features

    feats = compute_features(model, dataset, batch_size=32, progress=progress, desc="embedding studies")
    return project_features(model, feats.image_features, feats.text_features)


def open_session(run_dir: str | os.PathLike = "", method: str = "", split: str = "val", max_points: int = 2000,
                 device: str = "auto", progress: bool = True) -> InspectionSession:
    """Load a run's newest (or `method`'s) checkpoint and embed the studies of `split`, once.

    `run_dir` empty: the newest run folder with a trained model under `train/`. `split` is a
    split name, a comma list or 'all'. Embeddings are cached under `run_dir/inspect/`.
    """
    from workbench.data import StudyDataset, read_manifest
    from workbench.models import find_checkpoint, load_encoders, resolve_device
    from workbench.runs import find_run_dir

    run = find_run_dir("train", run_dir or None)
    checkpoint = find_checkpoint(run, method or None)
    modality = _modality_of(checkpoint)
    manifest = read_manifest(run / "manifest.parquet")
    rows = select_studies(manifest, parse_splits(split), modality, max_points)
    if rows.empty:
        raise ValueError(f"{run / 'manifest.parquet'} has no {modality} studies in split {split!r}; "
                         "choose another split (train, val, test, all) or run notebooks/00_data_prep.ipynb.")
    model = load_encoders(checkpoint, device=resolve_device(device))
    dataset = StudyDataset(rows, run / "cache", split=None, modality=modality, fields=("image", "text"))
    if len(dataset) == 0:
        raise ValueError(f"None of the {len(rows)} selected studies has a cached image in {run / 'cache'}; "
                         "re-run notebooks/00_data_prep.ipynb for this run folder.")
    frame = dataset.frame
    ids = [str(s) for s in frame["study_id"]]
    key = inspection_key(checkpoint, split, modality, ids)
    path = run / INSPECT_DIR / f"embeddings-{key}.npz"
    computed = False
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            image_emb, text_emb = stored["image_emb"], stored["text_emb"]
            cached_ids = [str(s) for s in stored["study_ids"]]
        if cached_ids != ids:  # a hash collision or a hand-edited file: recompute
            path.unlink()
    if not path.is_file():
        image_emb, text_emb = _embed(model, dataset, progress)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, study_ids=np.asarray(ids, dtype=str), image_emb=image_emb, text_emb=text_emb)
        computed = True
    return InspectionSession(run_dir=run, checkpoint=checkpoint, split=split, modality=modality, model=model,
                             frame=frame, dataset=dataset, image_emb=np.asarray(image_emb, np.float32),
                             text_emb=np.asarray(text_emb, np.float32), key=key, computed=computed)
