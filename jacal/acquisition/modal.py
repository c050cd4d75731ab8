"""modAL adapter: any jacal strategy as a modAL query strategy.

modAL's ``BaseLearner.query`` calls ``query_result, query_metrics = strategy(learner, X_pool,
n_instances=...)`` and hands ``query_result`` to ``retrieve_rows``; modAL's own strategies return
``(indices, values)``. The adapter answers the same way, ``(indices (n,), scores (n,))``, so one
query runs one jacal pass and the learner gets every one of its ``n_instances`` items.

Tested with modAL-python 0.4.2.1, skorch 1.4.0, scikit-learn 1.7.2, pandas 3.1.1 and torch 2.14.
modAL 0.4.2.1 pins skorch 0.9.0, which no longer imports (it needs ``pkg_resources``), and calls
``sklearn.utils.check_X_y(..., force_all_finite=...)``, which scikit-learn 1.8 removed, so install
it with ``pip install "scikit-learn<1.8" pandas tqdm tabulate skorch`` and then
``pip install --no-deps modAL-python``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import nn

from jacal._internal.validation import check_positive_int
from jacal.acquisition.engine import acquire
from jacal.acquisition.strategies import STRATEGIES, get_strategy, top_k

__all__ = ["modal_query_strategy"]


def _find_module(obj: Any, depth: int = 0) -> Optional[nn.Module]:
    if isinstance(obj, nn.Module):
        return obj
    if depth > 3:
        return None
    for attr in ("module_", "module", "estimator", "model"):
        inner = getattr(obj, attr, None)
        if inner is not None and inner is not obj:
            found = _find_module(inner, depth + 1)
            if found is not None:
                return found
    return None


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for the block; every submodule's own mode is given back afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def modal_query_strategy(strategy: str = "jacobian", **acquire_kwargs: Any) -> Callable:
    """A modAL query strategy ``(classifier, X_pool, n_instances=1) -> (indices, scores)``.

    ``classifier`` may be a torch module, a modAL learner or a skorch net wrapping one (found via
    ``.estimator`` / ``.module_``). The module is scored in eval mode, whatever mode it is in (a
    skorch net leaves it in train mode after ``fit``), and is given back in the mode it was found in.
    For ``least-confidence``, ``margin`` and ``entropy`` a classifier without a torch module works
    too: its ``predict_proba`` is scored directly.

    Args:
        strategy: a name in :data:`jacal.STRATEGIES`.
        **acquire_kwargs: passed to :func:`jacal.acquire` (``seed``, ``batch_size``, ``device``, ...).

    Returns:
        The query strategy. It returns ``indices (n_instances,)``, pool rows in rank order, and
        ``scores (n_instances,)``, the strategy's per-item score of each (what :func:`jacal.acquire`
        reports in ``scores``), like modAL's own ``(indices, values)``.
    """
    get_strategy(strategy)  # validate the name now

    def query(classifier: Any, X_pool: Any, n_instances: int = 1, **_: Any) -> Tuple[np.ndarray, np.ndarray]:
        module = _find_module(classifier)
        if module is None:
            array_score = getattr(STRATEGIES[strategy], "array_score", None)
            if array_score is None:
                raise ValueError(f"strategy {strategy!r} needs a torch model; found none inside {type(classifier).__name__}.")
            s = array_score(classifier.predict_proba(X_pool))
            idx = top_k(s, np.arange(len(s)), check_positive_int("n_instances", n_instances, upper=len(s)),
                        acquire_kwargs.get("seed", 0))
            return idx, s[idx]
        x = X_pool if isinstance(X_pool, torch.Tensor) else torch.as_tensor(np.asarray(X_pool))
        with _eval_mode(module):
            res = acquire(module, x, n_instances, strategy=strategy, **acquire_kwargs)
        return res.indices, res.scores[res.indices]

    query.__name__ = f"jacal_{strategy.replace('-', '_')}"
    return query
