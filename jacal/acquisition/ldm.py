"""The least disagree metric (LDM) and LDM-S seeding (Cho et al., ICLR 2024).

The metric (:func:`least_disagree_metric`, with :func:`last_linear` and :func:`hypotheses`) is computed
below the feature pass, in :mod:`jacal._internal.scores` (its docstring has the maths); it is public here, beside
the seeding that reads it.

LDM-S seeding (the reference's ``query_by_LDMS``): items sorted by LDM, ``q`` = the k-th smallest,
weights ``γ = exp(−max(LDM − q, 0) / q)`` with the tail's weights rescaled to sum to k and capped at 1;
the first pick is the smallest LDM, then each pick is drawn with probability ∝ (γ · D)², D the cosine
distance of the item's penultimate features to the nearest pick so far.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from jacal._internal.scores import hypotheses, last_linear, least_disagree_metric

__all__ = ["last_linear", "hypotheses", "least_disagree_metric", "ldm_seeding"]


def ldm_seeding(ldm: np.ndarray, h: np.ndarray, k: int, candidates: np.ndarray, *, seed: int = 0,
                weights: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """LDM-S picks ``(k,)`` among ``candidates`` and each pick's sampling weight ``γ·D`` (module docstring).

    ``weights (N,)``: non-negative item weights ``w`` (e.g. ``P(in | x)`` on an open pool): later picks
    are drawn ∝ ``w·(γ·D)²`` instead of ``(γ·D)²``."""
    rng = np.random.default_rng(seed)
    cand = np.asarray(candidates, dtype=np.int64)
    lv = ldm[cand]
    order = np.argsort(lv, kind="stable")
    cand, lv = cand[order], lv[order]
    q = lv[min(k, len(lv) - 1)]
    if q <= 0:
        pos = lv[lv > 0]
        q = pos.min() if len(pos) else 1.0
    gamma = np.exp(-np.maximum(lv - q, 0.0) / q)
    tail = gamma[k:].sum()
    if tail > 0:
        gamma[k:] *= k / tail
    gamma = np.minimum(gamma, 1.0)
    f = torch.from_numpy(np.ascontiguousarray(h[cand], dtype=np.float32))
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    wc = None if weights is None else torch.from_numpy(np.nan_to_num(np.asarray(weights, dtype=np.float64)[cand], nan=0.0))
    first = 0 if wc is None else int(torch.argmax(wc * torch.from_numpy(gamma)))  # the smallest LDM (weighted)
    picks = [first]
    dist = torch.clamp(1.0 - f @ f[first], min=0.0).double()
    dist[dist < 1e-5] = 0.0
    weights = [float(gamma[first])]
    gam = torch.from_numpy(gamma)
    while len(picks) < k:
        px = (gam * dist) ** 2
        if wc is not None:
            px = px * wc
        px[picks] = 0.0
        total = float(px.sum())
        if total <= 0:  # every remaining item sits on a pick: take the next by LDM order
            nxt = next(i for i in range(len(cand)) if i not in set(picks))
        else:
            nxt = int(rng.choice(len(cand), p=(px / total).numpy()))
        weights.append(float(gam[nxt] * dist[nxt]))
        picks.append(nxt)
        dn = torch.clamp(1.0 - f @ f[nxt], min=0.0).double()
        dn[dn < 1e-5] = 0.0
        dist = torch.minimum(dist, dn)
    return cand[np.array(picks)], np.array(weights)
