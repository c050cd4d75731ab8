"""When to stop labeling: criteria that watch a fixed stop set of unlabeled items across rounds.

    >>> import torch, jacal
    >>> from jacal.stopping import criterion
    >>> model = jacal.mlp(64, 10, width=16, depth=1, seed=0).eval()
    >>> crit = criterion()  # the recommended default
    >>> advice = crit.update(model, torch.rand(50, 64))
    >>> advice.stop, advice.reason
    (False, 'continue: 1 of 4 rounds seen, nothing to compare 3 rounds back yet')
"""
from __future__ import annotations

from jacal.stopping.criteria import (CRITERIA, DEFAULT_CRITERION, Advice, Criterion, Observation, criterion, kappa,
                                     load_state, observe, save_state)
from jacal.stopping.measure import oracle_stop, stop_table

__all__ = ["CRITERIA", "DEFAULT_CRITERION", "Advice", "Criterion", "Observation", "criterion", "kappa", "observe",
           "save_state", "load_state", "oracle_stop", "stop_table"]
