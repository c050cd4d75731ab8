"""In-distribution scores for open-set acquisition: is a pool item one the annotators can label?

An open pool holds items nobody can label (unseen classes, blank or corrupted scans, other domains).
Each round of labeling tells which of the items sent came back as a class and which came back as
"none of these"; :func:`in_distribution` turns those two sets into a per-item score.

Maths [jacal's choice]: on unit-normalised penultimate features ``ĥ`` (cosine geometry, as the
``knn`` confidence), let ``d_in(x)`` be the mean distance from ``ĥ(x)`` to its ``m`` nearest
labeled in-set items and ``d_out(x)`` the same to the known out-of-set items. The score is

    s(x) = d_out(x) / (d_in(x) + d_out(x))   ∈ [0, 1],

a soft nearest-neighbour vote: 1 on top of a labeled in-set item, 0 on top of a known out-of-set
one, ½ halfway. With no out-of-set answer yet there is nothing to contrast, and every item scores 1
(acquisition is then exactly what it is on a closed pool).

Where to cut (:func:`in_distribution_floor`): the same score for each labeled in-set item, left
out of its own bank (leave-one-out), tells how low a score real in-set items get; the floor is its
``1 − coverage`` quantile (coverage 0.95: 95% of labeled in-set items score at or above it), a
split-conformal threshold. Early on, with a few labels, in-set items of classes nobody has labeled
yet sit far from every bank and score about ½, as do the labeled ones that are alone in their
class, so the floor drops and they stay candidates; a fixed cut at ½ would drop half of them.

    >>> import numpy as np
    >>> from jacal.confidence.openset import in_distribution
    >>> pool = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    >>> in_distribution(pool, np.array([[1.0, 0.1]]), np.array([[0.1, 1.0]]), m=1).round(2)
    array([0.93, 0.07, 0.5 ])
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["in_distribution", "in_distribution_floor", "mean_nearest_distance"]


def _unit(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, dtype=np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def mean_nearest_distance(q: np.ndarray, bank: np.ndarray, m: int, *, chunk: int = 4096) -> np.ndarray:
    """``(N,)`` mean Euclidean distance from each unit row of ``q (N, d)`` to its ``m`` nearest unit
    rows of ``bank (M, d)`` (brute force, one matrix product and top-m per chunk of ``q``)."""
    m = max(1, min(int(m), len(bank)))
    b = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
    out = np.empty(len(q))
    for s in range(0, len(q), chunk):
        sim = torch.from_numpy(np.ascontiguousarray(q[s:s + chunk], dtype=np.float32)) @ b.T
        top = sim.topk(m, dim=1).values.double()
        out[s:s + chunk] = torch.sqrt(torch.clamp(2.0 - 2.0 * top, min=0.0)).mean(dim=1).numpy()
    return out


def in_distribution(pool_embeddings: np.ndarray, in_embeddings: np.ndarray,
                    out_embeddings: Optional[np.ndarray] = None, *, m: int = 3) -> np.ndarray:
    """Per-item in-distribution score ``(N,)`` in ``[0, 1]`` (module docstring).

    Args:
        pool_embeddings: ``(N, d)`` features of the pool items (rows with NaN score NaN).
        in_embeddings: ``(M_in, d)`` features of labeled in-set items.
        out_embeddings: ``(M_out, d)`` features of items answered "none of these" (``None`` or
            empty: every item scores 1).
        m: neighbours averaged on each side.
    """
    pool = np.asarray(pool_embeddings)
    if pool.ndim != 2:
        raise ValueError(f"Expected `pool_embeddings` of shape (N, d), got {pool.shape}.")
    bad = ~np.isfinite(pool).all(axis=1)
    out = np.ones(len(pool))
    out[bad] = np.nan
    if out_embeddings is None or len(out_embeddings) == 0:
        return out
    banks = []
    for name, e in (("in_embeddings", in_embeddings), ("out_embeddings", out_embeddings)):
        e = np.asarray(e)
        if e.ndim != 2 or e.shape[1] != pool.shape[1]:
            raise ValueError(f"Expected `{name}` of shape (M, {pool.shape[1]}), got {e.shape}.")
        banks.append(_unit(e[np.isfinite(e).all(axis=1)]))
    if len(banks[0]) == 0:  # nothing labeled in the set yet: every item is as likely as the next
        out[~bad] = 0.5
        return out
    q = _unit(np.where(bad[:, None], 0.0, pool))
    d_in = mean_nearest_distance(q, banks[0], m)
    d_out = mean_nearest_distance(q, banks[1], m)
    score = d_out / np.maximum(d_in + d_out, 1e-12)
    score[(d_in + d_out) <= 1e-12] = 0.5
    out[~bad] = score[~bad]
    return out


def in_distribution_floor(in_embeddings: np.ndarray, out_embeddings: Optional[np.ndarray] = None, *, m: int = 3,
                          coverage: float = 0.95) -> float:
    """The score below which an item is more out-of-set-like than ``coverage`` of the labeled in-set
    items (leave-one-out scores, module docstring); ``0.0`` when there is nothing to contrast."""
    if not 0 < coverage < 1:
        raise ValueError(f"Expected `coverage` in (0, 1), got {coverage!r}.")
    if out_embeddings is None or len(out_embeddings) == 0:
        return 0.0
    ins = np.asarray(in_embeddings)
    ins = ins[np.isfinite(ins).all(axis=1)] if ins.ndim == 2 else ins
    outs = np.asarray(out_embeddings)
    outs = outs[np.isfinite(outs).all(axis=1)]
    if len(ins) < 2 or len(outs) == 0:
        return 0.0
    q, bank_out = _unit(ins), _unit(outs)
    # leave-one-out: each in-set item's nearest in-set items, itself excluded (its own similarity is the top one)
    m_in = max(1, min(int(m), len(q) - 1))
    sim = torch.from_numpy(q) @ torch.from_numpy(q).T
    sim.fill_diagonal_(-np.inf)
    top = sim.topk(m_in, dim=1).values.double()
    d_in = torch.sqrt(torch.clamp(2.0 - 2.0 * top, min=0.0)).mean(dim=1).numpy()
    d_out = mean_nearest_distance(q, bank_out, m)
    loo = d_out / np.maximum(d_in + d_out, 1e-12)
    return float(np.quantile(loo, 1 - coverage, method="lower"))
