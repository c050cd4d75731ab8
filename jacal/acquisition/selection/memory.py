"""What a selection reads, in one place: the bytes each path streams per pick and once at setup, and
:func:`trace`, which records them (with the path run and the seconds) for the benchmark.

The figures count the arrays a path reads, not what the caches save: ``bytes_per_pick`` is the
embedding (or its sketch, or the chain's rows, or the proposals' rows) plus the centers and the
per-row vectors each pick reads; ``setup_bytes`` the passes made once (mean, norms, the starting D²,
a sketch or a proposal) and the passes that bring a rejection bound down.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Iterator, List, Tuple

import torch

__all__ = ["trace"]

_TRACE: contextvars.ContextVar = contextvars.ContextVar("jacal_selection_trace", default=None)
_F64 = 8  # bytes of a float64 per-row vector (current D², running sum, bound)


@contextlib.contextmanager
def trace() -> Iterator[List[dict]]:
    """Collect one record per selection call made inside the block: ``{"function", "method", "n",
    "k", "bytes_per_pick", "setup_bytes", "seconds"}`` (the exact k-means++ by rejection adds
    ``proposals_per_pick`` and ``refreshes``)."""
    calls: List[dict] = []
    token = _TRACE.set(calls)
    try:
        yield calls
    finally:
        _TRACE.reset(token)


def record(function: str, method: str, n: int, k: int, traffic: Tuple[float, float], t0: float,
           **extra: float) -> None:
    """Add a call's record to the enclosing :func:`trace`, if any; ``traffic``: ``(bytes_per_pick,
    setup_bytes)``, ``t0``: its ``time.perf_counter()`` at the start."""
    calls = _TRACE.get()
    if calls is not None:
        calls.append({"function": function, "method": method, "n": int(n), "k": int(k),
                      "bytes_per_pick": float(traffic[0]), "setup_bytes": float(traffic[1]),
                      "seconds": time.perf_counter() - t0, **extra})


def row_bytes(*arrays: torch.Tensor) -> int:
    """Bytes of one row across ``arrays`` (each ``(N, ...)``), as stored."""
    return sum(a[0].numel() * a.element_size() for a in arrays if len(a))


def k_center_exact(n: int, row: int, element: int) -> Tuple[float, float]:
    """A pass per pick over the ``(N, d)`` rows plus three per-row vectors in their dtype; setup:
    the mean and the centred norms."""
    return n * (row + 3 * element), 2 * n * row


def k_center_sketch(n: int, row: int, n_allowed: int, dim: int) -> Tuple[float, float]:
    """A pass per pick over the float32 sketch of the allowed rows plus three float32 vectors; setup:
    the mean, and the sketch's pass over the allowed rows."""
    return n_allowed * (4 * dim + 3 * 4), 2 * n * row + n_allowed * row


def seeding(centers, path: str, n: int, k: int, *, proposals_per_pick: float = 0.0, batches_per_pick: float = 0.0,
            chain_length: int = 0) -> Tuple[float, float]:
    """``(bytes_per_pick, setup_bytes)`` of a k-means++ seeding over a center set (``centers``: a
    :class:`~jacal.acquisition.selection.centers.DenseCenters` or ``OuterCenters``, after the
    seeding) on ``path``: ``"pass"`` (every row and its vectors per pick), ``"rejection"`` (each
    proposal's row, and the centers so far once per batch of proposals) or ``"mcmc"`` (the chain's
    rows and, once, the centers so far)."""
    held = centers.n_start + k / 2  # centers held on average during the seeding
    setup = (centers.setup_passes + centers.passes) * n * centers.row_bytes
    if path == "pass":
        return n * (centers.row_bytes + centers.vector_bytes + 3 * _F64), setup
    if path == "rejection":
        return proposals_per_pick * centers.row_bytes + batches_per_pick * held * centers.center_bytes, setup
    return chain_length * centers.row_bytes + held * centers.center_bytes, setup + n * centers.row_bytes
