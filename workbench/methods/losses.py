"""Loss functions the methods share, each a pure function of tensors (no module state).

Every function takes embeddings that are NOT necessarily normalised and returns a scalar
(mean over the batch), so a method's `losses(batch)` is a dict of these calls.
"""

from __future__ import annotations

from typing import Dict, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

# CLIP clamps the learnable logit scale at 100 (Radford et al. 2021, Sec. 2.5) so the
# temperature cannot collapse to 0 and destabilise training.
MAX_LOGIT_SCALE = 100.0


def symmetric_info_nce(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al. 2021, Fig. 3; van den Oord et al. 2018, Eq. 4).

    With L2-normalised u_i (images) and v_j (texts) and logits s_ij = exp(t) * <u_i, v_j>:

        L = 1/2 * [ 1/N sum_i -log softmax_j(s_ij)[i]  +  1/N sum_j -log softmax_i(s_ij)[j] ]

    Pair i of the two batches is the positive; the other N-1 are negatives. `logit_scale` is
    the LOG of the inverse temperature (learnable, CLIP init log(1/0.07)); it is exponentiated
    and clamped at 100 here. Pass a float for a fixed temperature (e.g. log(1/0.07)).
    """
    if image_emb.shape[0] != text_emb.shape[0]:
        raise ValueError(f"InfoNCE needs as many images as texts, got {image_emb.shape[0]} and {text_emb.shape[0]}.")
    image_emb = F.normalize(image_emb.float(), dim=-1)
    text_emb = F.normalize(text_emb.float(), dim=-1)
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=image_emb.device).exp().clamp(max=MAX_LOGIT_SCALE)
    logits = scale * image_emb @ text_emb.t()
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise d(a, b) = 1 - cos(a, b), in [0, 2]."""
    return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1)


def triplet_cosine(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 0.3) -> Tensor:
    """Triplet margin loss on cosine distance (Schroff et al. 2015, Eq. 1, with d = 1 - cos):

        L = 1/N sum_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin)

    MedTrim (Sec. 3.3) uses margin 0.3.
    """
    return torch.clamp(cosine_distance(anchor, positive) - cosine_distance(anchor, negative) + margin, min=0).mean()


# MedTrim term -> modality of (anchor, positive, negative): first letter anchor, second members.
TRIPLET_TERMS: Dict[str, tuple[str, str, str]] = {
    "ii": ("image", "image", "image"),
    "it": ("image", "text", "text"),
    "tt": ("text", "text", "text"),
    "ti": ("text", "image", "image"),
}


def medtrim_triplet_terms(
    image_a: Tensor, image_p: Tensor, image_n: Tensor,
    text_a: Tensor, text_p: Tensor, text_n: Tensor,
    margin: float = 0.3, terms: Iterable[str] = tuple(TRIPLET_TERMS),
) -> Dict[str, Tensor]:
    """MedTrim's four multimodal triplet terms (MedTrim Sec. 3.3; the seed's `TripletLoss`).

    The anchor of each term is the first letter, the positive/negative members the second:
    `ii` image anchor vs positive/negative images, `it` image anchor vs positive/negative
    reports, `tt` text anchor vs reports, `ti` text anchor vs images. The seed optimises
    image side (ii + it) / 2 plus text side (tt + ti) / 2, i.e. each term with weight 1/2.
    """
    members = {"image": (image_a, image_p, image_n), "text": (text_a, text_p, text_n)}
    return {
        term: triplet_cosine(members[a][0], members[p][1], members[n][2], margin)
        for term, (a, p, n) in TRIPLET_TERMS.items() if term in set(terms)
    }
