"""Per-point Jacobian embeddings: vectors whose distances are distances between Jacobians.

``jacobian_norm`` reduces ``J(x) = ∂f(x)/∂x`` (K × D) to one number; acquisition that wants a
*diverse* batch of sensitive points needs ``‖J(x) − J(x′)‖_F`` as well. This module maps each
point to ``E(x)`` (R × r) with

    ‖E(x) − E(x′)‖_F = ‖J(x) − J(x′)‖_F   and   ‖E(x)‖_F = ‖J(x)‖_F

exactly (``sketch_dim=None``) or up to a Johnson–Lindenstrauss distortion (``sketch_dim=r``).

Rows. With ``T(x) = ∂f/∂z`` (K × K, see :mod:`jacal.sensitivity.jacobian`), ``J = T J_z``. For the
softmax, ``T`` is symmetric with ``T·1 = 0``, so every column of ``J`` lies in ``1^⊥`` and the
*fixed* orthonormal basis ``Q`` (K × K−1) of ``1^⊥`` gives ``‖Qᵀ J‖ = ‖J‖`` for every point: K−1 rows
``Qᵀ T`` instead of K. (The norm's per-point QR rotation cannot be used here: distances need one
basis shared by all points.) Other outputs keep their K rows.

Columns. For a fully-connected net ``J = A(x) W₁`` with ``A (R × h₁)`` from the closed-form backward
product, and with the thin SVD ``W₁ = U S Vᵀ``, ``‖(A − A′) W₁‖ = ‖(A − A′) U S‖``: ``r = min(h₁, D)``
columns per row, exact, for no work beyond what :func:`jacobian_norm` does. Any other model gets
its rows' gradients by one vector-Jacobian product each (``r = D``), and ``sketch_dim`` multiplies
every row by one fixed Gaussian matrix ``G (D × r)`` with entries ``N(0, 1/r)`` (for an MLP,
``A (W₁ G)``), which preserves the distances between a fixed set of points up to ``1 ± ε`` with
high probability for ``r = O(log N / ε²)``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from jacal._internal.validation import as_points, check_choice, check_positive_int
from jacal.models._utils import model_dtype, parse_mlp, prepared, resolve_device
from jacal.sensitivity.jacobian import (OUTPUTS, check_mlp_input, logits_with_graph, mlp_first_layer_rows,
                                        ones_complement_basis, output_map_jacobian, row_vjps)

__all__ = ["jacobian_embedding", "JacobianEmbedder", "EMBEDDING_OUTPUTS"]


EMBEDDING_OUTPUTS = OUTPUTS + ("logit_margin",)


def embedding_rows(z: torch.Tensor, output: str) -> torch.Tensor:
    """Rows ``(N, R, K)`` in float64 with ``rows_n J_z(x_n)`` an isometric image of ``J_f(x_n)``.

    Softmax: ``Qᵀ T`` (R = K−1, one basis ``Q`` for all points); ``"logit_margin"``: the one row
    ``e_a − e_b`` for each point's top two classes ``a, b`` (the gradient of ``z_a − z_b``); other
    outputs: ``T`` (R = K).
    """
    if output == "logit_margin":
        top2 = z.detach().topk(2, dim=1).indices
        rows = torch.zeros(z.shape[0], 1, z.shape[1], dtype=torch.float64, device=z.device)
        rows[:, 0].scatter_(1, top2[:, :1], 1.0)
        rows[:, 0].scatter_(1, top2[:, 1:], -1.0)
        return rows
    t = output_map_jacobian(z, output)
    if output != "softmax":
        return t
    q = ones_complement_basis(z.shape[1]).to(t.device)
    return q.T @ t


def jacobian_embedding(
    model: nn.Module,
    x: Union[torch.Tensor, np.ndarray],
    *,
    output: str = "softmax",
    sketch_dim: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 256,
    device: Union[str, torch.device, None] = None,
    force_eval: bool = False,
    progress: Optional[Callable[[int, int], Any]] = None,
) -> Union[torch.Tensor, np.ndarray]:
    """Per-point Jacobian embeddings ``(N, R, r)``: Euclidean geometry of ``∂f(x)/∂x``.

    Args:
        model: any classifier mapping ``(N, *input_shape)`` to logits ``(N, K)`` (left as found).
        x: inputs ``(N, *input_shape)``, finite.
        output: ``"softmax"`` (default; R = K−1 rows), ``"logits"`` or ``"log-softmax"`` (R = K), or
            ``"logit_margin"`` (R = 1: the gradient of the gap ``z_a − z_b`` between the two top
            logits, whose ratio ``(z_a − z_b) / ‖∇(z_a − z_b)‖`` is the first-order distance to the
            nearest decision boundary, as in DeepFool).
        sketch_dim: ``None`` for exact embeddings (fully-connected ``nn.Sequential``:
            ``r = min(h₁, D)``; other models: ``r = D``, the full input), or ``r`` for a seeded
            Johnson–Lindenstrauss sketch of each row (approximate distances, any model).
        seed: seeds the sketch matrix (the same for every chunk, so all points share it).
        batch_size: points per chunk; memory is bounded by it plus the ``(N, R, r)`` result.
        device: ``None`` (the model's), ``"auto"``, ``"cpu"``, ``"cuda"``.
        force_eval: evaluate a train-mode model with BatchNorm/Dropout in eval mode.
        progress: optional ``callback(points_done, points_total)``.

    Returns:
        ``(N, R, r)`` in the model's dtype (numpy if ``x`` was numpy, else a CPU tensor), with
        ``‖E_n − E_m‖_F = ‖J(x_n) − J(x_m)‖_F`` and ``‖E_n‖_F = ‖J(x_n)‖_F`` (exact without a sketch).

    Example:
        >>> import torch
        >>> from jacal import jacobian_norm, mlp
        >>> from jacal.sensitivity import jacobian_embedding
        >>> model = mlp(input_dim=64, n_classes=10, width=32, depth=2, seed=0).eval()
        >>> x = torch.randn(5, 64)
        >>> e = jacobian_embedding(model, x)
        >>> e.shape
        torch.Size([5, 9, 32])
        >>> bool(torch.allclose(e.flatten(1).norm(dim=1), jacobian_norm(model, x), rtol=1e-4))
        True
    """
    check_choice("output", output, EMBEDDING_OUTPUTS)
    check_positive_int("batch_size", batch_size)
    if sketch_dim is not None:
        check_positive_int("sketch_dim", sketch_dim)
    was_numpy = isinstance(x, np.ndarray)
    xt = as_points("x", x)
    dev = resolve_device(device, model)
    n = xt.shape[0]
    with prepared(model, device=dev, force_eval=force_eval) as m:
        embed = JacobianEmbedder(m, xt.shape[1:], output=output, sketch_dim=sketch_dim, seed=seed, device=dev)
        out: Optional[torch.Tensor] = None
        for start in range(0, n, batch_size):  # chunks, never single points
            stop = min(start + batch_size, n)
            e = embed(xt[start:stop])
            if out is None:
                out = torch.empty((n,) + tuple(e.shape[1:]), dtype=e.dtype)
            out[start:stop] = e
            if progress is not None:
                progress(stop, n)
    return out.numpy() if was_numpy else out


class JacobianEmbedder:
    """:func:`jacobian_embedding` for one prepared model, chunk by chunk.

    The per-model work (parsing an MLP, the SVD of ``W₁`` or the sketch matrix) is done once here,
    so a caller that streams a pool in chunks (the acquisition feature pass) pays it once, and
    every chunk shares one basis. ``model`` must already be prepared (see ``jacal.models._utils.prepared``).
    """

    def __init__(self, model: nn.Module, input_shape, *, output: str = "softmax", sketch_dim: Optional[int] = None,
                 seed: int = 0, device: Union[str, torch.device, None] = None):
        check_choice("output", output, EMBEDDING_OUTPUTS)
        if sketch_dim is not None:
            check_positive_int("sketch_dim", sketch_dim)
        self.model, self.output = model, output
        self.device = resolve_device(device, model)
        self.dtype = model_dtype(model)
        self.parsed = parse_mlp(model)
        d_in = int(np.prod(tuple(input_shape)))
        sketch = None
        if sketch_dim is not None:
            gen = torch.Generator().manual_seed(int(seed))
            sketch = torch.randn(d_in, sketch_dim, generator=gen, dtype=torch.float64) / sketch_dim ** 0.5
        self.cols = self.sketch = None
        if self.parsed is not None:
            w1 = self.parsed.first_weight.detach().double()
            if sketch is None:
                u, s, _ = torch.linalg.svd(w1, full_matrices=False)
                cols = u * s  # (h₁, min(h₁, D)): ‖A W₁‖ = ‖A U S‖
            else:
                cols = w1 @ sketch.to(w1.device)
            self.cols = cols.to(device=self.device, dtype=self.dtype)
        elif sketch is not None:
            self.sketch = sketch.to(device=self.device, dtype=self.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(b, R, r)`` (CPU, the model's dtype) of a finite chunk ``x (b, *input_shape)``."""
        return self.with_logits(x)[0]

    def with_logits(self, x: torch.Tensor) -> tuple:
        """``(embeddings (b, R, r) on the CPU, logits (b, K) on the device)``: the logits of the same
        forward pass, so a caller that needs both runs the model once."""
        xc = x.to(device=self.device, dtype=self.dtype)
        if self.parsed is not None:
            check_mlp_input(self.parsed, xc)
            seen = []

            def rows(z: torch.Tensor) -> torch.Tensor:
                seen.append(z)
                return embedding_rows(z, self.output).to(self.dtype)

            with torch.no_grad():
                e = mlp_first_layer_rows(self.parsed, xc, rows) @ self.cols
            return e.detach().cpu(), seen[0]
        xg, z = logits_with_graph(self.model, xc)
        rows = embedding_rows(z.detach(), self.output).to(z.dtype)
        e = torch.stack([g @ self.sketch if self.sketch is not None else g for g in row_vjps(xg, z, rows)], dim=1)
        return e.detach().cpu(), z.detach()
