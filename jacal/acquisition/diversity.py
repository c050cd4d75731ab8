"""Batch-diversity selection: k-center greedy and factorized k-means++ seeding, in bounded memory.

k-center greedy (Sener & Savarese 2018) and k-means++ seeding (Arthur & Vassilvitskii 2007) are
written here rather than taken from scikit-learn or faiss because

1. scikit-learn has no k-center greedy, and ``sklearn.cluster.kmeans_plusplus`` cannot start from
   given centers (the origin or a labeled set, see :func:`kmeans_pp`), replaces plain D² sampling
   by a greedy variant with local trials (BADGE uses plain D² sampling), and needs the embedding
   matrix itself, which for BADGE is N × (K·d);
2. both algorithms are sequential: each pick depends on the distances updated by the previous one,
   so the work is one matrix-vector product over the pool per pick, bound by memory bandwidth.
   faiss's batched nearest-neighbour search has nothing to batch here, and its k-means is Lloyd's
   iteration, not seeding.

Memory: the functions take the whole ``(N, d)`` embedding matrix as it is (a view, never a copy;
float32 is fine) plus an ``allowed`` mask of the rows that may be picked, and keep only a few
numbers per row besides (squared norms, current distances). Distances are formed as
``‖x − μ‖² − 2 (x − μ)·(c − μ) + ‖c − μ‖²`` with μ the mean of the allowed rows, where the centred
squared norms are computed once, chunk by chunk, and ``(x − μ)·w = x·w − μ·w``: no N × d temporary.
BADGE's gradient embeddings ``g_i = a_i ⊗ h_i`` are never formed either: their inner products factor
as ``⟨g_i, g_j⟩ = ⟨a_i, a_j⟩⟨h_i, h_j⟩``, so N × (K + d) numbers suffice (a million-item pool with
K = 10 and a 512-wide penultimate layer: 2 GB instead of 20 GB).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["k_center_greedy", "kmeans_pp", "kmeans_pp_outer", "min_distances", "row_mean", "row_norms"]

_CHUNK_ELEMENTS = 1 << 22  # temporaries of at most 4M numbers (32 MB in float64)


def _row_chunk(x: torch.Tensor) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, x[0].numel() if len(x) else 1))


def _allowed(allowed: Optional[torch.Tensor], n: int) -> torch.Tensor:
    if allowed is None:
        return torch.ones(n, dtype=torch.bool)
    allowed = torch.as_tensor(allowed, dtype=torch.bool)
    if allowed.shape != (n,):
        raise ValueError(f"Expected `allowed` to be a boolean mask of shape ({n},), got {tuple(allowed.shape)}.")
    return allowed


def row_norms(x: torch.Tensor, *, squared: bool = False, shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``‖x_i − shift‖`` (or its square) for every row of ``x (N, d)``, in float64, a chunk of rows
    at a time (no N × d temporary)."""
    out = torch.empty(len(x), dtype=torch.float64)
    step = _row_chunk(x)
    for s in range(0, len(x), step):
        xc = x[s:s + step]
        if shift is not None:
            xc = xc - shift
        out[s:s + step] = xc.double().pow(2).sum(dim=1)
    return out if squared else out.sqrt()


def row_mean(x: torch.Tensor, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The mean ``(d,)`` of the ``allowed`` rows of ``x (N, d)`` (others may hold NaN), in ``x``'s dtype,
    accumulated in float64 a chunk of rows at a time."""
    ok = _allowed(allowed, len(x))
    total = torch.zeros(x.shape[1:], dtype=torch.float64)
    step = _row_chunk(x)
    for s in range(0, len(x), step):
        total += x[s:s + step][ok[s:s + step]].double().sum(dim=0)
    return (total / max(1, int(ok.sum()))).to(x.dtype)


class _Distances:
    """Squared distances from every row of ``x`` to one vector at a time, around the allowed rows' mean."""

    def __init__(self, x: torch.Tensor, allowed: torch.Tensor):
        self.x = x
        self.allowed = allowed
        self.mu = row_mean(x, allowed)
        self.sq = row_norms(x, squared=True, shift=self.mu).to(x.dtype)

    def to_vector(self, c: torch.Tensor) -> torch.Tensor:
        """``‖x_i − c‖²`` for every row, in ``x``'s dtype (anything, NaN included, for rows that are not
        allowed: callers mask them)."""
        w = c.to(self.x.dtype) - self.mu
        return (self.sq - 2 * (self.x @ w - self.mu @ w) + w @ w).clamp_min_(0)

    def to_row(self, j: int) -> torch.Tensor:
        return self.to_vector(self.x[j])

    def to_row64(self, j: int) -> torch.Tensor:
        return self.to_vector(self.x[j]).double()

    def to_nearest(self, centers: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
        """Squared distance to the nearest row of ``centers (M, d)``, a chunk of centers at a time."""
        c = centers.to(self.x.dtype) - self.mu
        chunk = chunk or max(1, _CHUNK_ELEMENTS // max(1, len(self.x)))
        d2 = torch.full((len(self.x),), float("inf"), dtype=self.x.dtype)
        for s in range(0, len(c), chunk):
            cc = c[s:s + chunk]
            prod = self.x @ cc.T - (self.mu @ cc.T)[None, :]
            part = (self.sq[:, None] - 2 * prod + cc.pow(2).sum(dim=1)[None, :]).clamp_min_(0).min(dim=1).values
            d2 = torch.minimum(d2, part)
        return torch.where(self.allowed, d2.double(), torch.zeros((), dtype=torch.float64))


def min_distances(x: torch.Tensor, centers: torch.Tensor, *, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Distance ``(N,)`` from each row of ``x (N, d)`` to its nearest row of ``centers (M, d)`` (float64;
    0 for rows outside ``allowed``). Both sides are shifted by the mean of the allowed rows of ``x``,
    which shrinks the norms and so the cancellation of the expansion (in float32, distances are
    accurate to ~1e-3·spread)."""
    return _Distances(x, _allowed(allowed, len(x))).to_nearest(centers).sqrt()


def k_center_greedy(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None,
                    allowed: Optional[torch.Tensor] = None, seed: int = 0) -> tuple:
    """Pick ``k`` rows of ``x (N, d)``, each the farthest from everything chosen so far.

    One matrix-vector product over ``x`` per pick, in ``x``'s dtype, clamped at 0; memory beyond
    ``x``: a few numbers per row.

    Args:
        x: embeddings (rows outside ``allowed`` may hold anything, NaN included).
        k: how many to pick (≤ allowed rows).
        centers: embeddings ``(M, d)`` already covered (the labeled set); when absent the first
            pick is the point farthest from the mean.
        allowed: ``(N,)`` bool, the rows that may be picked (default: all).
        seed: breaks exact ties.

    Returns:
        ``(indices (k,), distances (k,))``: picks (rows of ``x``) in order and each one's distance
        to the nearest earlier center at the time it was picked.
    """
    ok = _allowed(allowed, len(x))
    dist = _Distances(x, ok)
    if centers is not None and len(centers):
        d2 = dist.to_nearest(centers).to(x.dtype)
    else:
        d2 = dist.to_vector(dist.mu)
    d2[~ok] = -1.0
    jitter = torch.from_numpy(np.random.default_rng(seed).random(len(x)) * 1e-9).to(x.dtype)
    picks, dists = [], []
    for _ in range(k):
        i = int(torch.argmax(d2 + jitter * d2.max().clamp_min(1e-30)))
        picks.append(i)
        dists.append(float(d2[i].clamp_min(0).sqrt()))
        d2 = torch.fmin(d2, dist.to_row(i))  # rows not allowed stay at −1 (fmin skips their NaN)
        d2[i] = -1.0
    return np.asarray(picks, dtype=np.int64), np.asarray(dists)


def kmeans_pp_outer(a: torch.Tensor, h: torch.Tensor, k: int, *, allowed: Optional[torch.Tensor] = None,
                    seed: int = 0) -> tuple:
    """k-means++ seeding on implicit embeddings ``g_i = a_i ⊗ h_i`` (BADGE).

    ``‖g_i − g_j‖² = ‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² − 2⟨a_i, a_j⟩⟨h_i, h_j⟩`` — exact, never forming g.

    Args:
        a: ``(N, K)`` (softmax minus one-hot of the predicted class).
        h: ``(N, d)`` penultimate-layer embeddings (used as they are: no copy when float32).
        k: picks.
        allowed: ``(N,)`` bool, the rows that may be picked (default: all).
        seed: sampling seed.

    Returns:
        ``(indices (k,), d2_at_pick (k,))``. The first pick is the largest-norm embedding (as in
        BADGE's reference code), each later one is sampled with probability ∝ D².
    """
    ok = _allowed(allowed, len(a))
    a = a.double()
    h = h if h.dtype == torch.float32 else h.float()
    norms2 = torch.where(ok, a.pow(2).sum(1) * row_norms(h, squared=True), torch.zeros((), dtype=torch.float64))
    rng = np.random.default_rng(seed)
    first = int(torch.argmax(torch.where(ok, norms2, torch.tensor(-1.0, dtype=torch.float64))))
    picks, d2_at = [first], [float(norms2[first])]

    def d2_to(j: int) -> torch.Tensor:
        d2 = (norms2 + norms2[j] - 2 * (a @ a[j]) * (h @ h[j]).double()).clamp_min(0)
        return torch.where(ok, d2, torch.zeros((), dtype=torch.float64))

    return _d2_sampling(d2_to(first), d2_to, k, picks, d2_at, rng, ok)


def _d2_sampling(d2: torch.Tensor, d2_to, k: int, picks: list, d2_at: list, rng: np.random.Generator,
                 allowed: torch.Tensor) -> tuple:
    """The k-means++ loop shared by both seedings: draw rows ∝ ``d2`` (float64, squared distance to the
    nearest center so far, 0 at ``picks`` and outside ``allowed``) until there are ``k`` picks;
    ``d2_to(j)`` gives every row's squared distance to row ``j``."""
    chosen = ~allowed.clone()
    chosen[picks] = True
    d2[chosen] = 0.0
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


def kmeans_pp(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None,
              allowed: Optional[torch.Tensor] = None, seed: int = 0) -> tuple:
    """k-means++ seeding (D² sampling) of ``k`` rows of ``x (N, d)``, starting from ``centers``.

    Each pick is drawn with probability ∝ its squared distance to the nearest center so far. With
    ``centers`` = the origin (as :class:`~jacal.acquisition.strategies.JacobianKMeans` passes for
    Jacobian embeddings) the first pick is drawn ∝ ‖x‖² and an item's chance never exceeds its own
    squared norm: magnitude decides how likely a pick is, direction keeps the batch diverse.

    Args:
        x: ``(N, d)`` embeddings (float32 is fine: distances are formed around the mean).
        k: picks (≤ allowed rows).
        centers: ``(M, d)`` centers that already exist; ``None``: the first pick is the
            largest-norm row (as BADGE's reference code does).
        allowed: ``(N,)`` bool, the rows that may be picked (default: all).
        seed: sampling seed.

    Returns:
        ``(indices (k,), d2_at_pick (k,))``.
    """
    ok = _allowed(allowed, len(x))
    dist = _Distances(x, ok)
    picks, d2_at = [], []
    if centers is not None and len(centers):
        d2 = dist.to_nearest(centers)
    else:
        norms2 = torch.where(ok, row_norms(x, squared=True), torch.tensor(-1.0, dtype=torch.float64))
        first = int(torch.argmax(norms2))
        picks.append(first)
        d2_at.append(float(norms2[first]))
        d2 = dist.to_row64(first)
    return _d2_sampling(d2, dist.to_row64, k, picks, d2_at, np.random.default_rng(seed), ok)
