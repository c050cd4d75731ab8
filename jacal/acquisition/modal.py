"""modAL adapter: any jacal strategy as a modAL query strategy."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from jacal._validation import check_positive_int
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


def modal_query_strategy(strategy: str = "jacobian", **acquire_kwargs) -> Callable:
    """A modAL-style query strategy ``(classifier, X_pool, n_instances=1) -> indices``.

    ``classifier`` may be a torch module, a modAL learner or a skorch net wrapping one (found via
    ``.estimator`` / ``.module_``). For ``least-confidence``, ``margin`` and ``entropy`` a
    classifier without a torch module works too: its ``predict_proba`` is scored directly.
    """
    get_strategy(strategy)  # validate the name now

    def query(classifier: Any, X_pool: Any, n_instances: int = 1, **_: Any) -> np.ndarray:
        module = _find_module(classifier)
        if module is None:
            array_score = getattr(STRATEGIES[strategy], "array_score", None)
            if array_score is None:
                raise ValueError(f"strategy {strategy!r} needs a torch model; found none inside {type(classifier).__name__}.")
            s = array_score(classifier.predict_proba(X_pool))
            return top_k(s, np.arange(len(s)), check_positive_int("n_instances", n_instances, upper=len(s)),
                         acquire_kwargs.get("seed", 0))
        x = torch.as_tensor(np.asarray(X_pool), dtype=torch.float32) if not isinstance(X_pool, torch.Tensor) else X_pool
        return acquire(module, x, n_instances, strategy=strategy, **acquire_kwargs).indices

    query.__name__ = f"jacal_{strategy.replace('-', '_')}"
    return query
