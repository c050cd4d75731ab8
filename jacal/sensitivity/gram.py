"""Per-point Gram matrix of the logits' input Jacobian, from which every Jacobian norm follows.

For logits ``z(x)`` (K classes) and ``J = ∂z/∂x`` (K × D), the Gram matrix ``Γ = J Jᵀ`` (K × K) holds
every inner product of Jacobian rows, so one Gram gives, exactly and without another backward pass:

* ``‖∂z/∂x‖²_F = tr Γ`` (the logits' sensitivity; it does not saturate with the softmax);
* ``‖∂f/∂x‖²_F = tr(T Γ Tᵀ)`` for any output map ``f = g(z)`` with ``T = ∂f/∂z`` (softmax:
  ``T = diag(p) − p pᵀ``, see :mod:`jacal.sensitivity.jacobian`);
* ``‖∇ₓ(z_a − z_b)‖² = Γ_aa + Γ_bb − 2Γ_ab``: the gradient of a logit gap, hence the first-order
  (DeepFool) distance ``(z_a − z_b) / ‖∇ₓ(z_a − z_b)‖`` from ``x`` to the boundary between ``a`` and ``b``.

Engines: fully-connected nets use the closed form ``J = A W₁`` with ``A = W_L D_{L−1} ⋯ D_1`` (K rows
back-propagated as one batched product), and ``Γ = A (W₁W₁ᵀ) Aᵀ`` when the input is wider than the
first hidden layer, so the input dimension drops out; any other model gets ``J`` from K
vector-Jacobian products per chunk (one per logit, over the whole chunk) and ``Γ = J Jᵀ``. Products
run in the model's dtype (float32: IEEE, TF32 off on CUDA), ``Γ`` is returned in float64. Quantities
derived from ``Γ`` with an exact float64 ``T`` lose no accuracy to saturation: ``T``'s rows sum to zero,
so ``tr(TΓTᵀ)`` is a combination of ``‖J_i − J_j‖²``, each accurate to float32 relative to ``‖J‖²``.

Cost: K backward rows per point where :func:`jacal.jacobian_norm` (softmax) needs K − 1.
"""
from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np
import torch
from torch import nn

from jacal._internal.validation import as_points, check_positive_int
from jacal.models._utils import model_dtype, parse_mlp, prepared, resolve_device
from jacal.sensitivity.jacobian import check_mlp_input, logits_with_graph, matmul_precision, mlp_first_layer_rows, row_vjps

__all__ = ["JacobianGram", "jacobian_gram"]


class JacobianGram(NamedTuple):
    """``gram (N, K, K)`` = ``J Jᵀ`` of the logits' Jacobian and the ``logits (N, K)``, both float64."""

    gram: Union[torch.Tensor, np.ndarray]
    logits: Union[torch.Tensor, np.ndarray]


def _identity_rows(z: torch.Tensor) -> torch.Tensor:
    n, k = z.shape
    return torch.eye(k, dtype=z.dtype, device=z.device).expand(n, k, k)


def jacobian_gram(model: nn.Module, x: Union[torch.Tensor, np.ndarray], *, batch_size: int = 256,
                  device: Union[str, torch.device, None] = None, force_eval: bool = False) -> JacobianGram:
    """Gram matrices ``Γ(x_n) = J(x_n) J(x_n)ᵀ`` of the logits' input Jacobian ``J = ∂z/∂x``, exact.

    Args:
        model: a classifier mapping ``(N, *input_shape)`` to logits ``(N, K)``; left as found.
        x: inputs ``(N, *input_shape)``, finite.
        batch_size: points per chunk (memory is bounded by it).
        device: ``None`` (the model's), ``"auto"``, ``"cpu"``, ``"cuda"``...
        force_eval: temporarily switch a train-mode model with BatchNorm/Dropout to eval mode.

    Returns:
        :class:`JacobianGram` ``(gram (N, K, K), logits (N, K))`` in float64: numpy arrays if ``x``
        was one, else CPU tensors.

    Example:
        >>> import torch
        >>> from jacal import mlp
        >>> from jacal.sensitivity import jacobian_gram, jacobian_norm
        >>> model = mlp(input_dim=16, n_classes=3, width=8, depth=1, seed=0).eval()
        >>> x = torch.randn(4, 16)
        >>> g = jacobian_gram(model, x).gram
        >>> torch.allclose(g.diagonal(dim1=1, dim2=2).sum(1).sqrt(),
        ...                jacobian_norm(model, x, output="logits").double(), rtol=1e-5)
        True
    """
    check_positive_int("batch_size", batch_size)
    was_numpy = isinstance(x, np.ndarray)
    xt = as_points("x", x)
    dev = resolve_device(device, model)
    grams, logits = [], []
    with prepared(model, device=dev, force_eval=force_eval) as m, matmul_precision("float32", dev):
        dtype = model_dtype(m)
        parsed = parse_mlp(m)
        if parsed is not None:
            check_mlp_input(parsed, xt)
            w1 = parsed.first_weight
            wide = w1.shape[1] > w1.shape[0]
            gram_w = w1 @ w1.T if wide else None
        for start in range(0, len(xt), batch_size):
            xc = xt[start:start + batch_size].to(device=dev, dtype=dtype)
            if parsed is not None:
                seen = []

                def rows_fn(z: torch.Tensor) -> torch.Tensor:
                    seen.append(z)
                    return _identity_rows(z)

                with torch.no_grad():
                    a = mlp_first_layer_rows(parsed, xc, rows_fn)  # (n, K, h1): J = a W1
                    if wide:
                        g = torch.matmul(torch.matmul(a, gram_w), a.transpose(1, 2))
                    else:
                        j = torch.matmul(a, w1)
                        g = torch.matmul(j.double(), j.double().transpose(1, 2))
                z = seen[0]
            else:
                xg, z = logits_with_graph(m, xc)
                j = torch.stack(list(row_vjps(xg, z, _identity_rows(z.detach()))), dim=1).double()  # (n, K, D)
                g = torch.matmul(j, j.transpose(1, 2))
            g = g.detach().double()
            grams.append((g + g.transpose(1, 2)).mul_(0.5).cpu())  # exactly symmetric
            logits.append(z.detach().double().cpu())
    gram, z = torch.cat(grams), torch.cat(logits)
    return JacobianGram(gram.numpy(), z.numpy()) if was_numpy else JacobianGram(gram, z)
