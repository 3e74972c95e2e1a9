"""ASG: anatomical-structure-guided image-report alignment (Li et al. 2024; issue 8).

Loss terms (each switchable by `method.loss_weights`, weight 0 = not computed):
  ira   image-report alignment: symmetric InfoNCE with CLIP's learnable temperature.
  arsa  anatomical region-sentence alignment: patch feature map RoI-aligned inside each
        anatomical box (`parts.region_features`), projected, contrasted with the report
        sentence describing that region, within each image (`parts.region_sentence_loss`).
  irl   image tag recognition: learnable tag queries decoded over patch tokens, BCE against
        the study's entity labels (`label_<Name>` columns: OBER's output, or the generator's
        truth on the demo; uncertain labels left out, unmentioned = absent).
  erl   entity-guided soft alignment: KL between soft targets from label-vector similarity
        and the image-report similarity distribution (`parts.soft_label_alignment_loss`).

Region boxes and sentences come from the data: the manifest's `regions` JSON column (the demo
generator writes it: a list of {name, box [x0, y0, x1, y1] in pixels of the stored image,
sentence}) or, for real data, `data.boxes_file`: a CSV with one row per region and columns
`study_id`, `name` (or Chest ImaGenome's `bbox_name`), `x1, y1, x2, y2` (or `original_x1` ...
`original_y2`; pixels of the stored image) and `sentence` (or `phrase`). Boxes are mapped onto
the cached, letterboxed image. Without any boxes ARSA is switched off with one message.
Images keep their geometry (no random crop) so the boxes stay true.

Where the public code (ASGMVLP/ASGMVLP_CODE) differs: it ships no region data and no
evaluation; its README's settings (lr 4e-5, batch 72, 256 px resized then 224 px random
crops) are recorded in workbench/configs/asg.yaml except the random crop (boxes).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from workbench.config import ExperimentConfig
from workbench.methods.base import Method, MethodConfigError, collate_items
from workbench.methods.losses import symmetric_info_nce
from workbench.methods.params import MethodParams, parse_params
from workbench.methods.parts.regions import region_features, region_sentence_loss
from workbench.methods.parts.tags import TagQueryDecoder, soft_label_alignment_loss, tag_bce_loss
from workbench.methods.registry import METHODS

BOX_COLUMNS = {"name": ("name", "bbox_name"), "x1": ("x1", "original_x1"), "y1": ("y1", "original_y1"),
               "x2": ("x2", "original_x2"), "y2": ("y2", "original_y2"), "sentence": ("sentence", "phrase")}


@dataclass(frozen=True)
class ASGParams(MethodParams):
    """ASG's knobs: temperatures, the RoI size, and the tag decoder (num_tags unset: the
    manifest's label_ columns)."""

    region_temperature: float = 0.1
    label_temperature: float = 0.1
    roi_output_size: int = 3
    num_tags: Optional[int] = None
    tag_dim: int = 128
    tag_layers: int = 1
    tag_heads: int = 4


def default_num_tags(cfg: ExperimentConfig) -> int:
    """Entity labels the tag decoder predicts: `method.params.num_tags`, else the size of the
    configured label set (`data.label_set`)."""
    p = parse_params(ASGParams, cfg.method.params, "asg")
    if p.num_tags is not None:
        return p.num_tags
    if cfg.data.label_set == "demo":
        from workbench.data.labels import DEMO_CT_LABELS, DEMO_LABELS

        return len(DEMO_CT_LABELS if cfg.data.modality == "ct" else DEMO_LABELS)
    from importlib import resources

    import yaml

    path = Path(str(resources.files("workbench") / "ober" / "ontology" / "labelsets" / f"{cfg.data.label_set}.yaml"))
    if path.is_file():
        return len((yaml.safe_load(path.read_text()) or {}).get("labels", {}))
    raise MethodConfigError(f"asg cannot tell how many entity labels label set {cfg.data.label_set!r} has; "
                            "set method.params.num_tags to the number of label_ columns of the manifest.")


def read_boxes_file(path: str | Path) -> Dict[str, List[Dict[str, Any]]]:
    """A region-boxes CSV (see module docstring) -> study_id -> list of {name, box, sentence}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.boxes_file {path} does not exist; give a CSV of region boxes or leave it empty.")
    frame = pd.read_csv(path)
    found: Dict[str, str] = {}
    for key, options in BOX_COLUMNS.items():
        column = next((c for c in options if c in frame.columns), None)
        if column is None:
            raise MethodConfigError(f"{path} lacks a {' or '.join(options)} column; columns must be study_id, name, "
                                    "x1, y1, x2, y2, sentence (Chest ImaGenome's bbox_name/original_x1.. also work).")
        found[key] = column
    if "study_id" not in frame.columns:
        raise MethodConfigError(f"{path} lacks a study_id column naming each region's study.")
    out: Dict[str, List[Dict[str, Any]]] = {}
    for row in frame.itertuples(index=False):
        row = row._asdict()
        sentence = row[found["sentence"]]
        if not isinstance(sentence, str) or not sentence.strip():
            continue  # a region no sentence describes cannot be matched
        box = [float(row[found[k]]) for k in ("x1", "y1", "x2", "y2")]
        out.setdefault(str(row["study_id"]), []).append({"name": str(row[found["name"]]), "box": box,
                                                         "sentence": sentence})
    return out


def _stored_size(path: str) -> Tuple[int, int]:
    """(height, width) of a stored image from its header (no full decode)."""
    if str(path).lower().endswith(".dcm"):
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    from PIL import Image

    with Image.open(path) as img:
        return int(img.height), int(img.width)


def letterbox_boxes(boxes: np.ndarray, stored_hw: Tuple[int, int], size: int) -> np.ndarray:
    """Map [R, 4] boxes from stored-image pixels onto the cache's letterboxed [size, size]
    image (longer side scaled to `size`, centred; `workbench.data.cache.letterbox`)."""
    h, w = stored_hw
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    sx, sy = new_w / w, new_h / h
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = out[:, [0, 2]] * sx + left
    out[:, [1, 3]] = out[:, [1, 3]] * sy + top
    return out


class RegionField:
    """Dataset field loader (`StudyDataset(extra_fields={"regions": RegionField(...)})`):
    item -> {"boxes": float [R, 4] in model-input pixels, "sentences": list of R str}."""

    def __init__(self, by_study: Optional[Mapping[str, List[Dict[str, Any]]]] = None) -> None:
        self.by_study = dict(by_study) if by_study is not None else None
        self._sizes: Dict[int, Tuple[int, int]] = {}

    def regions_of(self, ds, i: int) -> List[Dict[str, Any]]:
        if self.by_study is not None:
            return list(self.by_study.get(str(ds.frame["study_id"].iat[i]), []))
        if "regions" not in ds.frame.columns:
            return []
        value = ds.frame["regions"].iat[i]
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            return []
        return list(json.loads(value) if isinstance(value, str) else value)

    @staticmethod
    def merge_by_sentence(regions: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """One region per distinct sentence: a sentence describing several regions ("no
        effusion" for both lungs) gets the union of their boxes, so the within-image contrast
        never treats two descriptions of the same text as competitors. Regions without a
        sentence are dropped."""
        merged: Dict[str, List[float]] = {}
        for region in regions:
            sentence = str(region.get("sentence") or "").strip()
            if not sentence:
                continue
            x0, y0, x1, y1 = (float(v) for v in region["box"])
            if sentence in merged:
                b = merged[sentence]
                merged[sentence] = [min(b[0], x0), min(b[1], y0), max(b[2], x1), max(b[3], y1)]
            else:
                merged[sentence] = [x0, y0, x1, y1]
        return [{"box": box, "sentence": sentence} for sentence, box in merged.items()]

    def __call__(self, ds, i: int) -> Dict[str, Any]:
        regions = self.merge_by_sentence(self.regions_of(ds, i))
        if not regions:
            return {"boxes": torch.zeros(0, 4), "sentences": []}
        if i not in self._sizes:
            self._sizes[i] = _stored_size(str(ds.frame["image_path"].iat[i]))
        size = int(ds.cache.array.shape[-1])  # the cache's letterboxed side (memory-mapped, no read)
        boxes = letterbox_boxes(np.asarray([r["box"] for r in regions], dtype=np.float32), self._sizes[i], size)
        return {"boxes": torch.from_numpy(boxes), "sentences": [r["sentence"] for r in regions]}


@METHODS.register("asg")
class ASG(Method):
    """IRA + ARSA + IRL + ERL; see the module docstring."""

    name = "asg"
    Params = ASGParams
    loss_terms = ("ira", "arsa", "irl", "erl")
    default_loss_weights = {"ira": 1.0, "arsa": 1.0, "irl": 1.0, "erl": 1.0}
    required_fields = ("image", "text", "labels", "regions")

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, heads: Optional[Mapping[str, nn.Module]] = None) -> None:
        super().__init__(cfg, model, heads)
        self.region_temperature = self.p.region_temperature
        self.label_temperature = self.p.label_temperature
        self.roi_output = self.p.roi_output_size
        self.num_tags = int(self.heads["tags"].queries.shape[0])

    @classmethod
    def build(cls, cfg: ExperimentConfig) -> "ASG":
        from workbench.models import ProjectionHead, build_dual_encoder

        p = cls.parse_params(cfg)
        model = build_dual_encoder(cfg.models)
        token_dim = int(model.image_encoder.token_dim)
        heads = {
            "region_proj": ProjectionHead(token_dim, cfg.models.embed_dim, cfg.models.projection),
            "tags": TagQueryDecoder(default_num_tags(cfg), token_dim, dim=p.tag_dim, num_layers=p.tag_layers,
                                    num_heads=p.tag_heads),
        }
        return cls(cfg, model, heads)

    # ------------------------------------------------------------------ data
    def switch_off_arsa(self, reason: str) -> None:
        """Drop the region term for this run, with one message saying why and how to enable it."""
        if self.loss_weights.get("arsa", 0.0) == 0:
            return
        warnings.warn(f"asg: ARSA (region-sentence alignment) is switched off: {reason}. Give region boxes via the "
                      "manifest's `regions` column or data.boxes_file (see workbench/methods/asg.py).", stacklevel=2)
        self.loss_weights["arsa"] = 0.0
        self.active_terms.discard("arsa")

    def study_dataset(self, run_dir, split: str, fields: Sequence[str], transform, text_mode: str):
        from workbench.data import StudyDataset
        from workbench.data.manifest import read_manifest

        run_dir = Path(run_dir)
        manifest = read_manifest(run_dir / "manifest.parquet")
        fields = list(fields)
        extra = {}
        if "regions" in fields:
            by_study = read_boxes_file(self.cfg.data.boxes_file) if self.cfg.data.boxes_file else None
            has_boxes = by_study is not None or ("regions" in manifest.columns and manifest["regions"].notna().any())
            if has_boxes and self.loss_weights.get("arsa", 0.0) != 0:
                extra["regions"] = RegionField(by_study)
            else:
                fields.remove("regions")
                if not has_boxes:
                    self.switch_off_arsa(f"the run folder {run_dir} has no region boxes")
        dataset = StudyDataset(manifest, run_dir / "cache", split=split, modality=self.cfg.data.modality,
                               fields=tuple(fields), transform=transform, text_mode=text_mode, extra_fields=extra)
        if "labels" in fields and len(dataset.label_names) != self.num_tags and self.term_on_any("irl", "erl"):
            raise MethodConfigError(
                f"asg's tag decoder has {self.num_tags} tags but the manifest in {run_dir} has "
                f"{len(dataset.label_names)} label_ columns; set method.params.num_tags={len(dataset.label_names)} "
                "(or data.label_set to the set that labelled it)."
            )
        return dataset

    def term_on_any(self, *terms: str) -> bool:
        return any(self.loss_weights.get(t, 0.0) != 0 for t in terms)

    def collate(self, items: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        """Default collate plus ragged regions: boxes as a list of [R_i, 4] tensors, sentences
        tokenised once for the whole batch with the owning image of each (`region_image`)."""
        regions = [item.get("regions") for item in items]
        rest = [{k: v for k, v in item.items() if k != "regions"} for item in items]
        batch = collate_items(rest, self.tokenize)
        if regions and regions[0] is not None:
            batch["region_boxes"] = [r["boxes"] for r in regions]
            sentences = [s for r in regions for s in r["sentences"]]
            batch["region_image"] = torch.tensor([i for i, r in enumerate(regions) for _ in r["sentences"]],
                                                 dtype=torch.long)
            if sentences:
                tokens = self.tokenize(sentences)
                batch["region_input_ids"] = tokens["input_ids"]
                batch["region_attention_mask"] = tokens["attention_mask"]
        return batch

    # ------------------------------------------------------------------ objective
    def losses(self, batch: Mapping[str, Any]) -> Dict[str, Tensor]:
        images = batch["image"]
        terms: Dict[str, Tensor] = {}
        image_emb, image_out = self.model.forward_image(images, normalize=False)
        need_text = self.term_on("ira") or self.term_on("erl")
        text_emb = (self.model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=False)
                    if need_text else None)
        if self.term_on("ira"):
            terms["ira"] = symmetric_info_nce(self.gather(image_emb), self.gather(text_emb), self.model.logit_scale)
        if self.term_on("erl"):
            terms["erl"] = soft_label_alignment_loss(self.gather(image_emb), self.gather(text_emb),
                                                     self.gather(batch["labels"]), self.model.logit_scale,
                                                     self.label_temperature)
        if self.term_on("irl"):
            labels = batch["labels"]
            if labels.shape[-1] != self.num_tags:
                raise MethodConfigError(f"asg's tag decoder has {self.num_tags} tags but the batch has "
                                        f"{labels.shape[-1]} labels; set method.params.num_tags={labels.shape[-1]}.")
            terms["irl"] = tag_bce_loss(self.heads["tags"](image_out.tokens), labels)
        if self.term_on("arsa") and "region_input_ids" in batch:
            terms["arsa"] = self.region_loss(image_out, batch, tuple(images.shape[-2:]))
        return terms

    def region_loss(self, image_out, batch: Mapping[str, Any], image_hw: Tuple[int, int]) -> Tensor:
        """ARSA: RoI-aligned region features vs their sentences, contrasted within each image."""
        h, w = image_out.grid
        fmap = image_out.tokens.transpose(1, 2).reshape(image_out.tokens.shape[0], -1, h, w)
        feats = region_features(fmap, batch["region_boxes"], image_hw, self.roi_output)
        regions = self.heads["region_proj"](feats)
        sentences = self.model.encode_text(batch["region_input_ids"], batch["region_attention_mask"], normalize=False)
        return region_sentence_loss(regions, sentences, batch["region_image"], self.region_temperature)
