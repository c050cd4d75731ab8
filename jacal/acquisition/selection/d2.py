"""D² sampling (the k-means++ draw) over a center set, three ways.

Each sampler continues a seeding: ``picks`` and ``d2_at`` (lists, the picks made so far and each
one's D² when picked) grow to ``k``; ``d2 (N,)`` float64 is every row's D² to the starting centers
(any value outside ``allowed``); ``centers`` is a
:class:`~jacal.acquisition.selection.centers.DenseCenters` or ``OuterCenters`` already started;
``weights (N,)`` (non-negative, optional) make the draws ∝ ``weights·D²``. Each returns
``(picks (k,), d2_at (k,))`` as numpy arrays.

* :func:`pass_per_pick`: the algorithm as stated, one pass over the pool per pick. Obviously
  correct and bound by memory bandwidth: the reference the others are tested against.
* :func:`rejection`: the same law without the pass. D² only falls as centers are added, so each
  row's D² to the starting centers bounds it for the whole seeding; a pick draws rows ∝ that bound
  from one running sum and accepts a row with probability D²/bound, its D² computed for that row
  alone against the centers so far. Rejection sampling makes the accepted row exactly
  D²-distributed. A pick costs ΣD²₀/ΣD² proposals on average, the factor by which the seeding has
  lowered the k-means cost; on 512-wide embeddings that factor stays small
  (``benchmarks/bench_acquire.py --compare-passes`` reports it), and when proposals keep failing one
  pass lowers the bound to the current D². (A triangle-inequality bound that skips rows a new center
  cannot reach, Elkan 2003, Raff 2021, does not help: in 512 dimensions nearly every row stays within
  reach of a new center.)
* :func:`mcmc`: AFK-MC² (Bachem, Lucic, Hassani & Krause 2016), each draw the end of a
  Metropolis–Hastings chain; D²'s law up to the chain's mixing error.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch


def draw(cum: torch.Tensor, total: float, rng: np.random.Generator, size: int) -> torch.Tensor:
    """``size`` rows drawn ∝ the weights whose running sum is ``cum (N,)``: uniforms against the
    running sum (the inverse-CDF draw), never a row of zero weight. numpy's ``choice(p=...)`` would
    validate and renormalise ``p`` in several more passes over the pool per draw."""
    u = torch.from_numpy(rng.random(size) * total).to(cum.dtype)
    return torch.searchsorted(cum, u, right=True).clamp_(max=len(cum) - 1)


def _result(picks: list, d2_at: list) -> Tuple[np.ndarray, np.ndarray]:
    return np.asarray(picks, dtype=np.int64), np.asarray(d2_at)


def pass_per_pick(centers, d2: torch.Tensor, k: int, picks: list, d2_at: list, rng: np.random.Generator,
                  allowed: torch.Tensor, weights: Optional[torch.Tensor] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The k-means++ loop with one pass over the pool per pick (``d2`` is updated in place)."""
    chosen = ~allowed.clone()
    chosen[picks] = True
    d2[chosen] = 0.0
    while len(picks) < k:
        cum = torch.cumsum(d2 if weights is None else torch.nan_to_num(d2, nan=0.0) * weights, 0)
        total = float(cum[-1]) if len(cum) else 0.0
        if total <= 0:  # every remaining row coincides with a center: take the next unpicked in order
            j = int(torch.nonzero(~chosen)[0])
        else:
            j = int(draw(cum, total, rng, 1)[0])
        picks.append(j)
        d2_at.append(float(d2[j]))
        chosen[j] = True
        d2 = torch.fmin(d2, centers.d2_to(j))  # never raises a value: picked rows stay at 0, NaN rows (not allowed) too
    return _result(picks, d2_at)


def _exact_d2(centers, d2: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Every row's D² recomputed in float64, row by row against the centers, where ``d2 > 0``."""
    out = torch.zeros_like(d2)
    rows = torch.nonzero(d2 > 0).flatten()
    for s in range(0, len(rows), chunk):
        out[rows[s:s + chunk]] = centers.row_d2(rows[s:s + chunk])
    return out


def _bound(d2: torch.Tensor, allowed: torch.Tensor, weights: Optional[torch.Tensor], margin: bool = True) -> tuple:
    """``(bound, running sum of the proposal weights, their total)`` from D² ``(N,)``. The bound carries
    a rounding margin (it comes from float32 expansions, the accepted D² from float64 rows), absolute
    at ``1e-7 ×`` its largest value, so every row's proposal weight moves with that one value: last-bit
    differences of the embedding (e.g. from 1 vs 2 threads) change the draws more often than on the
    pass-per-pick path (the law is unaffected)."""
    b = torch.where(allowed, torch.nan_to_num(d2, nan=0.0), torch.zeros((), dtype=torch.float64))
    top = float(b.max()) if len(b) else 0.0
    b = torch.where(b > 0, b * (1 + 1e-5) + (1e-7 * top if margin else 0.0), b)
    cum = torch.cumsum(b if weights is None else b * weights, 0)
    return b, cum, float(cum[-1]) if len(b) else 0.0


def rejection(centers, d2: torch.Tensor, k: int, picks: list, d2_at: list, rng: np.random.Generator,
              allowed: torch.Tensor, weights: Optional[torch.Tensor] = None, *, batch: int = 16,
              max_rejections: int = 256) -> Tuple[np.ndarray, np.ndarray, dict]:
    """Exact D² sampling by rejection from the bound ``d2``: proposals ∝ ``weights·bound`` in batches of
    ``batch``, row ``i`` accepted with probability ``D²(i)/bound(i)`` (the first accepted of a batch
    wins; the rest are discarded). Picked rows have ``D² = 0`` and are never accepted again. After
    ``max_rejections`` proposals in a row fail, one pass (``centers.all_d2()``) brings the bound down
    to the current D²; when they fail again after such a pass, what is left of the bound is its
    rounding margin (rows that coincide with a center, e.g. copies of one image), and the rows are
    checked in float64 against the centers (a bound with no absolute margin: the copies drop to
    zero, and with nothing left the next unpicked row is taken in order). Returns ``(picks, d2_at, counts)``, ``counts``: the ``proposals`` examined,
    the ``batches`` drawn (each reads the centers once) and the ``refreshes`` of the bound."""
    bound, _, _ = _bound(d2, allowed, weights)
    chosen = ~allowed.clone()
    chosen[picks] = True
    bound[chosen] = 0.0  # rows already picked: zero weight from the start
    cum = torch.cumsum(bound if weights is None else bound * weights, 0)
    total = float(cum[-1]) if len(bound) else 0.0
    proposals = batches = refreshes = failed = 0
    stuck = False  # a refresh since the last accepted pick
    while len(picks) < k:
        if total <= 0:  # every remaining row coincides with a center: take the next unpicked in order
            j, dj = int(torch.nonzero(~chosen)[0]), 0.0
        else:
            rows = draw(cum, total, rng, batch)
            batches += 1
            d2_rows = centers.row_d2(rows)
            # a picked row's D² in float64 may come out a rounding error above 0: never accept it again
            hit = torch.nonzero((torch.from_numpy(rng.random(batch)) * bound[rows] < d2_rows) & ~chosen[rows])
            if len(hit) == 0:
                proposals += batch
                failed += batch
                if failed >= max_rejections:  # the bound is far above D²: bring it down
                    d2_all = centers.all_d2()
                    d2_all[chosen] = 0.0
                    if stuck:  # only the rounding margin is left: the rows' D² in float64
                        d2_all = _exact_d2(centers, torch.where(allowed, torch.nan_to_num(d2_all, nan=0.0),
                                                                torch.zeros((), dtype=d2_all.dtype)))
                    bound, cum, total = _bound(d2_all, allowed, weights, margin=not stuck)
                    refreshes += 1
                    failed = 0
                    stuck = True
                continue
            first = int(hit[0])
            proposals += first + 1
            j, dj = int(rows[first]), float(d2_rows[first])
        failed = 0
        stuck = False
        picks.append(j)
        d2_at.append(dj)
        chosen[j] = True
        centers.add(j)
    counts = {"proposals": proposals, "batches": batches, "refreshes": refreshes}
    return (*_result(picks, d2_at), counts)


def mcmc(centers, d2: torch.Tensor, k: int, picks: list, d2_at: list, rng: np.random.Generator,
         allowed: torch.Tensor, chain_length: int, weights: Optional[torch.Tensor] = None) -> Tuple[np.ndarray, np.ndarray]:
    """AFK-MC²: one pass builds the proposal ``q(x) = ½·D²(x, C₀)/ΣD² + ½/n`` (``C₀``: the starting
    centers); each pick is then the end of an independent Metropolis–Hastings chain of
    ``chain_length`` proposals drawn from ``q`` whose stationary law is D² sampling (``weights·D²``
    when given), and computes only those proposals' distances to the centers so far. The paper bounds
    the expected k-means cost by k-means++'s guarantee plus ``ε·Var(X)`` for chains of length
    ``O(log(k/ε)/ε)``; a pick costs ``chain_length × centers`` distances. When a chain ends on a row
    with D² = 0 (every proposal already a center), one exact draw over ``centers.all_d2()``."""
    chain_length = max(1, int(chain_length))
    ok = allowed.numpy()
    w = None if weights is None else weights.numpy()
    base = np.where(ok, np.nan_to_num(d2.numpy(), nan=0.0), 0.0)
    if w is not None:
        base = base * w
    chosen = ~ok.copy()
    chosen[picks] = True
    base[chosen] = 0.0
    free = ok & ~chosen
    q = np.where(free, 1.0, 0.0) / max(1, int(free.sum()))
    if base.sum() > 0:
        q = 0.5 * base / base.sum() + 0.5 * q
    q = q / q.sum()
    todo = k - len(picks)
    if todo <= 0:
        return _result(picks[:k], d2_at[:k])
    draws = rng.choice(len(q), size=(todo, chain_length), p=q)
    uniform = rng.random((todo, chain_length))
    for t in range(todo):
        props = draws[t]
        dy = centers.row_d2(torch.from_numpy(props)).numpy()
        dy[chosen[props]] = 0.0
        if w is not None:
            dy = dy * w[props]
        qy = q[props]
        u = uniform[t]
        cur = 0
        for j in range(1, chain_length):  # independent proposals: accept y with prob min(1, π(y)q(x) / (π(x)q(y)))
            if dy[j] * qy[cur] > u[j] * dy[cur] * qy[j]:
                cur = j
        if dy[cur] > 0:
            j = int(props[cur])
            dj = float(dy[cur]) if w is None else float(centers.row_d2(torch.from_numpy(props[cur:cur + 1]))[0])
        else:  # the chain found no row off the centers: one exact draw
            full = centers.all_d2().numpy().copy()
            full[chosen] = 0.0
            target = full if w is None else full * w
            total = target.sum()
            j = int(np.flatnonzero(~chosen)[0]) if total <= 0 else int(rng.choice(len(full), p=target / total))
            dj = float(full[j])
        picks.append(j)
        d2_at.append(dj)
        chosen[j] = True
        centers.add(j)
    return _result(picks, d2_at)
