"""Per-point Frobenius norm of the input-output Jacobian (Novak et al. 2018, §2.1).

For a classifier with logits ``z(x)`` (K classes) and an output map ``f = g(z)`` (softmax by
default), ``J(x) = ∂f/∂x = T(x) · ∂z/∂x`` with the per-point ``K × K`` matrix

* softmax:      ``T = diag(p) − p pᵀ``
* log-softmax:  ``T = I − 1 pᵀ``
* logits:       ``T = I``

Softmax and log-softmax kill the all-ones direction (``T·1 = 0``), so ``T = T Q Qᵀ`` for an
orthonormal basis ``Q`` (K × K−1) of ``1^⊥``; a thin QR of ``T Q`` gives a square ``C``
(K−1 × K−1) with ``‖T J_z‖_F = ‖C Qᵀ J_z‖_F``. jacal therefore back-propagates K−1 exact
"coefficient rows" ``C Qᵀ`` per point (K for logits) and sums squares: no K × K Gram matrix
is ever formed, so nothing cancels in float32.

Engines (``method``):

* ``"mlp"``: closed form for fully-connected nets (Linear + activations with a known derivative):
  ``J_z = W_L D_{L−1} W_{L−1} ⋯ D_1 W_1`` evaluated as batched matrix products over all points
  and rows at once. When the input is wider than the first hidden layer, the last product uses
  ``‖A W_1‖²_F = tr(A (W_1 W_1ᵀ) Aᵀ)`` so the input dimension drops out per point.
* ``"vjp"``: any ``nn.Module``; one forward pass per chunk, then one vector-Jacobian product per
  coefficient row (K−1 backward passes over the whole chunk; no loop over points).
* ``"vjp-batched"``: the same rows in a single batched VJP (``is_grads_batched=True``).
* ``"projection"``: unbiased random-projection estimate of ``‖J‖²_F`` with ``n_projections``
  Rademacher probes (see :func:`jacobian_norm`).
* ``"auto"``: ``"mlp"`` when the model is a plain fully-connected ``nn.Sequential``, else
  ``"vjp"`` (on CPU the looped VJP measured faster than the batched one; see
  ``benchmarks/bench_jacobian.py``).

Arithmetic (``precision``): ``"float32"`` (default) is exact: the model's own dtype for every
product, and on CUDA TF32 is switched *off* for matmuls and convolutions for the duration of the
call (PyTorch leaves it on for cuDNN convolutions by default). ``"tf32"`` and ``"bf16"`` are
opt-in speed modes for float32 models that lower the precision of the *backward* products only
(the K−1 rows through the network, ~90% of the work): the forward pass stays exact, so the
activation derivatives (ReLU masks) and the output map ``T(z)`` are those of the float32 model.

* ``"tf32"``: TF32 tensor-core matmuls/convolutions on CUDA, both engines; a no-op on CPU.
* ``"bf16"``: bf16 autocast of the backward products, closed-form ``"mlp"`` engine only (CUDA or
  CPU; measured max relative error 1.0e-3, median 2.5e-4 on a 784-512×3-10 ReLU MLP, 256 MNIST-
  sized points, on CPU). The VJP engines refuse it: autograd's backward runs in the forward's
  dtype, and a bf16 forward flips the derivative of near-zero ReLU pre-activations (2e-2 on a CNN).

The rows' scales and the final sums stay in float64, the global flags are restored on exit
(:func:`matmul_precision`), and float64 models are unaffected by either mode.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jacal._internal.validation import as_points, check_choice, check_positive_int, fmt_shape, forward_logits
from jacal.models._utils import ParsedMLP, model_dtype, parse_mlp, prepared, resolve_device

__all__ = ["jacobian_norm", "matmul_precision", "OUTPUTS", "METHODS", "PRECISIONS"]

OUTPUTS = ("softmax", "logits", "log-softmax")
METHODS = ("auto", "mlp", "vjp", "vjp-batched", "projection")
PRECISIONS = ("float32", "tf32", "bf16")

RowsFn = Callable[[torch.Tensor], torch.Tensor]


@functools.lru_cache(maxsize=32)
def ones_complement_basis(k: int) -> torch.Tensor:
    """Orthonormal basis ``Q`` (k, k−1), float64, of the subspace orthogonal to the all-ones vector."""
    centering = torch.eye(k, dtype=torch.float64) - 1.0 / k
    u, _, _ = torch.linalg.svd(centering)
    return u[:, : k - 1].contiguous()


def _set_cuda_tf32(matmul: bool, conv: bool) -> Callable[[], None]:
    """Set TF32 for CUDA matmuls and cuDNN convolutions; return a function that restores the old state.

    Uses ``fp32_precision`` (PyTorch ≥ 2.9) when present: mixing it with the legacy
    ``allow_tf32`` flags makes PyTorch raise, and the new setting round-trips ("none" included).
    """
    cm, cc = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(cm, "fp32_precision") and hasattr(getattr(cc, "conv", None), "fp32_precision"):
        old = (cm.fp32_precision, cc.conv.fp32_precision)
        cm.fp32_precision = "tf32" if matmul else "ieee"
        cc.conv.fp32_precision = "tf32" if conv else "ieee"

        def restore() -> None:
            cm.fp32_precision, cc.conv.fp32_precision = old
    else:  # older PyTorch: the legacy flags
        old = (cm.allow_tf32, cc.allow_tf32)
        cm.allow_tf32, cc.allow_tf32 = matmul, conv

        def restore() -> None:
            cm.allow_tf32, cc.allow_tf32 = old
    return restore


@contextlib.contextmanager
def matmul_precision(precision: str, device: Union[str, torch.device]) -> Iterator[None]:
    """Scope the float32 arithmetic of the products computed inside it (see :data:`PRECISIONS`).

    Parameters
    ----------
    precision : {"float32", "tf32", "bf16"}
        ``"float32"``: IEEE float32 products (on CUDA, TF32 off for matmuls and cuDNN
        convolutions). ``"tf32"``: on CUDA, TF32 on for both; on CPU a no-op. ``"bf16"``: bf16
        autocast on ``device``'s type (CUDA or CPU), TF32 off for what autocast leaves in float32.
    device : str or torch.device
        Where the products run; only CUDA flags are touched, and only for a CUDA device.

    Notes
    -----
    The global ``torch.backends`` flags are restored on exit, also after an exception. They are
    process-wide: another thread computing on CUDA at the same time sees them too.
    """
    check_choice("precision", precision, PRECISIONS)
    dev = torch.device(device)
    with contextlib.ExitStack() as stack:
        if dev.type == "cuda":
            tf32 = precision == "tf32"
            stack.callback(_set_cuda_tf32(matmul=tf32, conv=tf32))
        if precision == "bf16":
            stack.enter_context(torch.autocast(device_type=dev.type, dtype=torch.bfloat16))
        yield


def _output_rows(z: torch.Tensor, output: str) -> torch.Tensor:
    """Coefficient rows ``(N, R, K)`` with ``‖rows_n · J_z(x_n)‖_F = ‖J_f(x_n)‖_F``.

    Args:
        z: logits ``(N, K)``.
        output: one of :data:`OUTPUTS`.
    Returns:
        ``(N, K, K)`` for logits, ``(N, K−1, K)`` for softmax and log-softmax, in float64.
    """
    n, k = z.shape
    zd = z.detach().double()
    if output == "logits":
        return torch.eye(k, dtype=zd.dtype, device=zd.device).expand(n, k, k)
    t = output_map_jacobian(zd, output)
    q = ones_complement_basis(k).to(zd.device)
    r = torch.linalg.qr(t @ q, mode="r")[1]  # (N, K−1, K−1), ‖T Q Y‖ = ‖R Y‖
    return r @ q.T


def output_map_jacobian(z: torch.Tensor, output: str) -> torch.Tensor:
    """``T = ∂f/∂z`` ``(N, K, K)`` in float64 for logits ``z (N, K)`` (see the module docstring)."""
    n, k = z.shape
    zd = z.detach().double()
    if output == "logits":
        return torch.eye(k, dtype=zd.dtype, device=zd.device).expand(n, k, k).clone()
    lse = torch.logsumexp(zd, dim=1, keepdim=True)
    p = torch.exp(zd - lse)
    if output == "softmax":
        # 1 − p_i computed as Σ_{j≠i} p_j via a masked logsumexp: exact even when p_i ≈ 1.
        masked = zd.unsqueeze(1).expand(n, k, k).clone()
        masked.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
        one_minus_p = torch.exp(torch.logsumexp(masked, dim=2) - lse)
        t = -p.unsqueeze(2) * p.unsqueeze(1)
        t.diagonal(dim1=1, dim2=2).copy_(p * one_minus_p)
    else:  # log-softmax
        t = torch.eye(k, dtype=zd.dtype, device=zd.device) - p.unsqueeze(1)
    return t


def scaled_output_rows(z: torch.Tensor, output: str, generator: Optional[torch.Generator] = None,
                       n_projections: int = 0) -> tuple:
    """Coefficient rows in ``z.dtype``, scaled per point, and the float64 scales ``(N,)``.

    ``‖rows_n J_z‖² · scale_n² = ‖J_f(x_n)‖²``. Scaling each point's rows to unit max keeps tiny
    rows (p ≈ one-hot) from underflowing in float32 when squared. With a ``generator``, rows are
    replaced by ``n_projections`` Rademacher combinations ``V C / √m`` (unbiased for ‖J‖²).
    """
    rows = _output_rows(z, output)  # float64
    if generator is not None:
        v = torch.randint(0, 2, (z.shape[0], n_projections, rows.shape[1]), generator=generator)
        rows = (2 * v - 1).to(device=z.device, dtype=rows.dtype) @ rows / float(n_projections) ** 0.5
    scale = rows.abs().amax(dim=(1, 2))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (rows / scale[:, None, None]).to(z.dtype), scale


def mlp_first_layer_rows(parsed: ParsedMLP, x: torch.Tensor, rows_fn: RowsFn,
                         backward_context: Callable[[], Any] = contextlib.nullcontext) -> torch.Tensor:
    """``A (N, R, h₁)`` with ``rows_n · J_z(x_n) = A_n · W₁`` for a parsed fully-connected network.

    The forward pass records each activation's derivative, ``rows_fn(logits)`` gives the
    coefficient rows ``(N, R, K)``, and the backward product ``rows · W_L D_{L−1} ⋯ D_1`` stops
    before the first weight matrix ``W₁ (h₁, D)``. ``backward_context()`` (e.g. a bf16 autocast)
    is entered for the backward product only: the forward, hence the activation derivatives and
    the logits, stay in ``x``'s dtype.
    """
    flatten_first, layers = parsed
    h = x.reshape(x.shape[0], -1) if flatten_first else x
    derivs = []
    for layer in layers:
        if layer.linear is not None:
            h = F.linear(h, layer.linear.weight, layer.linear.bias)
        else:
            derivs.append(layer.activation.derivative(h))
            h = layer.module(h)
    a = rows_fn(h)  # (N, R, K)
    di = len(derivs) - 1
    with backward_context():
        for layer in reversed(layers[1:]):
            if layer.linear is not None:
                a = torch.matmul(a, layer.linear.weight)
            else:
                a = a * derivs[di].unsqueeze(1)
                di -= 1
    return a


def _mlp_sq_norm(parsed: ParsedMLP, x: torch.Tensor, rows_fn: RowsFn, gram: Optional[torch.Tensor],
                 backward_context: Callable[[], Any] = contextlib.nullcontext) -> torch.Tensor:
    """Closed-form squared norms ``(N,)`` for a parsed fully-connected network (backward products,
    the last one included, inside ``backward_context()``; squares summed in ``x``'s dtype)."""
    layers = parsed.layers
    a = mlp_first_layer_rows(parsed, x, rows_fn, backward_context)
    with backward_context():
        last = torch.matmul(a, gram if gram is not None else layers[0].linear.weight)
    if gram is not None:
        return (last.to(x.dtype) * a.to(x.dtype)).sum(dim=(1, 2))
    return last.to(x.dtype).pow(2).sum(dim=(1, 2))


def logits_with_graph(model: nn.Module, x: torch.Tensor) -> tuple:
    """``(x, z)``: the chunk as a leaf that requires grad, and its logits ``(N, K)`` with their graph."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = forward_logits(model, x)
    if not z.requires_grad:
        raise ValueError("`model` output does not depend on its input through autograd (is it wrapped in no_grad?).")
    return x, z


def row_vjps(x: torch.Tensor, z: torch.Tensor, rows: torch.Tensor) -> Iterator[torch.Tensor]:
    """``rows[:, r] · ∂z/∂x`` flattened to ``(N, D)``, for each row ``r`` of ``rows (N, R, K)`` in turn:
    one vector-Jacobian product over the whole chunk per row (a loop over rows ≤ K, never over points)."""
    n_rows = rows.shape[1]
    for r in range(n_rows):
        (g,) = torch.autograd.grad(z, x, grad_outputs=rows[:, r, :], retain_graph=r < n_rows - 1, allow_unused=True)
        yield (torch.zeros_like(x) if g is None else g).reshape(x.shape[0], -1)


def _vjp_sq_norm(model: nn.Module, x: torch.Tensor, rows_fn: RowsFn, batched: bool,
                 backward_context: Callable[[], Any] = contextlib.nullcontext) -> torch.Tensor:
    """Squared norms ``(N,)`` by reverse-mode autograd: one VJP per coefficient row (the backward
    passes inside ``backward_context()``, e.g. TF32 flags; the forward outside it)."""
    x, z = logits_with_graph(model, x)
    rows = rows_fn(z.detach())  # (N, R, K)
    if batched:
        with backward_context():
            (g,) = torch.autograd.grad(z, x, grad_outputs=rows.transpose(0, 1).contiguous(),
                                       is_grads_batched=True, allow_unused=True)
        if g is None:
            return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        return g.reshape(rows.shape[1], x.shape[0], -1).pow(2).sum(dim=(0, 2))
    sq = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    with backward_context():
        for g in row_vjps(x, z, rows):
            sq += g.pow(2).sum(dim=1)
    return sq


def check_mlp_input(parsed: ParsedMLP, x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` fits the first Linear layer of a parsed MLP."""
    flatten_first, layers = parsed
    d_in = layers[0].linear.in_features
    per_point = int(np.prod(x.shape[1:]))
    if (not flatten_first and x.ndim != 2) or per_point != d_in:
        raise ValueError(
            f"`{name}` has shape {fmt_shape(x.shape)}, but the model's first Linear layer expects {d_in} input features"
            + ("" if flatten_first else " in an (N, D) array") + "."
        )


def jacobian_norm(
    model: nn.Module,
    x: Union[torch.Tensor, np.ndarray],
    *,
    output: str = "softmax",
    method: str = "auto",
    batch_size: int = 256,
    device: Union[str, torch.device, None] = None,
    n_projections: int = 16,
    seed: int = 0,
    force_eval: bool = False,
    progress: Optional[Callable[[int, int], Any]] = None,
    precision: str = "float32",
    return_predictions: bool = False,
) -> Union[torch.Tensor, np.ndarray, tuple]:
    """Per-point Frobenius norm ``‖∂f(x)/∂x‖_F`` of a classifier's output w.r.t. its input.

    Args:
        model: any classifier mapping a batch ``(N, *input_shape)`` to logits ``(N, K)``. It is
            left exactly as found (mode, ``requires_grad`` flags, no ``.grad``, its device).
        x: inputs ``(N, *input_shape)``, tensor or numpy array, finite.
        output: ``"softmax"`` (the paper's metric, default), ``"logits"`` or ``"log-softmax"``.
        method: ``"auto"``, ``"mlp"``, ``"vjp"``, ``"vjp-batched"`` (exact) or ``"projection"``.
        batch_size: points per chunk; memory is bounded by it, not by N.
        device: ``None`` (the model's device), ``"auto"``, ``"cpu"``, ``"cuda"``... A model on
            another device is copied there; the caller's model does not move.
        n_projections: probes for ``method="projection"``. With ``G = (T J)(T J)ᵀ`` and
            Rademacher probes the estimate of ``‖J‖²_F`` is unbiased with variance
            ``2(‖G‖²_F − Σ G_ii²)/m ≤ 2‖J‖⁴_F/m``; the returned norm is its square root (biased
            slightly low, by Jensen). Useful when K is large: cost is m backward passes, not K.
        seed: seeds the projection probes (drawn chunk by chunk: the estimate for a given seed
            also depends on ``batch_size``).
        force_eval: temporarily switch a train-mode model with BatchNorm/Dropout to eval mode
            (otherwise such a model is refused).
        progress: optional ``callback(points_done, points_total)`` called after each chunk.
        precision: ``"float32"`` (default, exact; on CUDA with TF32 off), or the opt-in speed
            modes for the backward products of float32 models: ``"tf32"`` (CUDA TF32
            matmuls/convolutions; a no-op on CPU) and ``"bf16"`` (bf16 autocast, ``"mlp"``
            engine only, else ``ValueError``); see the module docstring and
            ``benchmarks/bench_jacobian.py`` for their measured error. The global
            ``torch.backends`` flags are restored on return.
        return_predictions: also return each point's predicted class (argmax of the logits of the
            same forward pass: the model runs once).

    Returns:
        ``(N,)`` norms: a numpy array if ``x`` was one, else a CPU tensor, in the model's dtype;
        with ``return_predictions``, ``(norms, predicted (N,) int64)``.

    Example:
        >>> import torch
        >>> from jacal import jacobian_norm, mlp
        >>> model = mlp(input_dim=64, n_classes=10, width=32, depth=2, seed=0).eval()
        >>> jacobian_norm(model, torch.randn(5, 64)).shape
        torch.Size([5])
    """
    check_choice("output", output, OUTPUTS)
    check_choice("method", method, METHODS)
    check_positive_int("batch_size", batch_size)
    check_choice("precision", precision, PRECISIONS)
    if method == "projection":
        check_positive_int("n_projections", n_projections)
    was_numpy = isinstance(x, np.ndarray)
    xt = as_points("x", x)
    dev = resolve_device(device, model)
    n = xt.shape[0]
    sq = torch.empty(n, dtype=torch.float64)
    # exact float32 (TF32 off) for the whole call: the forward pass, hence the activation derivatives
    # and the output map, is always exact; an opt-in precision covers the backward products only.
    with prepared(model, device=dev, force_eval=force_eval) as m, matmul_precision("float32", dev):
        dtype = model_dtype(m)
        low_precision = precision != "float32" and dtype == torch.float32

        def low() -> Any:
            return matmul_precision(precision, dev) if low_precision else contextlib.nullcontext()

        parsed = parse_mlp(m)
        engine = method
        if method in ("auto", "projection"):
            engine = "mlp" if parsed is not None else "vjp"
        if engine == "mlp":
            if parsed is None:
                raise ValueError("method='mlp' needs a plain fully-connected nn.Sequential (Flatten, Linear, "
                                 "known activations); use method='vjp' for other models.")
            check_mlp_input(parsed, xt)
            w1 = parsed.first_weight
            gram = (w1 @ w1.T) if w1.shape[1] > w1.shape[0] else None
        elif low_precision and precision == "bf16":
            raise ValueError(
                "precision='bf16' is supported by the closed-form MLP engine only: autograd needs a bf16 "
                "forward, whose rounding flips the derivative of near-zero ReLU pre-activations (measured "
                "2e-2 relative error on a small CNN); use precision='tf32' for this model.")
        gen = torch.Generator().manual_seed(int(seed)) if method == "projection" else None

        scales: list = []
        predicted: list = []

        def rows_fn(z: torch.Tensor) -> torch.Tensor:
            if return_predictions:
                predicted.append(z.argmax(dim=1).cpu())
            rows, scale = scaled_output_rows(z, output, gen, n_projections)
            scales.append(scale)
            return rows

        for start in range(0, n, batch_size):  # chunks, never single points
            stop = min(start + batch_size, n)
            xc = xt[start:stop].to(device=dev, dtype=dtype)
            if engine == "mlp":
                with torch.no_grad():
                    out = _mlp_sq_norm(parsed, xc, rows_fn, gram, low)
            else:
                out = _vjp_sq_norm(m, xc, rows_fn, batched=(engine == "vjp-batched"), backward_context=low)
            sq[start:stop] = (out.detach().double() * scales.pop() ** 2).cpu()
            if progress is not None:
                progress(stop, n)
    norms = sq.clamp_min(0).sqrt().to(dtype)
    if return_predictions:
        pred = torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.int64)
        return (norms.numpy(), pred.numpy()) if was_numpy else (norms, pred)
    return norms.numpy() if was_numpy else norms
