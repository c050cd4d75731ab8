import pytest
import torch

from jacal import mlp


def test_mlp_init_and_validation():
    m = mlp(64, 10, width=500, depth=2, weight_variance=2.0, seed=0)
    w = m[1].weight.detach()
    assert abs(float(w.var()) - 2.0 / 64) < 0.1 * 2.0 / 64
    assert torch.equal(mlp(64, 10, width=8, depth=1, seed=5)[1].weight, mlp(64, 10, width=8, depth=1, seed=5)[1].weight)
    assert m.n_neurons == 1000
    with pytest.raises(ValueError, match="activation"):
        mlp(4, 2, activation="swish")
    with pytest.raises(ValueError, match="depth"):
        mlp(4, 2, depth=-1)
