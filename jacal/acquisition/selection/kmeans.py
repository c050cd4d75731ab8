"""k-means++ seeding (Arthur & Vassilvitskii 2007): the dense and the outer-product (BADGE) fronts.

Written here rather than taken from ``sklearn.cluster.kmeans_plusplus``, which cannot start from
given centers (the origin or a labeled set), replaces plain D² sampling by a greedy variant with
local trials (BADGE uses plain D² sampling), and needs the embedding matrix itself, which for BADGE
is N × (K·d). Each front sets up a center set (:mod:`~jacal.acquisition.selection.centers`) and its
first pick, then hands the draws to a sampler (:mod:`~jacal.acquisition.selection.d2`): by
rejection (the default exact path), one pass per pick (``selection(d2_sampler="pass")``) or AFK-MC²
(``method="mcmc"``).
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from jacal.acquisition.selection import d2 as D2
from jacal.acquisition.selection import memory
from jacal.acquisition.selection.centers import DenseCenters, OuterCenters
from jacal.acquisition.selection.config import current, resolve
from jacal.acquisition.selection.kernels import allowed_mask, row_norms, row_weights

__all__ = ["kmeans_pp", "kmeans_pp_outer"]

#: Metropolis–Hastings proposals per pick of the ``"mcmc"`` seeding (Bachem et al. 2016 use 200).
CHAIN_LENGTH = 200


def kmeans_pp(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None,
              allowed: Optional[torch.Tensor] = None, seed: int = 0, method: Optional[str] = None,
              chain_length: int = CHAIN_LENGTH, weights: Optional[torch.Tensor] = None) -> tuple:
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
        method: ``"exact"`` (D² sampling: by rejection, or one pass per pick under
            ``selection(d2_sampler="pass")``), ``"mcmc"`` (AFK-MC², ``chain_length`` proposals per
            pick: see :func:`jacal.acquisition.selection.d2.mcmc` for what it trades),
            ``"approximate"`` (= ``"mcmc"``) or ``"auto"`` (= ``"exact"``); default: the
            :func:`~jacal.acquisition.selection.selection` context's.
        chain_length: proposals per pick (``"mcmc"`` only).
        weights: ``(N,)`` non-negative row weights ``w``: each pick drawn ∝ ``w·D²`` (and, without
            ``centers``, the first pick the largest ``w·‖x‖²``); ``None``: all 1.

    Returns:
        ``(indices (k,), d2_at_pick (k,))`` (``d2_at_pick`` exact on every path, unweighted).
    """
    ok = allowed_mask(allowed, len(x))
    w = row_weights(weights, len(x))
    t0 = time.perf_counter()
    m = resolve(method, "mcmc", len(x) * memory.row_bytes(x), k)
    cs = DenseCenters(x, ok, k)
    picks, d2_at = [], []
    if centers is not None and len(centers):
        d2 = cs.start(centers)
    else:
        norms2 = torch.where(ok, row_norms(x, squared=True), torch.tensor(-1.0, dtype=torch.float64))
        first = int(torch.argmax(norms2 if w is None else torch.where(ok, w * norms2, norms2)))
        picks.append(first)
        d2_at.append(float(norms2[first]))
        d2 = cs.start_at(first)
    return _seed("kmeans_pp", cs, d2, m, k, picks, d2_at, ok, w, seed, chain_length, t0)


def kmeans_pp_outer(a: torch.Tensor, h: torch.Tensor, k: int, *, allowed: Optional[torch.Tensor] = None,
                    seed: int = 0, method: Optional[str] = None, chain_length: int = CHAIN_LENGTH,
                    weights: Optional[torch.Tensor] = None) -> tuple:
    """k-means++ seeding on implicit embeddings ``g_i = a_i ⊗ h_i`` (BADGE).

    ``‖g_i − g_j‖² = ‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² − 2⟨a_i, a_j⟩⟨h_i, h_j⟩`` — exact, never forming g.

    Args:
        a: ``(N, K)`` (softmax minus one-hot of the predicted class).
        h: ``(N, d)`` penultimate-layer embeddings (used as they are: no copy when float32).
        k: picks.
        allowed: ``(N,)`` bool, the rows that may be picked (default: all).
        seed: sampling seed.
        method: as for :func:`kmeans_pp`.
        chain_length: proposals per pick (``"mcmc"`` only).
        weights: ``(N,)`` non-negative row weights ``w``: draws ∝ ``w·D²`` and the first pick the
            largest ``w·‖g‖²`` (e.g. the probability that an item can be labeled); ``None``: all 1.

    Returns:
        ``(indices (k,), d2_at_pick (k,))``. The first pick is the largest-norm embedding (as in
        BADGE's reference code), each later one is sampled with probability ∝ D² (``"mcmc"``: by
        a chain whose stationary law that is); ``d2_at_pick`` is exact on every path (unweighted).
    """
    ok = allowed_mask(allowed, len(a))
    w = row_weights(weights, len(a))
    t0 = time.perf_counter()
    row = a[0].numel() * 8 + h[0].numel() * 4 if len(a) else 0  # a in float64, h in float32
    m = resolve(method, "mcmc", len(a) * row, k)
    cs = OuterCenters(a, h, ok, k)
    norms2 = cs.norms()
    first = int(torch.argmax(torch.where(ok, norms2 if w is None else w * norms2,
                                         torch.tensor(-1.0, dtype=torch.float64))))
    d2 = cs.start_at(first)
    return _seed("kmeans_pp_outer", cs, d2, m, k, [first], [float(norms2[first])], ok, w, seed, chain_length, t0)


def _seed(function: str, cs, d2: torch.Tensor, m: str, k: int, picks: list, d2_at: list, ok: torch.Tensor,
          w: Optional[torch.Tensor], seed: int, chain_length: int, t0: float) -> tuple:
    """The draws after the first: the path ``m`` (``"exact"`` or ``"mcmc"``) on the center set ``cs``,
    recorded for :func:`~jacal.acquisition.selection.memory.trace`."""
    rng = np.random.default_rng(seed)
    n = len(d2)
    if m == "mcmc":
        out = D2.mcmc(cs, d2, k, picks, d2_at, rng, ok, chain_length, w)
        memory.record(function, "mcmc", n, k, memory.seeding(cs, "mcmc", n, k, chain_length=chain_length), t0)
        return out
    if current().d2_sampler == "pass":
        out = D2.pass_per_pick(cs, d2, k, picks, d2_at, rng, ok, w)
        memory.record(function, "exact", n, k, memory.seeding(cs, "pass", n, k), t0)
        return out
    drawn = max(1, k - len(picks))
    *out, counts = D2.rejection(cs, d2, k, picks, d2_at, rng, ok, w)
    per_pick = counts["proposals"] / drawn
    traffic = memory.seeding(cs, "rejection", n, k, proposals_per_pick=per_pick,
                             batches_per_pick=counts["batches"] / drawn)
    memory.record(function, "exact", n, k, traffic, t0, proposals_per_pick=per_pick, refreshes=counts["refreshes"])
    return tuple(out)
