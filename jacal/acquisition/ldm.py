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
from jacal.acquisition.selection.config import current
from jacal.acquisition.selection.d2 import rejection

__all__ = ["last_linear", "hypotheses", "least_disagree_metric", "ldm_seeding"]


#: Above this many numbers in the candidates' rows (``len(candidates) × d``), :func:`ldm_seeding`
#: draws by rejection instead of one pass over the rows per pick (the same law; other draws). 2²²
#: float32 numbers are 16 MB a pass; the benchmark protocols' pools (up to 20,000 × 128) stay below it.
PASS_MAX_NUMBERS = 1 << 22


def ldm_seeding(ldm: np.ndarray, h: np.ndarray, k: int, candidates: np.ndarray, *, seed: int = 0,
                weights: Optional[np.ndarray] = None, sampler: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
    """LDM-S picks ``(k,)`` among ``candidates`` and each pick's sampling weight ``γ·D`` (module docstring).

    ``weights (N,)``: non-negative item weights ``w`` (e.g. ``P(in | x)`` on an open pool): later picks
    are drawn ∝ ``w·(γ·D)²`` instead of ``(γ·D)²``.

    ``sampler``: ``"pass"``, the loop as stated, one pass over the candidates' rows per pick (bound by
    memory bandwidth: a million 784-wide rows are 3 GB read per pick); ``"rejection"``, the same law
    without the pass (:func:`_rejection_draws`); ``"auto"``, the pass up to :data:`PASS_MAX_NUMBERS`
    numbers or inside ``jacal.acquisition.selection.selection(d2_sampler="pass")``, rejection above.
    ``h`` is read a chunk of rows at a time (a memory-mapped array stays on disk under rejection)."""
    if sampler not in ("auto", "pass", "rejection"):
        raise ValueError(f"Expected `sampler` in ('auto', 'pass', 'rejection'), got {sampler!r}.")
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
    wc = None if weights is None else torch.from_numpy(np.nan_to_num(np.asarray(weights, dtype=np.float64)[cand], nan=0.0))
    first = 0 if wc is None else int(torch.argmax(wc * torch.from_numpy(gamma)))  # the smallest LDM (weighted)
    width = int(np.prod(h.shape[1:])) if h.ndim > 1 else 1
    if sampler == "auto":
        sampler = "pass" if len(cand) * width <= PASS_MAX_NUMBERS or current().d2_sampler == "pass" else "rejection"
    if sampler == "rejection":
        picks, w = _rejection_draws(h, cand, torch.from_numpy(gamma), wc, first, k, rng)
        return cand[picks], w
    f = torch.from_numpy(np.ascontiguousarray(h[cand], dtype=np.float32))
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
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


def _unit_rows(h: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(h[rows], dtype=np.float32)).reshape(len(rows), -1).double()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class _CosineCenters:
    """The picks so far as a center set for :func:`jacal.acquisition.selection.d2.rejection`, in the
    seeding's own metric: a row's "D²" is ``D²`` with ``D`` its cosine distance to the nearest pick (0
    below 1e-5, as the pass path cuts), all in float64. ``h`` is read a chunk of rows at a time."""

    def __init__(self, h: np.ndarray, cand: np.ndarray, first: int, chunk: int = 8192):
        self.h, self.cand, self.chunk = h, cand, chunk
        self.c = _unit_rows(h, cand[[first]])
        self.seen = 0  # centers folded into ref
        self.ref = torch.full((len(cand),), np.inf, dtype=torch.float64)  # D to the first `seen` centers

    @staticmethod
    def _dist(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        d = torch.clamp(1.0 - (x @ centers.T).max(dim=1).values, min=0.0)
        return torch.where(d < 1e-5, torch.zeros((), dtype=d.dtype), d)

    def add(self, j: int) -> None:
        self.c = torch.cat([self.c, _unit_rows(self.h, self.cand[[j]])])

    def row_d2(self, rows: torch.Tensor) -> torch.Tensor:
        return self._dist(_unit_rows(self.h, self.cand[np.asarray(rows)]), self.c).pow(2)

    def all_d2(self) -> torch.Tensor:
        """Every row's D² (one pass, against the centers added since the last)."""
        new = self.c[self.seen:]
        if len(new):
            for s in range(0, len(self.cand), self.chunk):
                d = self._dist(_unit_rows(self.h, self.cand[s:s + self.chunk]), new)
                self.ref[s:s + self.chunk] = torch.minimum(self.ref[s:s + self.chunk], d)
            self.seen = len(self.c)
        return self.ref.pow(2)


def _rejection_draws(h: np.ndarray, cand: np.ndarray, gamma: torch.Tensor, wc: Optional[torch.Tensor], first: int,
                     k: int, rng: np.random.Generator, *, batch: int = 16,
                     max_rejections: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """The seeding's draws ∝ ``w·(γ·D)²`` by the D² samplers' rejection
    (:func:`jacal.acquisition.selection.d2.rejection`), over :class:`_CosineCenters` with the item
    weights ``w·γ²``: ``D`` only falls as picks are added, so its value at the last pass bounds it, and
    a proposal is accepted with probability (current weight / bound), which draws the law exactly.
    Positions in ``cand`` and each pick's ``γ·D`` are returned."""
    centers = _CosineCenters(h, cand, first)
    g2 = gamma.pow(2) if wc is None else gamma.pow(2) * wc
    allowed = torch.ones(len(cand), dtype=torch.bool)
    picks, d2_at, _ = rejection(centers, centers.all_d2(), k, [first], [1.0], rng, allowed, g2, batch=batch,
                                max_rejections=max_rejections)
    return picks, gamma.numpy()[picks] * np.sqrt(d2_at)  # the first pick's D counts as 1, as on the pass path
