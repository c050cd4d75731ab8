"""k-center greedy (Sener & Savarese 2018), exact or on a Gaussian sketch.

scikit-learn has no k-center greedy. It is sequential (each pick depends on the distances updated by
the previous one), so the exact path is one matrix-vector product over the pool per pick, bound by
memory bandwidth; there is no rejection trick (its argmax needs every row's current distance). The
``"sketch"`` path runs the greedy exactly on a seeded Gaussian Johnson–Lindenstrauss sketch
``(x − μ) S`` (``S (d, sketch_dim)``, entries N(0, 1/sketch_dim)) of the allowed rows, built in one
pass: per pick it reads ``sketch_dim`` numbers per row instead of ``d``, for one float32
``(n_allowed, sketch_dim)`` matrix more. Its squared distances are the sketch's (relative error
about ``√(2/sketch_dim)``, 18% at 64), so the farthest-point order can differ from the exact one;
the reported distance of each pick is still its exact distance to the centers before it.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from jacal.acquisition.selection import memory
from jacal.acquisition.selection.config import resolve
from jacal.acquisition.selection.kernels import CHUNK_ELEMENTS, Distances, allowed_mask, row_mean

__all__ = ["k_center_greedy"]

#: Columns of the ``"sketch"`` path's Gaussian sketch.
SKETCH_DIM = 64


def k_center_greedy(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None,
                    allowed: Optional[torch.Tensor] = None, seed: int = 0, method: Optional[str] = None,
                    sketch_dim: int = SKETCH_DIM) -> tuple:
    """Pick ``k`` rows of ``x (N, d)``, each the farthest from everything chosen so far.

    One matrix-vector product over ``x`` per pick, in ``x``'s dtype, clamped at 0; memory beyond
    ``x``: a few numbers per row.

    Args:
        x: embeddings (rows outside ``allowed`` may hold anything, NaN included).
        k: how many to pick (≤ allowed rows).
        centers: embeddings ``(M, d)`` already covered (the labeled set); when absent the first
            pick is the point farthest from the mean.
        allowed: ``(N,)`` bool, the rows that may be picked (default: all).
        seed: breaks exact ties (and seeds the sketch).
        method: ``"exact"``, ``"sketch"`` (the greedy on a seeded Gaussian sketch of ``sketch_dim``
            columns: see the module docstring for what it trades), ``"approximate"`` (= ``"sketch"``)
            or ``"auto"`` (exact while the embedding's bytes × k stay under the context's
            ``exact_max_bytes``); default: the :func:`~jacal.acquisition.selection.selection`
            context's.
        sketch_dim: the sketch's columns (``"sketch"`` only; at least ``d``: exact instead).

    Returns:
        ``(indices (k,), distances (k,))``: picks (rows of ``x``) in order and each one's distance
        to the nearest earlier center at the time it was picked (exact on both paths).
    """
    ok = allowed_mask(allowed, len(x))
    t0 = time.perf_counter()
    row = memory.row_bytes(x)
    m = resolve(method, "sketch", row * len(x), k)
    d = x[0].numel() if len(x) else 0
    if m == "sketch" and sketch_dim < d:
        picks, dists, n_ok = _k_center_sketch(x, k, centers, ok, seed, sketch_dim)
        memory.record("k_center_greedy", "sketch", len(x), k, memory.k_center_sketch(len(x), row, n_ok, sketch_dim), t0)
        return picks, dists
    picks, dists = _k_center_exact(x, k, centers, ok, seed)
    memory.record("k_center_greedy", "exact", len(x), k, memory.k_center_exact(len(x), row, x.element_size()), t0)
    return picks, dists


def _k_center_exact(x: torch.Tensor, k: int, centers: Optional[torch.Tensor], ok: torch.Tensor, seed: int) -> tuple:
    dist = Distances(x, ok)
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


def sketch_matrix(d: int, dim: int, seed: int) -> torch.Tensor:
    """The seeded Gaussian sketch ``(d, dim)``, entries N(0, 1/dim), so ``E‖v S‖² = ‖v‖²``."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    return torch.randn(d, dim, generator=g, dtype=torch.float64) / np.sqrt(dim)


def _k_center_sketch(x: torch.Tensor, k: int, centers: Optional[torch.Tensor], ok: torch.Tensor, seed: int,
                     dim: int) -> tuple:
    """k-center greedy on ``(x[ok] − μ) S``; returns picks as rows of ``x``, their exact distances and
    the number of allowed rows."""
    rows = torch.nonzero(ok).squeeze(1)
    flat = x.reshape(len(x), -1)
    mu = row_mean(flat, ok).double()
    s = sketch_matrix(flat.shape[1], dim, seed).to(flat.dtype)
    mu_s = (mu.to(flat.dtype) @ s)
    y = torch.empty(len(rows), dim, dtype=torch.float32)
    step = max(1, CHUNK_ELEMENTS // max(1, flat.shape[1]))
    for a in range(0, len(rows), step):
        y[a:a + step] = (flat[rows[a:a + step]] @ s - mu_s).float()
    cy = None
    if centers is not None and len(centers):
        cy = (centers.reshape(len(centers), -1).to(flat.dtype) @ s - mu_s).float()
    sub, _ = _k_center_exact(y, k, cy, torch.ones(len(rows), dtype=torch.bool), seed)
    picks = rows[torch.from_numpy(sub)]
    ref = centers.reshape(len(centers), -1) if centers is not None and len(centers) else mu[None, :]
    return picks.numpy().astype(np.int64), _distances_at_pick(flat, picks, ref), len(rows)


def _distances_at_pick(x: torch.Tensor, picks: torch.Tensor, centers: torch.Tensor) -> np.ndarray:
    """Exact distance ``(k,)`` of each pick (rows of ``x``) to the nearest of ``centers (M, d)`` and of
    the picks before it, in float64 (k-center greedy's convention: without centers, the mean is one)."""
    p = x[picks].double()
    d2 = torch.cdist(p, p).pow(2)
    d2 = torch.where(torch.tril(torch.ones(len(p), len(p), dtype=torch.bool), diagonal=-1), d2,
                     torch.tensor(float("inf"), dtype=torch.float64)).min(dim=1).values
    c = centers.double()
    for a in range(0, len(c), 4096):
        d2 = torch.minimum(d2, torch.cdist(p, c[a:a + 4096]).pow(2).min(dim=1).values)
    return d2.clamp_min(0).sqrt().numpy()
