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

Below the memory wall. The exact paths read the whole embedding once per pick: at a million items
and 512 numbers each, k = 1,000 picks stream 2 TB, so their speed is the machine's memory bandwidth
(``benchmarks/bench_acquire.py`` measures both). Each function therefore also has an approximate
path, chosen by ``method`` (keyword, default ``None``: the :func:`selection` context's, itself
``"auto"`` unless set):

* ``"exact"``: the algorithm as stated above (the only path before; still the reference in tests).
* ``"mcmc"`` (:func:`kmeans_pp`, :func:`kmeans_pp_outer`): AFK-MC² seeding (Bachem, Lucic, Hassani
  & Krause 2016, "Fast and provably good seedings for k-means"). One pass over the pool builds the
  proposal ``q(x) = ½·D²(x, C₀)/ΣD² + ½/n`` (``C₀``: the starting centers or the first pick); each
  pick is then the end of a Metropolis–Hastings chain of ``chain_length`` proposals drawn from ``q``
  whose stationary law is D² sampling, and it only computes those proposals' distances to the
  centers chosen so far. Per pick it reads ``chain_length`` rows plus the centers instead of all
  ``N`` rows. Trades: the picks follow D² sampling up to the chain's mixing error, not exactly (the
  paper bounds the expected k-means cost by k-means++'s guarantee plus ``ε·Var(X)`` for chains of
  length ``O(log(k/ε)/ε)``; 200, its experiments' setting, is the default here), and the cost of a
  pick grows with the number of centers (``chain_length × centers`` distances).
* ``"sketch"`` (:func:`k_center_greedy`): the greedy runs exactly, but on a seeded Gaussian
  Johnson–Lindenstrauss sketch ``(x − μ) S`` (``S (d, sketch_dim)``, entries N(0, 1/sketch_dim))
  of the allowed rows, built in one pass. Per pick it reads ``sketch_dim`` numbers per row instead of
  ``d``; the extra memory is one float32 ``(n_allowed, sketch_dim)`` matrix. Trades: squared
  distances are those of the sketch (relative error of about ``√(2/sketch_dim)``, 18% at 64), so
  the farthest-point order can differ from the exact one; the reported distance of each pick is
  still its exact distance to the centers before it.
* ``"approximate"``: each function's approximate path (``"mcmc"`` or ``"sketch"``).
* ``"auto"`` (the default): k-center greedy runs ``"exact"`` while the exact path's traffic
  (embedding bytes × k) stays below :data:`AUTO_EXACT_MAX_BYTES` and ``"sketch"`` above; the
  k-means++ seedings stay ``"exact"`` (:data:`AUTO_MCMC`). Measured (``benchmarks/bench_acquire.py
  --compare-exact``, one run each on a shared 2-core machine): the sketch selected coreset's 1,000
  of 60,000 in 0.43× the exact time with a covering radius 0.90× the exact greedy's (overlap 35%);
  AFK-MC² on jacobian's boundary embeddings at 20,000 items took 1.26× the exact time (its
  ``chain_length × centers`` distances cost more than 1,000 passes over 20,000 rows) and its
  picks' k-means cost was 1.15× the exact seeding's, where exact at another seed gave 1.00×: a
  loss beyond seed noise (on badge at 60,000: 0.97× the time, cost 1.00×), so it is opt-in until a
  longer chain or larger pools measure better.

:func:`trace` records what each call ran (method, bytes read per pick, seconds), for the benchmark.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Iterator, List, Optional

import numpy as np
import torch

__all__ = ["k_center_greedy", "kmeans_pp", "kmeans_pp_outer", "min_distances", "row_mean", "row_norms", "selection",
           "trace", "SELECTION_METHODS", "AUTO_EXACT_MAX_BYTES", "AUTO_MCMC", "CHAIN_LENGTH", "SKETCH_DIM", "PRUNE"]

_CHUNK_ELEMENTS = 1 << 22  # temporaries of at most 4M numbers (32 MB in float64)
_CHUNK_ROWS = 1 << 14  # rows gathered at a time by the pruned updates

#: The values ``method`` (and :func:`selection`) accept; ``"mcmc"`` applies to the k-means++
#: seedings, ``"sketch"`` to k-center greedy.
SELECTION_METHODS = ("auto", "exact", "approximate", "mcmc", "sketch")
#: ``"auto"`` keeps k-center exact while the embedding's bytes × k are at most this (16 GB: a few
#: seconds of memory traffic on a laptop; the digits and 20,000-item MNIST loops stay exact, a
#: 60,000-item pool of 512-wide embeddings with k = 1,000 does not).
AUTO_EXACT_MAX_BYTES = 16 * 10 ** 9
#: Whether ``"auto"`` lets the k-means++ seedings use ``"mcmc"`` above :data:`AUTO_EXACT_MAX_BYTES`
#: (off: measured slower at 20,000 items and 15% worse in k-means cost, see the module docstring).
AUTO_MCMC = False
#: Metropolis–Hastings proposals per pick of the ``"mcmc"`` seeding (Bachem et al. 2016 use 200).
CHAIN_LENGTH = 200
#: Columns of the ``"sketch"`` path's Gaussian sketch.
SKETCH_DIM = 64
#: Whether the exact paths skip the rows a new center cannot come closer to (:class:`_Nearest`;
#: the same picks). ``False`` makes them read every row every pick, as before (the benchmark's baseline).
PRUNE = True

_METHOD: contextvars.ContextVar = contextvars.ContextVar("jacal_selection_method", default="auto")
_TRACE: contextvars.ContextVar = contextvars.ContextVar("jacal_selection_trace", default=None)


@contextlib.contextmanager
def selection(method: str) -> Iterator[None]:
    """Within the block, diversity functions called without ``method`` use this one (as
    ``sklearn.config_context`` does for its settings): e.g. ``with selection("exact"):`` makes every
    strategy select exactly, without strategies passing anything through.

    >>> import torch
    >>> x = torch.randn(50, 4)
    >>> with selection("exact"):
    ...     picks, _ = kmeans_pp(x, 3, seed=0)
    >>> picks.shape
    (3,)
    """
    _check_method(method)
    token = _METHOD.set(method)
    try:
        yield
    finally:
        _METHOD.reset(token)


@contextlib.contextmanager
def trace() -> Iterator[List[dict]]:
    """Collect one record per diversity call made inside the block: ``{"function", "method", "n",
    "k", "bytes_per_pick", "setup_bytes", "seconds"}``; ``bytes_per_pick`` counts the arrays each pick
    reads (the embedding or its sketch or the chain's rows and the centers, plus the per-row
    vectors), ``setup_bytes`` the passes made once (norms, mean, sketch, proposal)."""
    calls: List[dict] = []
    token = _TRACE.set(calls)
    try:
        yield calls
    finally:
        _TRACE.reset(token)


def _check_method(method: str) -> str:
    if method not in SELECTION_METHODS:
        raise ValueError(f"Expected `method` to be one of {list(SELECTION_METHODS)}, got {method!r}.")
    return method


def _resolve(method: Optional[str], approximate: str, exact_bytes: int, k: int) -> str:
    """The path to run: ``method`` or the context's, with ``"auto"``/``"approximate"`` resolved."""
    m = _check_method(method if method is not None else _METHOD.get())
    if m == "auto":
        big = exact_bytes * max(int(k), 1) > AUTO_EXACT_MAX_BYTES
        m = approximate if big and (approximate != "mcmc" or AUTO_MCMC) else "exact"
    if m == "approximate":
        m = approximate
    if m not in ("exact", approximate):
        raise ValueError(f"method {m!r} does not apply here: use 'exact' or {approximate!r}.")
    return m


def _record(function: str, method: str, n: int, k: int, bytes_per_pick: float, setup_bytes: float, t0: float,
            rows_per_pick: Optional[float] = None) -> None:
    calls = _TRACE.get()
    if calls is not None:
        calls.append({"function": function, "method": method, "n": int(n), "k": int(k),
                      "bytes_per_pick": float(bytes_per_pick), "setup_bytes": float(setup_bytes),
                      "seconds": time.perf_counter() - t0,
                      "rows_per_pick": float(n if rows_per_pick is None else rows_per_pick)})


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
    """``‖x_i − shift‖`` (or its square) for every row of ``x (N, d)``, returned in float64, a chunk of
    rows at a time (no N × d temporary). Each row's sum runs in ``x``'s dtype (float32: relative error
    about 1e-6, the precision the distances built on it have anyway; a float64 cast of every chunk
    cost ten times the pass)."""
    out = torch.empty(len(x), dtype=torch.float64)
    step = _row_chunk(x)
    for s in range(0, len(x), step):
        xc = x[s:s + step]
        if shift is not None:
            xc = xc - shift.to(x.dtype)
        out[s:s + step] = xc.square().sum(dim=1)
    return out if squared else out.sqrt()


def row_mean(x: torch.Tensor, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The mean ``(d,)`` of the ``allowed`` rows of ``x (N, d)`` (others may hold NaN), in ``x``'s dtype,
    accumulated in float64 a chunk of rows at a time."""
    ok = _allowed(allowed, len(x))
    total = torch.zeros(x.shape[1:], dtype=torch.float64)
    step = _row_chunk(x)
    for s in range(0, len(x), step):
        xc, okc = x[s:s + step], ok[s:s + step]
        total += (xc if bool(okc.all()) else xc[okc]).double().sum(dim=0)
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

    def to_rows(self, c: torch.Tensor, rows: Optional[torch.Tensor]) -> torch.Tensor:
        """:meth:`to_vector` for ``rows`` only (a LongTensor; ``None``: every row), by the same formula."""
        if rows is None:
            return self.to_vector(c)
        w = c.to(self.x.dtype) - self.mu
        return (self.sq[rows] - 2 * (self.x[rows] @ w - self.mu @ w) + w @ w).clamp_min_(0)

    def to_row(self, j: int) -> torch.Tensor:
        return self.to_vector(self.x[j])

    def to_row64(self, j: int) -> torch.Tensor:
        return self.to_vector(self.x[j]).double()

    def to_nearest(self, centers: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
        """Squared distance to the nearest row of ``centers (M, d)``, a chunk of centers at a time."""
        return self.to_nearest_index(centers, chunk)[0]

    def to_nearest_index(self, centers: torch.Tensor, chunk: Optional[int] = None) -> tuple:
        """``(d2, index)``: :meth:`to_nearest` (float64, 0 outside ``allowed``) and the nearest center's row."""
        c = centers.reshape(len(centers), -1).to(self.x.dtype) - self.mu
        chunk = chunk or max(1, _CHUNK_ELEMENTS // max(1, len(self.x)))
        d2 = torch.full((len(self.x),), float("inf"), dtype=self.x.dtype)
        index = torch.zeros(len(self.x), dtype=torch.int64)
        for s in range(0, len(c), chunk):
            cc = c[s:s + chunk]
            prod = self.x @ cc.T - (self.mu @ cc.T)[None, :]
            part, where = (self.sq[:, None] - 2 * prod + cc.pow(2).sum(dim=1)[None, :]).clamp_min_(0).min(dim=1)
            closer = part < d2
            d2 = torch.where(closer, part, d2)
            index = torch.where(closer, where + s, index)
        return torch.where(self.allowed, d2.double(), torch.zeros((), dtype=torch.float64)), index

    def centers_store(self, start: torch.Tensor, k: int):
        """A float64 store of centers (``start (M, d)`` and up to ``k`` rows of ``x`` added later) and
        the ``center_d2(j)`` callable of :class:`_Nearest` over it, which measures row ``j`` against
        every center so far and then adds it."""
        flat = start.reshape(len(start), -1).double()
        held = {"c": torch.empty(len(flat) + k, flat.shape[1], dtype=torch.float64), "n": len(flat)}
        held["c"][:len(flat)] = flat

        def center_d2(j: int) -> torch.Tensor:
            c = self.x[j].double()
            n = held["n"]
            out = (held["c"][:n] - c).pow(2).sum(dim=1)
            held["c"][n] = c
            held["n"] = n + 1
            return out

        scale2 = float((flat - self.mu.double()).pow(2).sum(dim=1).max()) if len(flat) else 0.0
        return center_d2, scale2

    def scale2(self) -> float:
        """The largest squared norm of an allowed row around the mean (the pruning's absolute margin)."""
        sq = self.sq[self.allowed]
        return float(sq.max()) if len(sq) else 0.0


class _Nearest:
    """Each row's squared distance to its nearest center (``d2``, float64) and which center that is,
    kept exact as centers are added while reading only the rows a new center can come closer to.

    The bound (Elkan 2003; for k-means++ seeding, Raff 2021, "Exact acceleration of k-means++ and
    k-means‖"): a row ``x`` whose nearest center is ``c`` at distance ``r`` cannot come closer to a new
    center ``c′`` when ``‖c′ − c‖ ≥ 2r``, since then ``‖x − c′‖ ≥ ‖c′ − c‖ − r ≥ r``. Each addition
    computes the new center's distance to every center so far (``centers × d`` numbers), tests every
    row (its center and a float32 bound: 8 bytes, instead of the row's ``d`` numbers), and evaluates the
    distance only for the rows that fail the test; rows that pass keep exactly the value the full
    update ``min(d2, ‖x − c′‖²)`` would give them. The test carries a margin (relative ``1e-6``, and
    an absolute one of ``1e-5 × the largest squared norm`` around the mean, above float32's rounding
    of the expanded distances), so no row is skipped on rounding. Rows at ``d2 ≤ 0`` (picked, not
    allowed, or marked −1) are never touched.

    Args:
        d2: ``(N,)`` float64 squared distances to the starting centers (modified in place).
        assign: ``(N,)`` int index of each row's nearest starting center.
        center_d2: ``fn(j) -> (n_centers,)`` float64 squared distances from row ``j`` to every center so
            far, in the order centers were added (the caller adds ``j`` as the next one afterwards).
        rows_d2: ``fn(j, rows) -> (len(rows),)`` squared distances from ``rows`` (a LongTensor, or
            ``None`` for all rows) to row ``j``, as the unpruned update computes them.
        n_centers: the number of starting centers.
        scale2: the largest squared norm (around the mean), for the absolute margin.
        allowed: ``(N,)`` bool; other rows are never touched.
        prune: ``False`` evaluates every row every time (the unpruned reference).
    """

    def __init__(self, d2: torch.Tensor, assign: torch.Tensor, center_d2, rows_d2, n_centers: int, scale2: float,
                 allowed: torch.Tensor, prune: Optional[bool] = None):
        self.d2, self.assign = d2, assign.to(torch.int32)
        self.center_d2, self.rows_d2 = center_d2, rows_d2
        self.n_centers = int(n_centers)
        self.tol = 1e-5 * max(float(scale2), 1e-30)
        self.prune = PRUNE if prune is None else bool(prune)
        self.rows_read = 0
        self.updates = 0
        # 2·r·(1 + 1e-6) with the margin, per row (float32: the test reads 4 bytes per row for it);
        # 0 for rows that are never touched (not allowed, at a center)
        self.reach = torch.where(allowed & (d2 > 0), self._reach(d2), torch.zeros((), dtype=torch.float32))

    def _reach(self, d2: torch.Tensor) -> torch.Tensor:
        return (d2.double() + self.tol).clamp_min_(0).sqrt_().mul_(2 * (1 + 1e-6)).float()

    def add(self, j: int) -> torch.Tensor:
        """Make row ``j`` a center; returns ``d2`` (updated in place)."""
        d2, n = self.d2, len(self.d2)
        new_id = self.n_centers
        self.updates += 1
        rows = None
        if self.prune:
            gap = self.center_d2(j).clamp_min(0).sqrt().float()  # ‖c′ − c‖ for every center c so far
            rows = torch.nonzero(torch.index_select(gap, 0, self.assign) < self.reach).squeeze(1)
            if len(rows) > n // 2:  # most rows: one streaming pass beats a gather
                rows = None
        self.n_centers += 1
        if rows is None:
            new = self.rows_d2(j, None)
            closer = torch.nonzero(new < d2).squeeze(1)
            self._lower(closer, new[closer], new_id)
            self.rows_read += n
            return d2
        for a in range(0, len(rows), _CHUNK_ROWS):
            r = rows[a:a + _CHUNK_ROWS]
            new = self.rows_d2(j, r)
            closer = new < d2[r]
            self._lower(r[closer], new[closer], new_id)
        self.rows_read += len(rows)
        return d2

    def _lower(self, rows: torch.Tensor, values: torch.Tensor, center: int) -> None:
        self.d2[rows] = values
        self.assign[rows] = center
        self.reach[rows] = torch.where(values > 0, self._reach(values), torch.zeros((), dtype=torch.float32))

    @property
    def rows_per_update(self) -> float:
        return self.rows_read / max(1, self.updates)


def min_distances(x: torch.Tensor, centers: torch.Tensor, *, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Distance ``(N,)`` from each row of ``x (N, d)`` to its nearest row of ``centers (M, d)`` (float64;
    0 for rows outside ``allowed``). Both sides are shifted by the mean of the allowed rows of ``x``,
    which shrinks the norms and so the cancellation of the expansion (in float32, distances are
    accurate to ~1e-3·spread)."""
    return _Distances(x, _allowed(allowed, len(x))).to_nearest(centers).sqrt()


def k_center_greedy(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None,
                    allowed: Optional[torch.Tensor] = None, seed: int = 0, method: Optional[str] = None,
                    sketch_dim: int = SKETCH_DIM, prune: Optional[bool] = None) -> tuple:
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
            or ``"auto"``; default: the :func:`selection` context's (``"auto"``).
        sketch_dim: the sketch's columns (``"sketch"`` only; at least ``d``: exact instead).
        prune: skip the rows a pick cannot come closer to (:class:`_Nearest`; the same picks and
            distances); ``False`` reads every row every pick (the reference the benchmark times);
            default :data:`PRUNE`.

    Returns:
        ``(indices (k,), distances (k,))``: picks (rows of ``x``) in order and each one's distance
        to the nearest earlier center at the time it was picked (exact on both paths).
    """
    ok = _allowed(allowed, len(x))
    t0 = time.perf_counter()
    m = _resolve(method, "sketch", x.element_size() * x[0].numel() * len(x), k)
    d = x[0].numel() if len(x) else 0
    if m == "sketch" and sketch_dim < d:
        picks, dists, n_ok = _k_center_sketch(x, k, centers, ok, seed, sketch_dim)
        _record("k_center_greedy", "sketch", len(x), k, n_ok * (4 * sketch_dim + 3 * 4),
                2 * x.element_size() * d * len(x) + n_ok * x.element_size() * d, t0)
        return picks, dists
    picks, dists, rows = _k_center_exact(x, k, centers, ok, seed, prune)
    _record("k_center_greedy", "exact", len(x), k, rows * x.element_size() * d + len(x) * (x.element_size() + 4 + 1),
            2 * x.element_size() * d * len(x), t0, rows)
    return picks, dists


def _k_center_exact(x: torch.Tensor, k: int, centers: Optional[torch.Tensor], ok: torch.Tensor, seed: int,
                    prune: Optional[bool] = None) -> tuple:
    dist = _Distances(x, ok)
    if centers is not None and len(centers):
        d2, assign = dist.to_nearest_index(centers)
        d2, start = d2.to(x.dtype), centers
    else:
        d2, assign, start = dist.to_vector(dist.mu), torch.zeros(len(x), dtype=torch.int64), dist.mu[None, :]
    d2[~ok] = -1.0
    center_d2, scale2 = dist.centers_store(start, k)
    near = _Nearest(d2, assign, center_d2, lambda j, rows: dist.to_rows(x[j], rows), len(start),
                    max(scale2, dist.scale2()), ok, prune=prune)
    jitter = torch.from_numpy(np.random.default_rng(seed).random(len(x)) * 1e-9).to(x.dtype)
    picks, dists = [], []
    for _ in range(k):
        i = int(torch.argmax(d2 + jitter * d2.max().clamp_min(1e-30)))
        picks.append(i)
        dists.append(float(d2[i].clamp_min(0).sqrt()))
        near.add(i)  # rows not allowed stay at −1 (never below: new distances are ≥ 0 or NaN)
        d2[i] = -1.0
    return np.asarray(picks, dtype=np.int64), np.asarray(dists), near.rows_per_update


def _sketch_matrix(d: int, dim: int, seed: int) -> torch.Tensor:
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
    s = _sketch_matrix(flat.shape[1], dim, seed).to(flat.dtype)
    mu_s = (mu.to(flat.dtype) @ s)
    y = torch.empty(len(rows), dim, dtype=torch.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[1]))
    for a in range(0, len(rows), step):
        y[a:a + step] = (flat[rows[a:a + step]] @ s - mu_s).float()
    cy = None
    if centers is not None and len(centers):
        cy = (centers.reshape(len(centers), -1).to(flat.dtype) @ s - mu_s).float()
    sub, _, _ = _k_center_exact(y, k, cy, torch.ones(len(rows), dtype=torch.bool), seed)
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


def kmeans_pp_outer(a: torch.Tensor, h: torch.Tensor, k: int, *, allowed: Optional[torch.Tensor] = None,
                    seed: int = 0, method: Optional[str] = None, chain_length: int = CHAIN_LENGTH,
                    prune: Optional[bool] = None) -> tuple:
    """k-means++ seeding on implicit embeddings ``g_i = a_i ⊗ h_i`` (BADGE).

    ``‖g_i − g_j‖² = ‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² − 2⟨a_i, a_j⟩⟨h_i, h_j⟩`` — exact, never forming g.

    Args:
        a: ``(N, K)`` (softmax minus one-hot of the predicted class).
        h: ``(N, d)`` penultimate-layer embeddings (used as they are: no copy when float32).
        k: picks.
        allowed: ``(N,)`` bool, the rows that may be picked (default: all).
        seed: sampling seed.
        method: ``"exact"`` (D² sampling, one pass over ``a`` and ``h`` per pick), ``"mcmc"``
            (AFK-MC², ``chain_length`` proposals per pick: see the module docstring for what it
            trades), ``"approximate"`` (= ``"mcmc"``) or ``"auto"``; default: the :func:`selection`
            context's (``"auto"``).
        chain_length: proposals per pick (``"mcmc"`` only).
        prune: ``"exact"`` skips the rows a pick cannot come closer to (:class:`_Nearest`: the same
            law, the same D²); ``False`` reads every row every pick; default :data:`PRUNE`.

    Returns:
        ``(indices (k,), d2_at_pick (k,))``. The first pick is the largest-norm embedding (as in
        BADGE's reference code), each later one is sampled with probability ∝ D² (``"mcmc"``: by
        a chain whose stationary law that is); ``d2_at_pick`` is exact on both paths.
    """
    ok = _allowed(allowed, len(a))
    t0 = time.perf_counter()
    row_bytes = a[0].numel() * 8 + h[0].numel() * 4 if len(a) else 0
    m = _resolve(method, "mcmc", len(a) * row_bytes, k)
    a = a.double()
    h = h if h.dtype == torch.float32 else h.float()
    norms2 = torch.where(ok, a.pow(2).sum(1) * row_norms(h, squared=True), torch.zeros((), dtype=torch.float64))
    rng = np.random.default_rng(seed)
    first = int(torch.argmax(torch.where(ok, norms2, torch.tensor(-1.0, dtype=torch.float64))))
    picks, d2_at = [first], [float(norms2[first])]

    def d2_to(j: int) -> torch.Tensor:
        d2 = (norms2 + norms2[j] - 2 * (a @ a[j]) * (h @ h[j]).double()).clamp_min(0)
        return torch.where(ok, d2, torch.zeros((), dtype=torch.float64))

    if m == "exact":
        cents = torch.empty(k, dtype=torch.int64)
        cents[0] = first
        held = {"n": 1}

        def center_d2(j: int) -> torch.Tensor:
            c = cents[:held["n"]]
            out = norms2[c] + norms2[j] - 2 * (a[c] @ a[j]) * (h[c] @ h[j]).double()
            cents[held["n"]] = j
            held["n"] += 1
            return out

        def rows_d2(j: int, rows: Optional[torch.Tensor]) -> torch.Tensor:
            if rows is None:
                return d2_to(j)
            return (norms2[rows] + norms2[j] - 2 * (a[rows] @ a[j]) * (h[rows] @ h[j]).double()).clamp_min(0)

        d2 = d2_to(first)
        near = _Nearest(d2, torch.zeros(len(a), dtype=torch.int64), center_d2, rows_d2, 1,
                        float(norms2.max()) if len(a) else 0.0, ok, prune=prune)
        out = _d2_sampling(d2, near.add, k, picks, d2_at, rng, ok)
        rows = near.rows_per_update
        _record("kmeans_pp_outer", "exact", len(a), k, rows * row_bytes + len(a) * (3 * 8 + 4 + 1),
                2 * len(a) * row_bytes, t0, rows)
        return out
    centers = [first]

    def to_centers(rows: np.ndarray) -> np.ndarray:
        c = torch.as_tensor(centers)
        r = torch.from_numpy(rows)
        d2 = norms2[r][:, None] + norms2[c][None, :] - 2 * (a[r] @ a[c].T) * (h[r] @ h[c].T).double()
        return d2.clamp_min(0).min(dim=1).values.numpy()

    def to_all() -> torch.Tensor:
        d2 = d2_to(centers[0])
        for j in centers[1:]:
            d2 = torch.minimum(d2, d2_to(j))
        return d2

    out = _mcmc_sampling(d2_to(first), to_centers, centers.append, to_all, k, picks, d2_at, rng, ok, chain_length)
    _record("kmeans_pp_outer", "mcmc", len(a), k, chain_length * row_bytes + (1 + k / 2) * (row_bytes + 8),
            3 * len(a) * row_bytes, t0)
    return out


def _mcmc_sampling(d2: torch.Tensor, to_centers, add_center, to_all, k: int, picks: list, d2_at: list,
                   rng: np.random.Generator, allowed: torch.Tensor, chain_length: int) -> tuple:
    """AFK-MC² (Bachem et al. 2016): the k-means++ loop with each D² draw replaced by an independent
    Metropolis–Hastings chain. ``d2 (N,)`` float64: squared distance to the starting centers (any
    value outside ``allowed``); ``to_centers(rows (m,)) -> (m,)`` the squared distances of those rows
    to every center so far, ``add_center(j)`` makes row ``j`` one, ``to_all() -> (N,)`` the exact D²
    of every row (a full pass: only when a chain ends on a row with D² = 0, e.g. every proposal
    already chosen)."""
    chain_length = max(1, int(chain_length))
    ok = allowed.numpy()
    base = np.where(ok, np.nan_to_num(d2.numpy(), nan=0.0), 0.0)
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
        return np.asarray(picks[:k], dtype=np.int64), np.asarray(d2_at[:k])
    draws = rng.choice(len(q), size=(todo, chain_length), p=q)
    uniform = rng.random((todo, chain_length))
    for t in range(todo):
        props = draws[t]
        dy = to_centers(props)
        dy[chosen[props]] = 0.0
        qy = q[props]
        u = uniform[t]
        cur = 0
        for j in range(1, chain_length):  # independent proposals: accept y with prob min(1, π(y)q(x) / (π(x)q(y)))
            if dy[j] * qy[cur] > u[j] * dy[cur] * qy[j]:
                cur = j
        if dy[cur] > 0:
            j, dj = int(props[cur]), float(dy[cur])
        else:  # the chain found no row off the centers: one exact draw
            full = to_all().numpy().copy()
            full[chosen] = 0.0
            total = full.sum()
            j = int(np.flatnonzero(~chosen)[0]) if total <= 0 else int(rng.choice(len(full), p=full / total))
            dj = float(full[j])
        picks.append(j)
        d2_at.append(dj)
        chosen[j] = True
        add_center(j)
    return np.asarray(picks, dtype=np.int64), np.asarray(d2_at)


def _d2_sampling(d2: torch.Tensor, add, k: int, picks: list, d2_at: list, rng: np.random.Generator,
                 allowed: torch.Tensor) -> tuple:
    """The k-means++ loop shared by both seedings: draw rows ∝ ``d2`` (float64, squared distance to the
    nearest center so far; set to 0 here at ``picks`` and outside ``allowed``) until there are ``k``
    picks; ``add(j)`` makes row ``j`` a center and returns ``d2`` lowered to the new distances (it
    never raises a value, so a zeroed row stays at 0). A draw is one uniform number against the
    running sum of ``d2`` (the inverse-CDF draw; numpy's ``choice(p=...)`` would validate and
    renormalise ``p`` in several more passes over the pool per pick)."""
    chosen = ~allowed.clone()
    chosen[picks] = True
    d2[chosen] = 0.0
    n = len(d2)
    while len(picks) < k:
        c = torch.cumsum(d2, 0)
        total = float(c[-1]) if n else 0.0
        if total <= 0:  # every remaining row coincides with a center: take the next unpicked in order
            j = int(torch.nonzero(~chosen)[0])
        else:  # the first row whose running sum exceeds u: never a row of zero weight
            u = torch.tensor([rng.random() * total], dtype=c.dtype)
            j = min(int(torch.searchsorted(c, u, right=True)), n - 1)
        picks.append(j)
        d2_at.append(float(d2[j]))
        chosen[j] = True
        d2 = add(j)
        d2[j] = 0.0
    return np.asarray(picks, dtype=np.int64), np.asarray(d2_at)


def kmeans_pp(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None,
              allowed: Optional[torch.Tensor] = None, seed: int = 0, method: Optional[str] = None,
              chain_length: int = CHAIN_LENGTH, prune: Optional[bool] = None) -> tuple:
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
        method: ``"exact"`` (D² sampling, one pass over ``x`` per pick), ``"mcmc"`` (AFK-MC²,
            ``chain_length`` proposals per pick: see the module docstring for what it trades),
            ``"approximate"`` (= ``"mcmc"``) or ``"auto"``; default: the :func:`selection` context's
            (``"auto"``).
        chain_length: proposals per pick (``"mcmc"`` only).
        prune: ``"exact"`` skips the rows a pick cannot come closer to (:class:`_Nearest`: the same
            law, the same D²); ``False`` reads every row every pick; default :data:`PRUNE`.

    Returns:
        ``(indices (k,), d2_at_pick (k,))`` (``d2_at_pick`` exact on both paths).
    """
    ok = _allowed(allowed, len(x))
    t0 = time.perf_counter()
    row_bytes = x[0].numel() * x.element_size() if len(x) else 0
    m = _resolve(method, "mcmc", len(x) * row_bytes, k)
    dist = _Distances(x, ok)
    picks, d2_at = [], []
    rng = np.random.default_rng(seed)
    if centers is not None and len(centers):
        d2, assign = dist.to_nearest_index(centers)
        start = centers.reshape(len(centers), -1).double()
    else:
        norms2 = torch.where(ok, row_norms(x, squared=True), torch.tensor(-1.0, dtype=torch.float64))
        first = int(torch.argmax(norms2))
        picks.append(first)
        d2_at.append(float(norms2[first]))
        d2, assign = dist.to_row64(first), torch.zeros(len(x), dtype=torch.int64)
        start = x[first].reshape(1, -1).double()
    if m == "exact":
        center_d2, scale2 = dist.centers_store(start, k)
        near = _Nearest(d2, assign, center_d2, lambda j, rows: dist.to_rows(x[j], rows).double(), len(start),
                        max(scale2, dist.scale2()), ok, prune=prune)
        out = _d2_sampling(d2, near.add, k, picks, d2_at, rng, ok)
        rows = near.rows_per_update
        _record("kmeans_pp", "exact", len(x), k, rows * (row_bytes + x.element_size()) + len(x) * (3 * 8 + 4 + 1),
                3 * len(x) * row_bytes, t0, rows)
        return out
    flat = x.reshape(len(x), -1)
    held = {"c": torch.empty(len(start) + k, flat.shape[1], dtype=torch.float64), "n": len(start)}
    held["c"][:len(start)] = start
    held["sq"] = held["c"].pow(2).sum(1)

    def to_centers(rows: np.ndarray) -> np.ndarray:
        n = held["n"]
        y = flat[torch.from_numpy(rows)].double()
        d2 = y.pow(2).sum(1)[:, None] + held["sq"][None, :n] - 2 * (y @ held["c"][:n].T)
        return d2.clamp_min(0).min(dim=1).values.numpy()

    def add_center(j: int) -> None:
        n = held["n"]
        held["c"][n] = flat[j].double()
        held["sq"][n] = held["c"][n].pow(2).sum()
        held["n"] = n + 1

    def to_all() -> torch.Tensor:
        return dist.to_nearest(held["c"][:held["n"]].to(x.dtype))

    out = _mcmc_sampling(d2, to_centers, add_center, to_all, k, picks, d2_at, rng, ok, chain_length)
    _record("kmeans_pp", "mcmc", len(x), k, chain_length * row_bytes + (len(start) + k / 2) * flat.shape[1] * 8,
            4 * len(x) * row_bytes, t0)
    return out
