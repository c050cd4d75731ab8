"""jacobian_gram against the float64 reference (one point and one class at a time), and its invariances."""
import numpy as np
import pytest
import torch
from torch import nn

from _reference import reference_jacobian
from jacal import cnn, jacobian_norm, mlp
from jacal.sensitivity import jacobian_gram


def _sharp(model, scale=4.0):
    with torch.no_grad():
        [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight.mul_(scale)
    return model.eval()


MODELS = {
    "mlp-wide-input": lambda: (_sharp(mlp(64, 10, width=32, depth=2, seed=0)), torch.rand(9, 1, 8, 8)),
    "mlp-narrow-input": lambda: (_sharp(mlp(12, 4, width=32, depth=2, activation="tanh", seed=1)), torch.randn(9, 12)),
    "cnn": lambda: (_sharp(cnn((1, 8, 8), 10, seed=0)), torch.rand(9, 1, 8, 8)),
}


@pytest.mark.parametrize("name", MODELS)
def test_gram_matches_the_float64_reference(name):
    model, x = MODELS[name]()
    gram, logits = jacobian_gram(model, x, batch_size=4)
    j = reference_jacobian(model, x, "logits")  # (N, K, D) float64
    ref = j @ j.transpose(1, 2)
    assert gram.dtype == torch.float64 and gram.shape == ref.shape
    assert ((gram - ref).abs().amax(dim=(1, 2)) / ref.abs().amax(dim=(1, 2))).max() < 1e-5
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).double(), rtol=1e-6, atol=1e-6)
    # the softmax norm follows from the Gram exactly: ‖T J‖² = tr(T Γ Tᵀ)
    js = reference_jacobian(model, x, "softmax").flatten(1).norm(dim=1)
    p = torch.softmax(logits, 1)
    t = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    via_gram = torch.einsum("nij,njk,nik->n", t, gram, t).sqrt()
    assert ((via_gram - js).abs() / js).max() < 1e-4
    np.testing.assert_allclose(jacobian_norm(model, x, output="logits").double(),
                               gram.diagonal(dim1=1, dim2=2).sum(1).sqrt(), rtol=1e-5)


def test_gram_invariances_and_numpy():
    model, x = MODELS["cnn"]()
    whole = jacobian_gram(model, x, batch_size=64).gram
    chunked = jacobian_gram(model, x, batch_size=2).gram
    one = torch.cat([jacobian_gram(model, x[i:i + 1]).gram for i in range(len(x))])
    scale = whole.abs().amax(dim=(1, 2), keepdim=True)
    assert ((whole - chunked).abs() / scale).max() < 1e-6 and ((whole - one).abs() / scale).max() < 1e-6
    out = jacobian_gram(model, x.numpy())
    assert isinstance(out.gram, np.ndarray) and out.gram.shape == (9, 10, 10)
    assert model.training is False and all(p.requires_grad for p in model.parameters())


def test_gram_bad_input():
    model, x = MODELS["mlp-wide-input"]()
    with pytest.raises(ValueError, match="NaN"):
        jacobian_gram(model, torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="64 input features"):
        jacobian_gram(model, torch.rand(2, 10))
