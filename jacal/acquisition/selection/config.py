"""Which path the selection functions run: the one :func:`selection` context.

Every setting lives in one immutable :class:`SelectionConfig` held by a context variable, so a
``with selection(...)`` block reaches every call inside it (threads and asyncio tasks included)
without strategies passing anything through, as ``sklearn.config_context`` does for its settings.
An explicit ``method=`` argument of a selection function overrides the context's.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Iterator, Optional

__all__ = ["SELECTION_METHODS", "selection"]

#: The values ``method`` (and :func:`selection`) accept; ``"mcmc"`` applies to the k-means++
#: seedings, ``"sketch"`` to k-center greedy.
SELECTION_METHODS = ("auto", "exact", "approximate", "mcmc", "sketch")
#: How the exact k-means++ seedings draw: ``"rejection"`` from the starting D² (no pass over the pool
#: per pick) or ``"pass"``, one pass over the pool per pick (the reference the tests and the
#: benchmark's ``--compare-passes`` measure against). Both draw from the same law.
D2_SAMPLERS = ("rejection", "pass")


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """The settings in force.

    Attributes:
        method: one of :data:`SELECTION_METHODS`.
        d2_sampler: one of :data:`D2_SAMPLERS`.
        exact_max_bytes: under ``"auto"``, k-center greedy runs exactly while the embedding's bytes × k
            are at most this (16 GB: a few seconds of memory traffic on a laptop; the digits and
            20,000-item MNIST loops stay exact, a 60,000-item pool of 512-wide embeddings with
            k = 1,000 does not), and on its sketch above. The k-means++ seedings stay exact under
            ``"auto"`` at any size: the rejection sampler reads few rows per pick and keeps D²
            sampling's law, while AFK-MC²'s ``chain_length × centers`` distances per pick cost more
            at a thousand centers and follow the law only up to the chain's mixing error.
    """

    method: str = "auto"
    d2_sampler: str = "rejection"
    exact_max_bytes: int = 16 * 10 ** 9


_CONFIG: contextvars.ContextVar = contextvars.ContextVar("jacal_selection", default=SelectionConfig())


def current() -> SelectionConfig:
    """The settings in force here."""
    return _CONFIG.get()


def _check(name: str, value: str, allowed: tuple) -> str:
    if value not in allowed:
        raise ValueError(f"Expected `{name}` to be one of {list(allowed)}, got {value!r}.")
    return value


@contextlib.contextmanager
def selection(method: Optional[str] = None, *, d2_sampler: Optional[str] = None,
              exact_max_bytes: Optional[int] = None) -> Iterator[SelectionConfig]:
    """Within the block, the selection functions use these settings (those left ``None`` keep the
    enclosing block's): e.g. ``with selection("exact"):`` makes every strategy select exactly.

    Args:
        method: the path of calls that pass no ``method``: ``"exact"``, ``"approximate"`` (each
            function's approximate path), ``"mcmc"``, ``"sketch"`` or ``"auto"`` (the default).
        d2_sampler: how the exact k-means++ seedings draw, ``"rejection"`` (the default) or
            ``"pass"`` (one pass over the pool per pick; the same law).
        exact_max_bytes: where ``"auto"`` switches k-center greedy to its sketch (see
            :class:`SelectionConfig`).

    >>> import torch
    >>> from jacal.acquisition.selection import kmeans_pp
    >>> x = torch.randn(50, 4)
    >>> with selection("exact"):
    ...     picks, _ = kmeans_pp(x, 3, seed=0)
    >>> picks.shape
    (3,)
    """
    changes = {}
    if method is not None:
        changes["method"] = _check("method", method, SELECTION_METHODS)
    if d2_sampler is not None:
        changes["d2_sampler"] = _check("d2_sampler", d2_sampler, D2_SAMPLERS)
    if exact_max_bytes is not None:
        if int(exact_max_bytes) < 0:
            raise ValueError(f"Expected `exact_max_bytes` to be a non-negative int, got {exact_max_bytes!r}.")
        changes["exact_max_bytes"] = int(exact_max_bytes)
    token = _CONFIG.set(dataclasses.replace(_CONFIG.get(), **changes))
    try:
        yield _CONFIG.get()
    finally:
        _CONFIG.reset(token)


def resolve(method: Optional[str], approximate: str, exact_bytes: int, k: int) -> str:
    """The path a call runs: ``method`` or the context's, with ``"auto"``/``"approximate"`` resolved to
    ``"exact"`` or this function's ``approximate`` path (``"mcmc"`` or ``"sketch"``)."""
    cfg = current()
    m = _check("method", method if method is not None else cfg.method, SELECTION_METHODS)
    if m == "auto":
        big = exact_bytes * max(int(k), 1) > cfg.exact_max_bytes
        m = approximate if big and approximate != "mcmc" else "exact"
    if m == "approximate":
        m = approximate
    if m not in ("exact", approximate):
        raise ValueError(f"method {m!r} does not apply here: use 'exact' or {approximate!r}.")
    return m
