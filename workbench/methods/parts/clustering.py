"""Cluster-guided negatives of CM-CGNS (after ClusterNS, Deng et al. 2023, Sec. 3).

k-means centroids over the image-attended text features, kept as buffers (saved with the
method) and updated with momentum after every batch. Clustering starts only once the
features have spread out (mean pairwise cosine similarity <= 0.4): on collapsed early
features every point would fall into one cluster. Then each feature gets the centroid of its
nearest OTHER cluster as a hard negative, and pairs inside one cluster are treated as likely
false negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bounded_margin_loss(delta: Tensor, alpha: float = 0.2, beta: float = 0.5) -> Tensor:
    """Bidirectional margin loss on delta = cos(x, false_neg) - cos(x, pos) (ClusterNS Eq. 6):
    relu(delta + alpha) + relu(-delta - beta), i.e. keep a false negative within
    [-beta, -alpha] of the positive: less similar than the positive, not pushed away like a
    true negative. Mean over the given pairs; zero (with a graph) when there are none."""
    if delta.numel() == 0:
        return delta.sum() * 0.0
    return (F.relu(delta + alpha) + F.relu(-delta - beta)).mean()


class ClusterNegatives(nn.Module):
    """Momentum k-means on the unit sphere with a start threshold.

    k: number of clusters (CM-CGNS default 128; small for the demo). momentum: centroid =
    normalize(momentum * old + (1 - momentum) * batch mean of its members). The public code
    adds raw member sums at rate 0.001; the mean keeps the update independent of batch size.
    """

    def __init__(self, dim: int, k: int = 128, momentum: float = 0.99, start_threshold: float = 0.4) -> None:
        super().__init__()
        if k < 2:
            raise ValueError(f"Cluster-guided negatives need k >= 2 clusters, got k={k} (method.params.cluster_k).")
        self.k = int(k)
        self.momentum = float(momentum)
        self.start_threshold = float(start_threshold)
        self.register_buffer("centroids", torch.zeros(self.k, dim))
        self.register_buffer("_started", torch.zeros((), dtype=torch.bool))

    @property
    def started(self) -> bool:
        return bool(self._started)

    @staticmethod
    def mean_pairwise_cosine(features: Tensor) -> float:
        """Mean cosine similarity over distinct pairs of `features` [T, D]."""
        z = F.normalize(features.float(), dim=-1)
        n = z.shape[0]
        if n < 2:
            return 1.0
        sims = z @ z.t()
        return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))

    @torch.no_grad()
    def initialise(self, features: Tensor) -> None:
        """Farthest-point seeding: start at the point least like the mean, then repeatedly add
        the point least similar to every chosen centroid (ClusterNS's heuristic init)."""
        z = F.normalize(features.float(), dim=-1)
        chosen = [int((z @ F.normalize(z.mean(0), dim=0)).argmin())]
        best = z @ z[chosen[0]]
        for _ in range(1, min(self.k, z.shape[0])):
            nxt = int(best.argmin())
            chosen.append(nxt)
            best = torch.maximum(best, z @ z[nxt])
        while len(chosen) < self.k:  # fewer points than clusters: reuse points (empty clusters stay put)
            chosen.append(chosen[len(chosen) % z.shape[0]])
        self.centroids.copy_(z[chosen].to(self.centroids.dtype))
        self._started.fill_(True)

    @torch.no_grad()
    def assign(self, features: Tensor) -> Tensor:
        """Index of the most similar centroid for each row of `features` [T, D]."""
        return (F.normalize(features.float(), dim=-1) @ self.centroids.float().t()).argmax(-1)

    @torch.no_grad()
    def update(self, features: Tensor) -> None:
        """One momentum step of every centroid that has members in `features`."""
        z = F.normalize(features.float(), dim=-1)
        idx = self.assign(z)
        onehot = F.one_hot(idx, self.k).to(z.dtype)  # [T, k]
        counts = onehot.sum(0)
        means = (onehot.t() @ z) / counts.clamp_min(1).unsqueeze(1)
        has = counts > 0
        moved = F.normalize(self.momentum * self.centroids.float() + (1 - self.momentum) * means, dim=-1)
        self.centroids.copy_(torch.where(has.unsqueeze(1), moved, self.centroids.float()).to(self.centroids.dtype))

    @torch.no_grad()
    def observe(self, features: Tensor) -> bool:
        """Start clustering when the features have spread enough, else update; returns `started`."""
        if not self.started:
            if features.shape[0] >= 2 and self.mean_pairwise_cosine(features) <= self.start_threshold:
                self.initialise(features)
        else:
            self.update(features)
        return self.started

    @torch.no_grad()
    def nearest_other_centroid(self, features: Tensor) -> Tensor:
        """For each feature, the centroid of the most similar cluster other than its own."""
        sims = F.normalize(features.float(), dim=-1) @ self.centroids.float().t()
        second = sims.topk(2, dim=-1).indices[:, 1]
        return self.centroids.float()[second]
