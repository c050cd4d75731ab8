"""Acquisition for labeling pipelines: which unlabeled items should annotators label next?

    >>> import torch, jacal
    >>> model = jacal.mlp(64, 10, width=16, depth=1, seed=0).eval()
    >>> res = jacal.acquire(model, torch.rand(100, 64), 5, strategy="jacobian")
    >>> res.indices.shape, res.scores.shape
    ((5,), (100,))
"""
from __future__ import annotations

from jacal.acquisition import scores
from jacal.acquisition.engine import AcquisitionResult, acquire
from jacal.acquisition.modal import modal_query_strategy
from jacal.acquisition.strategies import (STRATEGIES, ProbabilityStrategy, Selection, Strategy, get_strategy,
                                          register_strategy, top_k)

__all__ = ["acquire", "AcquisitionResult", "Strategy", "ProbabilityStrategy", "Selection", "STRATEGIES",
           "register_strategy", "get_strategy", "modal_query_strategy", "scores", "top_k"]
