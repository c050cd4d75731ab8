"""Jacobian embeddings against full float64 Jacobians computed one point and one class at a time."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from _reference import reference_jacobian
from _tolerance import assert_close_reordered
from jacal import cnn, jacobian_embedding, jacobian_norm, mlp


def _pairwise(e):
    flat = torch.as_tensor(e).double().reshape(len(e), -1)
    return torch.cdist(flat, flat)


def _sharp(model, scale=3.0):
    with torch.no_grad():
        [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight.mul_(scale)
    return model.eval()


class Custom(nn.Module):
    """Not a Sequential: the autograd path."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(12, 10), nn.Linear(10, 5)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) + 0.1 * x[:, :10])


MODELS = {
    "mlp-narrow": lambda: (_sharp(mlp(12, 6, width=9, depth=3, seed=1)), torch.randn(15, 12) * 2),
    "mlp-wide-first-layer": lambda: (_sharp(mlp(8, 4, width=20, depth=2, activation="tanh", seed=2)), torch.randn(15, 8)),
    "custom": lambda: (_sharp(Custom()), torch.randn(15, 12)),
    "cnn": lambda: (_sharp(cnn((1, 8, 8), 5, seed=3)), torch.rand(9, 1, 8, 8)),
}


@pytest.mark.parametrize("output", ["softmax", "logits", "log-softmax"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exact_distances_and_norms_match_float64_reference(name, output):
    torch.manual_seed(0)
    model, x = MODELS[name]()
    ref = reference_jacobian(model, x, output)
    e = jacobian_embedding(model, x, output=output)
    assert e.dtype == torch.float32
    scale = ref.flatten(1).norm(dim=1).max()
    d_ref, d_got = _pairwise(ref), _pairwise(e)
    assert (d_got - d_ref).abs().max() <= 1e-5 * scale
    norms = e.flatten(1).double().norm(dim=1)
    assert torch.allclose(norms, ref.flatten(1).norm(dim=1), rtol=1e-5, atol=1e-7 * float(scale))
    assert torch.allclose(norms.float(), jacobian_norm(model, x, output=output), rtol=1e-4)
    rows = ref.shape[1] - 1 if output == "softmax" else ref.shape[1]
    assert e.shape[:2] == (len(x), rows)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sketch_preserves_distances_approximately(name):
    torch.manual_seed(0)
    model, x = MODELS[name]()
    d_ref = _pairwise(reference_jacobian(model, x))
    e = jacobian_embedding(model, x, sketch_dim=400, seed=5)
    assert e.shape[2] == 400
    off = ~torch.eye(len(x), dtype=torch.bool)
    ratio = _pairwise(e)[off] / d_ref[off]
    assert 0.6 < float(ratio.min()) and float(ratio.max()) < 1.4
    assert abs(float(ratio.mean()) - 1) < 0.1
    # the same seed gives the same sketch; another seed another one
    assert torch.equal(e, jacobian_embedding(model, x, sketch_dim=400, seed=5))
    assert not torch.equal(e, jacobian_embedding(model, x, sketch_dim=400, seed=6))


@pytest.mark.parametrize("sketch_dim", [None, 16])
def test_chunked_equals_unchunked_and_numpy_in_numpy_out(sketch_dim):
    """Chunks of 4, one point at a time and the whole pool agree: to float64 rounding for the model in
    float64, and for the float32 model to the rounding of its float32 sums taken in another order (BLAS
    kernels change with the batch size; sums of at most 12 terms, about 8 in a row: the forward, then
    the backward products), scaled to each point's largest entry."""
    model, x = MODELS["mlp-narrow"]()
    whole = jacobian_embedding(model, x, batch_size=100, sketch_dim=sketch_dim)
    parts = jacobian_embedding(model, x.numpy(), batch_size=4, sketch_dim=sketch_dim)
    assert isinstance(parts, np.ndarray) and parts.dtype == np.float32
    assert_close_reordered(parts, whole, length=12, depth=8)
    one = torch.cat([jacobian_embedding(model, x[i:i + 1], sketch_dim=sketch_dim) for i in range(3)])
    assert_close_reordered(one, whole[:3], length=12, depth=8)
    m64, x64 = copy.deepcopy(model).double(), x.double()
    whole64 = jacobian_embedding(m64, x64, batch_size=100, sketch_dim=sketch_dim)
    parts64 = torch.from_numpy(jacobian_embedding(m64, x64.numpy(), batch_size=4, sketch_dim=sketch_dim))
    one64 = torch.cat([jacobian_embedding(m64, x64[i:i + 1], sketch_dim=sketch_dim) for i in range(3)])
    scale = whole64.flatten(1).abs().max(1).values[:, None, None]
    assert whole64.dtype == parts64.dtype == torch.float64
    assert ((parts64 - whole64).abs() <= 1e-12 * scale).all()
    assert ((one64 - whole64[:3]).abs() <= 1e-12 * scale[:3]).all()


def test_bad_input_is_refused_in_one_line():
    model, x = MODELS["mlp-narrow"]()
    x[2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf in 1 row"):
        jacobian_embedding(model, x)
    with pytest.raises(ValueError, match="sketch_dim"):
        jacobian_embedding(model, torch.randn(3, 12), sketch_dim=0)
    with pytest.raises(ValueError, match="12 input features"):
        jacobian_embedding(model, torch.randn(3, 11))
    with pytest.raises(ValueError, match="empty"):
        jacobian_embedding(model, torch.randn(0, 12))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_logit_margin_rows_are_the_top2_gap_gradient(name):
    torch.manual_seed(0)
    model, x = MODELS[name]()
    ref = reference_jacobian(model, x, "logits")  # (N, K, D) ∂z/∂x in float64
    with torch.no_grad():
        top2 = model.double()(x.double()).topk(2, dim=1).indices
    model.float()
    grad = torch.stack([ref[n, top2[n, 0]] - ref[n, top2[n, 1]] for n in range(len(x))])  # one point at a time
    e = jacobian_embedding(model, x, output="logit_margin")
    assert e.shape[1] == 1
    scale = grad.norm(dim=1).max()
    assert (_pairwise(e) - torch.cdist(grad, grad)).abs().max() <= 1e-5 * scale
    assert torch.allclose(e.flatten(1).double().norm(dim=1), grad.norm(dim=1), rtol=1e-5)
