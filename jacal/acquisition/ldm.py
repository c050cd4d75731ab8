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
from jacal.acquisition.selection.d2 import draw

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


def _unit_rows(h: np.ndarray, rows: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(h[rows], dtype=np.float32)).reshape(len(rows), -1).to(dtype)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _rejection_draws(h: np.ndarray, cand: np.ndarray, gamma: torch.Tensor, wc: Optional[torch.Tensor], first: int,
                     k: int, rng: np.random.Generator, *, batch: int = 16, max_rejections: int = 256,
                     chunk: int = 8192) -> Tuple[np.ndarray, np.ndarray]:
    """The seeding's draws ∝ ``w·(γ·D)²`` by rejection, as :func:`jacal.acquisition.selection.d2.rejection`
    draws D²: the cosine distance ``D`` of a row to its nearest pick only falls as picks are added, so
    ``w·(γ·D₀)²``, with ``D₀`` its distance to the picks at the last pass, bounds its weight. Proposals
    are drawn ∝ that bound (one running sum), and a row is accepted with probability (weight / bound),
    its ``D`` computed in float64 against the picks so far: the accepted row follows the law exactly.
    After ``max_rejections`` failed proposals in a row, one pass (against the picks added since the
    last) lowers the bound; if they fail again, the rows' ``D`` are recomputed in float64 (what is left
    of the bound is its rounding margin). Positions in ``cand`` and each pick's ``γ·D`` are returned."""
    n = len(cand)
    g2 = gamma.pow(2) if wc is None else gamma.pow(2) * wc
    centers = _unit_rows(h, cand[[first]], torch.float64)

    def pass_over(new: torch.Tensor, exact: bool = False) -> torch.Tensor:
        out = torch.empty(n, dtype=torch.float64)
        for s in range(0, n, chunk):
            x = _unit_rows(h, cand[s:s + chunk], torch.float64 if exact else torch.float32)
            out[s:s + chunk] = torch.clamp(1.0 - (x @ new.to(x.dtype).T).max(dim=1).values.double(), min=0.0)
        out[out < (1e-5 if exact else 0.5e-5)] = 0.0  # the pass path's tie at a pick (float32 passes: a looser cut)
        return out

    def bound_of(d0: torch.Tensor, margin: bool) -> Tuple[torch.Tensor, torch.Tensor, float]:
        b = g2 * d0.pow(2)
        b[chosen] = 0.0
        if margin:  # the pass is float32, the accepted D float64: a rounding margin keeps the bound above
            top = float(b.max()) if n else 0.0
            b = torch.where(b > 0, b * (1 + 1e-4) + 1e-7 * top, b)
        cum = torch.cumsum(b, 0)
        return b, cum, float(cum[-1]) if n else 0.0

    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[first] = True
    d0 = pass_over(centers)
    seen = 1  # picks d0 is computed against
    bound, cum, total = bound_of(d0, True)
    picks, out_w = [first], [float(gamma[first])]
    failed, stuck = 0, False
    while len(picks) < k:
        if total <= 0:  # every remaining row sits on a pick: take the next by LDM order
            j = int(torch.nonzero(~chosen)[0])
            dj = 0.0
        else:
            rows = draw(cum, total, rng, batch)
            x = _unit_rows(h, cand[rows.numpy()], torch.float64)
            d = torch.clamp(1.0 - (x @ centers.T).max(dim=1).values, min=0.0)
            d[d < 1e-5] = 0.0
            target = g2[rows] * d.pow(2)
            hit = torch.nonzero((torch.from_numpy(rng.random(batch)) * bound[rows] < target) & ~chosen[rows])
            if len(hit) == 0:
                failed += batch
                if failed >= max_rejections:  # the bound is far above the weights: bring it down
                    d0 = torch.minimum(d0, pass_over(centers[seen:])) if not stuck else pass_over(centers, exact=True)
                    seen = len(centers)
                    bound, cum, total = bound_of(d0, margin=not stuck)
                    failed, stuck = 0, True
                continue
            first_hit = int(hit[0])
            j, dj = int(rows[first_hit]), float(d[first_hit])
        failed, stuck = 0, False
        picks.append(j)
        out_w.append(float(gamma[j]) * dj)
        chosen[j] = True
        bound[j] = 0.0
        cum = torch.cumsum(bound, 0)
        total = float(cum[-1])
        centers = torch.cat([centers, _unit_rows(h, cand[[j]], torch.float64)])
    return np.asarray(picks, dtype=np.int64), np.asarray(out_w)
