"""Batch-diversity selection: k-center greedy and factorized k-means++ seeding.

k-center greedy (Sener & Savarese 2018) and k-means++ seeding (Arthur & Vassilvitskii 2007) are
written here rather than taken from scikit-learn because (1) scikit-learn has no k-center greedy,
and (2) ``sklearn.cluster.kmeans_plusplus`` cannot start from given centers (the origin or a labeled
set, see :func:`kmeans_pp`) and replaces plain D² sampling by a greedy variant with local trials,
and (3) it needs the embedding matrix in memory, which for
BADGE is N × (K·d) (a 60,000-item MNIST pool with a 512-wide penultimate layer: 1.2 GB), while
BADGE's gradient embeddings are rank-one outer products ``g_i = a_i ⊗ h_i`` whose inner products
factor as ``⟨g_i, g_j⟩ = ⟨a_i, a_j⟩⟨h_i, h_j⟩``: N × (K + d) suffices. Also BADGE uses plain
k-means++ sampling, not scikit-learn's greedy variant with local trials.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["k_center_greedy", "kmeans_pp", "kmeans_pp_outer", "min_distances"]


def min_distances(x: torch.Tensor, centers: torch.Tensor, *, chunk: int = 256, centered: bool = False) -> torch.Tensor:
    """Distance ``(N,)`` from each row of ``x (N, d)`` to its nearest row of ``centers (M, d)``.

    ``‖x‖² − 2 x·c + ‖c‖²`` in ``x``'s dtype, ``chunk`` centers at a time: no N × d temporaries.
    Both sides are shifted by the mean of ``x`` first, which shrinks the norms and so the
    cancellation of this expansion (in float32, distances are accurate to ~1e-3·spread);
    ``centered=True`` says the caller already did so (no copy of ``x``).
    """
    mu = torch.zeros_like(x[:1]) if centered else x.mean(dim=0, keepdim=True)
    x = x if centered else x - mu
    sq = x.pow(2).sum(dim=1)
    c = centers.to(x.dtype) - mu
    d2 = torch.full((x.shape[0],), float("inf"), dtype=x.dtype)
    for s in range(0, len(c), chunk):
        cc = c[s:s + chunk]
        part = (sq[:, None] - 2 * (x @ cc.T) + cc.pow(2).sum(dim=1)[None, :]).clamp_min_(0).min(dim=1).values
        d2 = torch.minimum(d2, part)
    return d2.sqrt()


def k_center_greedy(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None, seed: int = 0) -> tuple:
    """Pick ``k`` rows of ``x (N, d)``, each the farthest from everything chosen so far.

    Distances use ``‖x‖² − 2 x·c + ‖c‖²`` (one matrix-vector product per pick, no N × d
    temporaries), in ``x``'s dtype, clamped at 0.

    Args:
        x: candidate embeddings.
        k: how many to pick (≤ N).
        centers: embeddings ``(M, d)`` already covered (the labeled set); when absent the first
            pick is the point farthest from the mean.
        seed: breaks exact ties.

    Returns:
        ``(indices (k,), distances (k,))``: picks in order and each one's distance to the
        nearest earlier center at the time it was picked.
    """
    n = x.shape[0]
    ref = centers if centers is not None and len(centers) else x.mean(dim=0, keepdim=True)
    mu = x.mean(dim=0, keepdim=True)  # shift everything by the mean: smaller norms, less cancellation
    x = (x - mu).contiguous()
    ref = ref.to(x.dtype) - mu
    sq = x.pow(2).sum(dim=1)
    rng = np.random.default_rng(seed)
    jitter = torch.from_numpy(rng.random(n) * 1e-9).to(x.dtype)
    d2 = min_distances(x, ref, centered=True).pow(2)
    picks, dists = [], []
    for _ in range(k):
        i = int(torch.argmax(d2 + jitter * d2.max().clamp_min(1e-30)))
        picks.append(i)
        dists.append(float(d2[i].clamp_min(0).sqrt()))
        d2 = torch.minimum(d2, (sq - 2 * (x @ x[i]) + sq[i]).clamp_min_(0))
        d2[i] = -1.0
    return np.asarray(picks, dtype=np.int64), np.asarray(dists)


def kmeans_pp_outer(a: torch.Tensor, h: torch.Tensor, k: int, *, seed: int = 0) -> tuple:
    """k-means++ seeding on implicit embeddings ``g_i = a_i ⊗ h_i`` (BADGE).

    ``‖g_i − g_j‖² = ‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² − 2⟨a_i, a_j⟩⟨h_i, h_j⟩`` — exact, never forming g.

    Args:
        a: ``(N, K)`` (softmax minus one-hot of the predicted class).
        h: ``(N, d)`` penultimate-layer embeddings.
        k: picks.
        seed: sampling seed.

    Returns:
        ``(indices (k,), d2_at_pick (k,))``. The first pick is the largest-norm embedding (as in
        BADGE's reference code), each later one is sampled with probability ∝ D².
    """
    a, h = a.double(), h.float()
    norms2 = a.pow(2).sum(1) * h.double().pow(2).sum(1)
    rng = np.random.default_rng(seed)
    first = int(torch.argmax(norms2))
    picks, d2_at = [first], [float(norms2[first])]

    def d2_to(j: int) -> torch.Tensor:
        return (norms2 + norms2[j] - 2 * (a @ a[j]) * (h @ h[j]).double()).clamp_min(0)

    d2 = d2_to(first)
    d2[first] = 0.0
    return _d2_sampling(d2, d2_to, k, picks, d2_at, rng)


def _d2_sampling(d2: torch.Tensor, d2_to, k: int, picks: list, d2_at: list, rng: np.random.Generator) -> tuple:
    """The k-means++ loop shared by both seedings: draw rows ∝ ``d2`` (float64, squared distance to the
    nearest center so far, 0 at ``picks``) until there are ``k`` picks; ``d2_to(j)`` gives every
    row's squared distance to row ``j``."""
    chosen = torch.zeros(len(d2), dtype=torch.bool)
    chosen[picks] = True
    while len(picks) < k:
        total = float(d2.sum())
        if total <= 0:  # every remaining row coincides with a center: take the next unpicked in order
            j = int(torch.nonzero(~chosen)[0])
        else:
            p = (d2 / total).numpy()
            j = int(rng.choice(len(p), p=p / p.sum()))
        picks.append(j)
        d2_at.append(float(d2[j]))
        chosen[j] = True
        d2 = torch.minimum(d2, d2_to(j))
        d2[chosen] = 0.0
    return np.asarray(picks, dtype=np.int64), np.asarray(d2_at)


def kmeans_pp(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None, seed: int = 0) -> tuple:
    """k-means++ seeding (D² sampling) of ``k`` rows of ``x (N, d)``, starting from ``centers``.

    Each pick is drawn with probability ∝ its squared distance to the nearest center so far. With
    ``centers`` = the origin (as :class:`~jacal.acquisition.strategies.JacobianKMeans` passes for
    Jacobian embeddings) the first pick is drawn ∝ ‖x‖² and an item's chance never exceeds its own
    squared norm: magnitude decides how likely a pick is, direction keeps the batch diverse.

    Args:
        x: ``(N, d)`` embeddings (float32 is fine: distances are formed from the mean-shifted rows).
        k: picks (≤ N).
        centers: ``(M, d)`` centers that already exist; ``None``: the first pick is the
            largest-norm row (as BADGE's reference code does).
        seed: sampling seed.

    Returns:
        ``(indices (k,), d2_at_pick (k,))``.
    """
    mu = x.mean(dim=0, keepdim=True)  # shift by the mean: smaller norms, less cancellation
    xs = (x - mu).contiguous()
    sq = xs.pow(2).sum(dim=1)

    def d2_to(j: int) -> torch.Tensor:
        return (sq - 2 * (xs @ xs[j]) + sq[j]).clamp_min(0).double()

    picks, d2_at = [], []
    if centers is not None and len(centers):
        d2 = min_distances(xs, centers.to(x.dtype) - mu, centered=True).double().pow(2)
    else:
        first = int(torch.argmax(x.double().pow(2).sum(dim=1)))
        picks.append(first)
        d2_at.append(float(x[first].double().pow(2).sum()))
        d2 = d2_to(first)
        d2[first] = 0.0
    return _d2_sampling(d2, d2_to, k, picks, d2_at, np.random.default_rng(seed))
