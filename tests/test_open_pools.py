"""The open-pool layer: closed-pool picks pinned, the layer on every public strategy, its calibration
against a float64 reference, and bad input."""
import numpy as np
import pytest
import torch

import jacal

# Picks of every public strategy on a closed pool (seed 5, 8 picks, the first ten items labeled), recorded
# before the open-pool layer existed: a closed pool (``out_of_set`` absent or empty) selects as it did.
PINNED = {"random": [296, 76, 173, 94, 209, 13, 282, 85], "margin": [152, 210, 120, 26, 294, 38, 169, 52],
          "entropy": [223, 88, 187, 49, 31, 21, 11, 177], "least-confidence": [223, 88, 187, 21, 152, 120, 49, 294],
          "bald": [228, 22, 251, 278, 192, 266, 273, 70], "badge": [278, 245, 160, 123, 250, 73, 185, 27],
          "coreset": [261, 251, 266, 192, 30, 22, 228, 119], "ldm-s": [26, 62, 150, 294, 210, 52, 169, 38],
          "jacobian": [210, 152, 26, 38, 22, 169, 120, 262], "jacobian-kmeans": [245, 160, 45, 248, 214, 178, 97, 130],
          "jacobian-topk": [109, 49, 209, 291, 134, 43, 247, 162]}


def _closed_pool():
    g = torch.Generator().manual_seed(3)
    return torch.randn(300, 8, generator=g), jacal.mlp(8, 4, width=16, depth=1, dropout=0.2, seed=0).eval()


@pytest.mark.parametrize("strategy", sorted(PINNED))
@pytest.mark.parametrize("oos", [None, "empty"])
def test_closed_pool_picks_unchanged(strategy, oos):
    pool, model = _closed_pool()
    out_of_set = np.zeros(0, dtype=np.int64) if oos == "empty" else None
    r = jacal.acquire(model, pool, 8, strategy=strategy, labeled=np.arange(10), out_of_set=out_of_set, seed=5)
    assert r.indices.tolist() == PINNED[strategy]
