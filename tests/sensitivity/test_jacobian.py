import numpy as np
import pytest
import torch
from torch import nn

from _reference import reference_jacobian_norm, relative_error
from _tolerance import assert_close_reordered
from jacal import jacobian_norm, mlp, cnn

RTOL = 1e-5


def _scaled(model, scale=3.0):
    """Sharpen a random model so its softmax is far from uniform (harder numerics)."""
    with torch.no_grad():
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.weight.mul_(scale)
    return model


class Residual(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        return x + self.fc2(torch.tanh(self.fc1(self.norm(x))))


class ResNetLike(nn.Module):
    def __init__(self, d_in=20, d=16, k=5):
        super().__init__()
        self.inp, self.block, self.out = nn.Linear(d_in, d), Residual(d), nn.Linear(d, k)

    def forward(self, x):
        return self.out(self.block(torch.relu(self.inp(x))))


@pytest.mark.parametrize("activation", ["relu", "leaky-relu", "relu6", "hard-tanh", "hard-sigmoid", "tanh", "sigmoid"])
@pytest.mark.parametrize("output", ["softmax", "logits", "log-softmax"])
def test_mlp_matches_float64_reference(activation, output):
    model = _scaled(mlp(12, 6, width=9, depth=3, activation=activation, seed=1)).eval()
    x = torch.randn(17, 12) * 2
    ref = reference_jacobian_norm(model, x, output)
    for method in ("auto", "mlp", "vjp", "vjp-batched"):
        got = jacobian_norm(model, x, output=output, method=method)
        assert got.dtype == torch.float32
        assert relative_error(got, ref) < RTOL, (method, relative_error(got, ref))


def test_gram_path_used_for_wide_inputs_is_exact():
    # input (30) wider than the first hidden layer (8): the tr(A W1 W1ᵀ Aᵀ) path
    model = _scaled(mlp(30, 4, width=8, depth=2, seed=2), 5.0).eval()
    x = torch.rand(25, 30)
    assert relative_error(jacobian_norm(model, x, method="mlp"), reference_jacobian_norm(model, x)) < RTOL


def test_confident_predictions_stay_accurate():
    # 1 − p_max down to ~1e-11: the softmax Jacobian is tiny, 1 − p must not cancel and its
    # square must not underflow in float32. (Much further out the float64 reference itself
    # rounds p_max to 1 and stops being a reference.)
    model = _scaled(mlp(10, 3, width=16, depth=1, seed=3), 6.0).eval()
    x = torch.randn(20, 10)
    p = torch.softmax(model.double()(x.double()), 1).max(1).values
    model.float()
    assert (1 - p).min() < 1e-9
    assert relative_error(jacobian_norm(model, x), reference_jacobian_norm(model, x)) < RTOL


def test_cnn_matches_reference():
    model = _scaled(cnn((1, 8, 8), 10, channels=(4, 6), hidden=16, seed=0)).eval()
    x = torch.rand(9, 1, 8, 8)
    ref = reference_jacobian_norm(model, x)
    for method in ("auto", "vjp", "vjp-batched"):
        assert relative_error(jacobian_norm(model, x, method=method), ref) < RTOL


def test_layernorm_residual_model_matches_reference():
    model = _scaled(ResNetLike()).eval()
    x = torch.randn(11, 20)
    for output in ("softmax", "logits"):
        ref = reference_jacobian_norm(model, x, output)
        assert relative_error(jacobian_norm(model, x, output=output), ref) < RTOL


def test_chunked_equals_unchunked_and_batched_equals_one_at_a_time():
    """Equal up to the rounding of the float32 model's sums (64 input features) in another order: BLAS
    kernels change with the batch size (measured up to 3.8 ε relative, with MKL_CBWR=COMPATIBLE too;
    the old rtol=1e-6 is 8.4 ε). In float64 the same comparison holds to 1e-12."""
    model = _scaled(mlp(64, 10, width=32, depth=2, seed=4)).eval()
    x = torch.rand(50, 1, 8, 8)
    full = jacobian_norm(model, x, batch_size=1000)
    for bs in (1, 7, 16):
        assert_close_reordered(jacobian_norm(model, x, batch_size=bs), full, length=64)
    single = torch.cat([jacobian_norm(model, x[i:i + 1]) for i in range(len(x))])
    assert_close_reordered(single, full, length=64)
    m64, x64 = model.double(), x.double()
    full64 = jacobian_norm(m64, x64, batch_size=1000)
    for bs in (1, 7):
        torch.testing.assert_close(jacobian_norm(m64, x64, batch_size=bs), full64, rtol=1e-12, atol=0)


def test_numpy_in_numpy_out():
    model = mlp(8, 3, width=4, depth=1, seed=0).eval()
    x = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    out = jacobian_norm(model, x)
    assert isinstance(out, np.ndarray) and out.shape == (6,)
    np.testing.assert_allclose(out, jacobian_norm(model, torch.from_numpy(x)).numpy())


def test_model_left_as_found():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3))
    model.train()
    model[0].weight.requires_grad_(False)
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="train mode"):
        jacobian_norm(model, x)
    out = jacobian_norm(model, x, force_eval=True)
    assert out.shape == (4,)
    assert model.training and all(m.training for m in model.modules())
    assert model[0].weight.requires_grad is False and model[3].weight.requires_grad is True
    assert all(p.grad is None for p in model.parameters())
    # a train-mode model without stochastic layers is accepted as is
    plain = mlp(8, 3, width=4, depth=1, seed=0).train()
    jacobian_norm(plain, x, method="vjp")
    assert plain.training and all(p.requires_grad and p.grad is None for p in plain.parameters())


def test_projection_is_unbiased_and_its_variance_shrinks():
    model = _scaled(mlp(16, 20, width=24, depth=2, seed=5)).eval()
    x = torch.randn(30, 16)
    exact = jacobian_norm(model, x).double() ** 2
    est = torch.stack([jacobian_norm(model, x, method="projection", n_projections=4, seed=s).double() ** 2
                       for s in range(300)])
    # mean of 300 unbiased estimates: within 4 standard errors of the exact squared norm
    se = est.std(0) / 300 ** 0.5
    assert ((est.mean(0) - exact).abs() <= 4 * se + 1e-12).float().mean() >= 0.95
    many = jacobian_norm(model, x, method="projection", n_projections=512).double() ** 2
    assert relative_error(many, exact) < 0.35
    assert (est[:, 0].var() > 0)


@pytest.mark.parametrize("bad,match", [
    (torch.randn(5, 7), "expects 8 input features"),
    (torch.randn(5), "at least 2 dimensions"),
    (torch.zeros(0, 8), "empty"),
    (torch.tensor([[float("nan")] * 8, [0.0] * 8]), "NaN or Inf in 1 row"),
    (torch.full((2, 8), float("inf")), "NaN or Inf in 2 row"),
    ("not an array", "torch.Tensor or numpy"),
])
def test_bad_inputs_raise_clear_errors(bad, match):
    model = mlp(8, 3, width=4, depth=1, seed=0).eval()
    with pytest.raises((ValueError, TypeError), match=match):
        jacobian_norm(model, bad)


def test_general_model_rejecting_shape_gives_clear_error():
    model = cnn((1, 8, 8), 10, seed=0).eval()
    with pytest.raises(ValueError, match="rejected `x`"):
        jacobian_norm(model, torch.randn(3, 64))


def test_bad_options():
    model = mlp(8, 3, width=4, depth=1, seed=0).eval()
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="`output`"):
        jacobian_norm(model, x, output="probs")
    with pytest.raises(ValueError, match="`method`"):
        jacobian_norm(model, x, method="fast")
    with pytest.raises(ValueError, match="`batch_size`"):
        jacobian_norm(model, x, batch_size=0)
    with pytest.raises(ValueError, match="method='mlp'"):
        jacobian_norm(cnn((1, 8, 8), 3).eval(), torch.randn(2, 1, 8, 8), method="mlp")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_equals_cuda():
    model = _scaled(mlp(64, 10, width=32, depth=2, seed=6)).eval()
    x = torch.rand(40, 1, 8, 8)
    cpu = jacobian_norm(model, x, device="cpu")
    for method in ("mlp", "vjp"):
        torch.testing.assert_close(jacobian_norm(model, x, device="cuda", method=method), cpu, rtol=1e-4, atol=0)
    assert next(model.parameters()).device.type == "cpu"  # the caller's model did not move


# --- precision opt-in -------------------------------------------------------------------------


def _tf32_state():
    m, c = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(m, "fp32_precision"):
        return m.fp32_precision, c.conv.fp32_precision
    return m.allow_tf32, c.allow_tf32


def test_precision_float32_is_the_default_and_tf32_is_a_no_op_on_cpu():
    x = torch.rand(70, 1, 8, 8)
    for model in (_scaled(mlp(64, 10, width=32, depth=2, seed=3)).eval(), cnn((1, 8, 8), 10, seed=3).eval()):
        for method in ("auto", "vjp", "vjp-batched"):
            default = jacobian_norm(model, x, method=method, batch_size=32)
            assert torch.equal(jacobian_norm(model, x, method=method, batch_size=32, precision="float32"), default)
            assert torch.equal(jacobian_norm(model, x, method=method, batch_size=32, precision="tf32"), default)


@pytest.mark.parametrize("width,depth", [(32, 2), (48, 1)])  # (48, 1): the W₁W₁ᵀ Gram path is off, (32, 2) on
def test_bf16_mlp_is_close_but_not_float32(width, depth):
    model = _scaled(mlp(40, 10, width=width, depth=depth, seed=4)).eval()
    x = torch.rand(60, 40)
    exact = jacobian_norm(model, x)
    got = jacobian_norm(model, x, precision="bf16")
    assert got.dtype == torch.float32
    assert not torch.equal(got, exact)  # bf16 really ran
    assert relative_error(got, reference_jacobian_norm(model, x)) < 1e-2


def test_bf16_is_refused_by_the_vjp_engines_and_ignored_by_float64_models():
    x = torch.rand(5, 1, 8, 8)
    with pytest.raises(ValueError, match="bf16.*MLP engine only"):
        jacobian_norm(cnn((1, 8, 8), 10, seed=0).eval(), x, precision="bf16")
    with pytest.raises(ValueError, match="bf16.*MLP engine only"):
        jacobian_norm(mlp(64, 10, width=8, depth=1, seed=0).eval(), x, method="vjp", precision="bf16")
    m64 = cnn((1, 8, 8), 10, seed=0).double().eval()
    assert torch.equal(jacobian_norm(m64, x.double(), precision="bf16"), jacobian_norm(m64, x.double()))
    with pytest.raises(ValueError, match="`precision`"):
        jacobian_norm(m64, x.double(), precision="fp16")


def test_matmul_precision_scopes_the_cuda_tf32_flags():
    from jacal.sensitivity.jacobian import matmul_precision

    before = _tf32_state()
    on = ("tf32", "tf32") if isinstance(before[0], str) else (True, True)
    off = ("ieee", "ieee") if isinstance(before[0], str) else (False, False)
    with matmul_precision("tf32", "cuda"):  # setting the flags needs no GPU
        assert _tf32_state() == on
        with matmul_precision("float32", "cuda"):
            assert _tf32_state() == off
        assert _tf32_state() == on
    assert _tf32_state() == before
    with pytest.raises(RuntimeError, match="boom"):
        with matmul_precision("tf32", torch.device("cuda")):
            raise RuntimeError("boom")
    assert _tf32_state() == before
    with matmul_precision("tf32", "cpu"):
        assert _tf32_state() == before  # CPU: untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_opt_in_precisions_stay_within_1e_3_and_restore_the_flags():
    before = _tf32_state()
    x = torch.rand(200, 1, 28, 28)
    for model, modes in ((mlp(784, 10, width=256, depth=2, seed=7).eval(), ("tf32", "bf16")),
                         (cnn((1, 28, 28), 10, seed=7).eval(), ("tf32",))):
        ref = reference_jacobian_norm(model, x[:40])
        exact = jacobian_norm(model, x, device="cuda")
        assert relative_error(exact[:40], ref) < RTOL
        for mode in modes:
            assert relative_error(jacobian_norm(model, x, device="cuda", precision=mode)[:40], ref) < 1e-2
            assert _tf32_state() == before
