"""`medtrim`: multimodal triplet learning over mined (anchor, positive, negative) studies
(MedTrim, Meta-Entity Driven Triplet Mining, Sec. 3.3).

Triplets come from the run folder's `triplets.csv.xz` (columns anchor, positive, negative:
study ids; written by notebook 02) or `data.triplet_csv`. Each step samples a batch of
triplets; a run's budget is a number of steps (`training.max_steps`), never a pass over all
mined triplets, and an "epoch" (between validations) is `method.params.steps_per_epoch` steps
(default: as many triplets as there are training studies).

Loss terms (weights in `method.loss_weights`, 0 switches a term off):
  ii, it, tt, ti  the seed's four cosine-distance triplet terms, margin `models.margin` (0.3);
                  weight 0.5 each reproduces the seed's image side (ii + it) / 2 plus text
                  side (tt + ti) / 2
  pair            symmetric InfoNCE between each anchor image and its own report; off (0)
                  by default, as in the seed
Unlike the seed, which takes a classification head's logits as embeddings, the embeddings
here are pooled encoder features through the projection heads, as for every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from workbench.methods.base import Method, MethodConfigError
from workbench.methods.params import MethodParams
from workbench.mining.table import read_triplets
from workbench.methods.losses import TRIPLET_TERMS, medtrim_triplet_terms, symmetric_info_nce
from workbench.methods.registry import METHODS

TRIPLET_FILE = "triplets.csv.xz"
MEMBERS = ("anchor", "positive", "negative")


class TripletDataset(Dataset):
    """Item i = triplet i: {"anchor": study item, "positive": ..., "negative": ...}, each a
    `StudyDataset` item (image, text, study_id). Triplets with a member outside `studies` are
    dropped (e.g. a member of another split), and the count is kept in `dropped`."""

    def __init__(self, triplets: pd.DataFrame, studies: Dataset, source: str = "triplets") -> None:
        missing = [c for c in MEMBERS if c not in triplets.columns]
        if missing:
            raise MethodConfigError(f"{source} lacks columns {missing}; it needs anchor, positive, negative "
                                    "(study ids), as notebooks/02_triplet_mining.ipynb writes.")
        self.studies = studies
        ids = studies.frame["study_id"].astype(str)  # type: ignore[attr-defined]
        position = pd.Series(range(len(ids)), index=ids.to_numpy())
        members = triplets[list(MEMBERS)].astype(str)
        known = members.isin(position.index).all(axis=1)
        self.dropped = int((~known).sum())
        members = members[known]
        if members.empty:
            raise MethodConfigError(f"No triplet of {source} has all three members among the "
                                    f"{len(ids)} training studies; mine triplets on this run's train split.")
        columns = [position.reindex(members[c].to_numpy()).to_numpy() for c in MEMBERS]
        self.index = torch.from_numpy(np.stack(columns, axis=1).astype(np.int64))

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, i: int) -> Dict[str, Any]:
        a, p, n = self.index[i].tolist()
        return {"anchor": self.studies[a], "positive": self.studies[p], "negative": self.studies[n]}


@dataclass(frozen=True)
class MedTrimParams(MethodParams):
    """MedTrim's knobs; `margin` unset falls back to the seed's `models.margin`."""

    margin: Optional[float] = None  # triplet margin on cosine similarity


@METHODS.register("medtrim")
class MedTrimMethod(Method):
    name = "medtrim"
    Params = MedTrimParams
    loss_terms = ("ii", "it", "tt", "ti", "pair")
    default_loss_weights = {"ii": 0.5, "it": 0.5, "tt": 0.5, "ti": 0.5, "pair": 0.0}
    required_fields = ("image", "text", "triplet")

    def triplet_path(self, run_dir: str | Path) -> Path:
        return Path(self.cfg.data.triplet_csv) if self.cfg.data.triplet_csv else Path(run_dir) / TRIPLET_FILE

    def train_dataset(self, run_dir: str | Path) -> Dataset:
        studies = self.study_dataset(run_dir, "train", ("image", "text"), self.transforms("train"), "full")
        path = self.triplet_path(run_dir)
        return TripletDataset(read_triplets(path), studies, str(path))

    def epoch_size(self, dataset: Dataset) -> int:
        if self.p.steps_per_epoch:
            return super().epoch_size(dataset)
        studies = getattr(dataset, "studies", None)
        n = len(studies) if studies is not None else len(dataset)  # type: ignore[arg-type]
        return max(self.cfg.training.batch_size, min(len(dataset), n))  # type: ignore[arg-type]

    def _embed_members(self, batch: Mapping[str, Any], images: bool, texts: bool) -> Dict[str, Tensor]:
        out: Dict[str, Tensor] = {}
        if images:  # one forward for the three members
            stacked = torch.cat([batch[m]["image"] for m in MEMBERS])
            for m, emb in zip(MEMBERS, self.model.encode_image(stacked, normalize=True).chunk(3)):
                out[f"image_{m}"] = emb
        if texts:  # per member: each was padded to its own longest report
            for m in MEMBERS:
                out[f"text_{m}"] = self.model.encode_text(batch[m]["input_ids"], batch[m]["attention_mask"],
                                                          normalize=True)
        return out

    def losses(self, batch: Mapping[str, Any]) -> Dict[str, Tensor]:
        on = {t for t in self.loss_terms if self.term_on(t)}
        e = self._embed_members(batch, images=bool(on & {"ii", "it", "ti", "pair"}),
                                texts=bool(on & {"it", "tt", "ti", "pair"}))
        margin = self.p.margin if self.p.margin is not None else float(self.cfg.models.margin)
        member = {m: (e.get(f"image_{m}"), e.get(f"text_{m}")) for m in MEMBERS}
        out: Dict[str, Tensor] = medtrim_triplet_terms(
            *(member[m][0] for m in MEMBERS), *(member[m][1] for m in MEMBERS), margin=margin,
            terms=on & set(TRIPLET_TERMS))
        if "pair" in on:
            out["pair"] = symmetric_info_nce(self.gather(e["image_anchor"]), self.gather(e["text_anchor"]),
                                             self.model.logit_scale)
        return out
