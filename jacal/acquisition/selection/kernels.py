"""Bounded-memory distance kernels over an ``(N, d)`` embedding matrix.

The matrix is used as it is (a view, never a copy; float32 is fine), with an ``allowed`` mask of the
rows that may be picked, and only a few numbers per row are kept besides (squared norms, current
distances). Distances are formed as ``‖x − μ‖² − 2 (x − μ)·(c − μ) + ‖c − μ‖²`` with μ the mean of
the allowed rows: the centred squared norms are computed once, chunk by chunk, and
``(x − μ)·w = x·w − μ·w``, so there is no N × d temporary, and centring shrinks the norms and so
the cancellation of the expansion (in float32, distances are accurate to ~1e-3·spread).
"""
from __future__ import annotations

from typing import Optional

import torch

#: Temporaries of at most this many numbers (4M: 32 MB in float64).
CHUNK_ELEMENTS = 1 << 22


def row_chunk(x: torch.Tensor) -> int:
    """Rows of ``x`` per chunk so that a chunk holds at most :data:`CHUNK_ELEMENTS` numbers."""
    return max(1, CHUNK_ELEMENTS // max(1, x[0].numel() if len(x) else 1))


def allowed_mask(allowed: Optional[torch.Tensor], n: int) -> torch.Tensor:
    """``allowed`` as a bool ``(n,)`` mask (all rows when ``None``)."""
    if allowed is None:
        return torch.ones(n, dtype=torch.bool)
    allowed = torch.as_tensor(allowed, dtype=torch.bool)
    if allowed.shape != (n,):
        raise ValueError(f"Expected `allowed` to be a boolean mask of shape ({n},), got {tuple(allowed.shape)}.")
    return allowed


def row_weights(weights: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    """Row weights for a weighted D² draw as float64 ``(n,)`` (NaN → 0), or ``None``."""
    if weights is None:
        return None
    w = torch.as_tensor(weights).double()
    if w.shape != (n,) or bool((w < 0).any()):
        raise ValueError(f"Expected `weights` to be ({n},) non-negative numbers, got shape {tuple(w.shape)}.")
    return torch.nan_to_num(w, nan=0.0)


def row_norms(x: torch.Tensor, *, squared: bool = False, shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``‖x_i − shift‖`` (or its square) ``(N,)`` for every row of ``x (N, d)``, in float64, a chunk of
    rows at a time. Each row's sum runs in ``x``'s dtype (float32: relative error about 1e-6, the
    precision of the float32 distances built on it; casting every chunk to float64 first cost ten
    times the pass)."""
    out = torch.empty(len(x), dtype=torch.float64)
    step = row_chunk(x)
    for s in range(0, len(x), step):
        xc = x[s:s + step]
        if shift is not None:
            xc = xc - shift.to(x.dtype)
        out[s:s + step] = xc.square().sum(dim=1)
    return out if squared else out.sqrt()


def row_mean(x: torch.Tensor, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The mean ``(d,)`` of the ``allowed`` rows of ``x (N, d)`` (others may hold NaN), in ``x``'s dtype,
    accumulated in float64 a chunk of rows at a time."""
    ok = allowed_mask(allowed, len(x))
    total = torch.zeros(x.shape[1:], dtype=torch.float64)
    step = row_chunk(x)
    for s in range(0, len(x), step):
        xc, okc = x[s:s + step], ok[s:s + step]
        total += (xc if bool(okc.all()) else xc[okc]).double().sum(dim=0)
    return (total / max(1, int(ok.sum()))).to(x.dtype)


class Distances:
    """Squared distances from every row of ``x (N, d)`` to given vectors, around the allowed rows' mean
    ``mu (d,)``; ``sq (N,)`` holds the rows' centred squared norms in ``x``'s dtype."""

    def __init__(self, x: torch.Tensor, allowed: torch.Tensor):
        self.x = x
        self.allowed = allowed
        self.mu = row_mean(x, allowed)
        self.sq = row_norms(x, squared=True, shift=self.mu).to(x.dtype)

    def to_vector(self, c: torch.Tensor) -> torch.Tensor:
        """``‖x_i − c‖²`` ``(N,)`` in ``x``'s dtype (anything, NaN included, for rows that are not
        allowed: callers mask them)."""
        w = c.to(self.x.dtype) - self.mu
        return (self.sq - 2 * (self.x @ w - self.mu @ w) + w @ w).clamp_min_(0)

    def to_row(self, j: int) -> torch.Tensor:
        """``‖x_i − x_j‖²`` ``(N,)`` in ``x``'s dtype."""
        return self.to_vector(self.x[j])

    def to_nearest(self, centers: torch.Tensor) -> torch.Tensor:
        """Squared distance ``(N,)`` float64 to the nearest row of ``centers (M, d)`` (0 outside
        ``allowed``), a chunk of centers at a time."""
        c = centers.to(self.x.dtype) - self.mu
        chunk = max(1, CHUNK_ELEMENTS // max(1, len(self.x)))
        d2 = torch.full((len(self.x),), float("inf"), dtype=self.x.dtype)
        for s in range(0, len(c), chunk):
            cc = c[s:s + chunk]
            prod = self.x @ cc.T - (self.mu @ cc.T)[None, :]
            part = (self.sq[:, None] - 2 * prod + cc.pow(2).sum(dim=1)[None, :]).clamp_min_(0).min(dim=1).values
            d2 = torch.minimum(d2, part)
        return torch.where(self.allowed, d2.double(), torch.zeros((), dtype=torch.float64))


def min_distances(x: torch.Tensor, centers: torch.Tensor, *, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Distance ``(N,)`` float64 from each row of ``x (N, d)`` to its nearest row of ``centers (M, d)``
    (0 for rows outside ``allowed``)."""
    return Distances(x, allowed_mask(allowed, len(x))).to_nearest(centers).sqrt()
