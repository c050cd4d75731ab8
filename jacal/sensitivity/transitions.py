"""Linear-region transitions along closed trajectories (Novak et al. 2018, §2.2).

Each hidden unit's pre-activation gets a region code (see :mod:`jacal._internal.activations`); the
concatenation ``c(x)`` names the linear region. Around a closed trajectory z_0..z_{k−1} the
paper counts ``t = Σ_i ‖c(z_i) − c(z_{(i+1) mod k})‖_1`` (``method="sampled"``).

Sampling undercounts when a unit crosses and re-crosses between two samples. For
piecewise-linear fully-connected nets ``method="exact"`` counts every crossing along the
polygon through the samples: between two consecutive evaluated points every layer below the
current one is affine, so each pre-activation of the current layer is affine there and crosses
each breakpoint at most once, at a point found by linear interpolation. The crossing points of
layer l are added to the evaluated set before layer l+1 is examined (layer-by-layer
refinement), in float64.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, List, Sequence, Tuple

import torch
from torch import nn

from jacal._internal.activations import activation_spec
from jacal.models._utils import ParsedMLP, model_dtype, parse_mlp, prepared, resolve_device
from jacal.sensitivity.jacobian import check_mlp_input
from jacal._internal.validation import as_float_tensor, call_model, check_choice, check_finite, fmt_shape

__all__ = ["activation_codes", "transitions", "exact_transitions_affine", "TransitionResult"]


@dataclass
class TransitionResult:
    """Result of :func:`transitions`.

    Attributes:
        count: total number of transitions around the closed trajectory.
        per_step: ``(k,)`` transitions between point i and point (i+1) mod k.
        method: ``"sampled"`` or ``"exact"``.
        smooth: True when some activation is not piecewise linear and was coded by the sign of
            its pre-activation (jacal's convention; the paper defines transitions only for
            piecewise-linear nets).
        sampled_count: the paper's sampled count for the same points (equal to ``count`` for
            ``method="sampled"``), so the undercount of sampling is ``count - sampled_count``.
        n_units: number of coded hidden units.
    """

    count: int
    per_step: torch.Tensor
    method: str
    smooth: bool
    sampled_count: int
    n_units: int
    layer_counts: List[int] = field(default_factory=list)


def _hooked_codes(model: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, bool]:
    records: List[torch.Tensor] = []
    smooth = [False]
    handles = []

    def make_hook(spec):
        def hook(_module, inputs, _output):
            h = inputs[0]
            records.append(spec.codes(h.reshape(h.shape[0], -1)))
            if not spec.piecewise_linear:
                smooth[0] = True
        return hook

    for module in model.modules():
        spec = activation_spec(module)
        if spec is not None:
            handles.append(module.register_forward_hook(make_hook(spec)))
    if not handles:
        raise ValueError("`model` has no activation modules jacal can code (e.g. nn.ReLU, nn.Hardtanh, nn.Tanh); "
                         "activations applied as functions inside forward() cannot be observed.")
    try:
        with torch.no_grad():
            call_model(model, x, what="input")
    finally:
        for h in handles:
            h.remove()
    return torch.cat(records, dim=1), smooth[0]


def activation_codes(model: nn.Module, x, *, device=None, force_eval: bool = False) -> torch.Tensor:
    """Region code of every hidden unit at every point.

    Args:
        model: a network whose activations are modules (``nn.ReLU``...). Units are ordered by
            the order in which activations run in ``forward``; the logit layer is not coded.
        x: ``(N, *input_shape)``.

    Returns:
        ``(N, H)`` int8 codes (ReLU 0/1; ReLU6, Hardtanh, Hardsigmoid 0/1/2; smooth: sign).
    """
    xt = as_float_tensor("x", x, min_ndim=2)
    check_finite("x", xt)
    dev = resolve_device(device, model)
    with prepared(model, device=dev, force_eval=force_eval) as m:
        dtype = model_dtype(m)
        codes, _ = _hooked_codes(m, xt.to(dev, dtype))
    return codes.cpu()


def _closed_l1(codes: torch.Tensor) -> torch.Tensor:
    """Per-step L1 code change ``(k,)`` around a closed sequence of codes ``(k, H)``."""
    nxt = torch.roll(codes, shifts=-1, dims=0)
    return (codes.to(torch.int16) - nxt.to(torch.int16)).abs().sum(dim=1).to(torch.int64)


def _refined_crossings(z: torch.Tensor, preact: Callable[[int, torch.Tensor], torch.Tensor],
                       breakpoints: Sequence[Sequence[float]]) -> Tuple[torch.Tensor, List[int]]:
    """Exact crossings per step ``(E, k)`` around E closed polygons ``z`` ``(E, k, D)`` (float64).

    ``preact(i, x)`` gives the pre-activations ``(M, units_i)`` of the i-th coded layer at points
    ``x`` ``(M, D)``; ``breakpoints[i]`` are that layer's breakpoints. Every polygon is walked with
    one parameter ``t``: polygon e's vertex j sits at ``t = e(k + 1) + j`` (vertex k is vertex 0
    again), so the E polygons are refined together, layer by layer, and a pair of consecutive
    evaluated points counts only when both lie on the same polygon.
    """
    e_n, k, _ = z.shape
    flat = torch.cat([z, z[:, :1]], dim=1).reshape(e_n * (k + 1), -1)  # (E(k+1), D)
    ts = torch.arange(e_n * (k + 1), dtype=torch.float64, device=z.device)
    per_step = torch.zeros(e_n * k, dtype=torch.int64, device=z.device)
    layer_counts: List[int] = []

    def locate(t: torch.Tensor):
        e = torch.div(t, k + 1, rounding_mode="floor").long().clamp(max=e_n - 1)
        u = t - e.double() * (k + 1)
        i = u.floor().long().clamp(max=k - 1)
        return e, i, u - i.double()

    for layer, bps in enumerate(breakpoints):
        e, i, frac = locate(ts)
        base = e * (k + 1) + i
        h = preact(layer, flat[base] + frac.unsqueeze(1) * (flat[base + 1] - flat[base]))
        same = e[:-1] == e[1:]  # consecutive evaluated points on one polygon
        step = e * k + i  # (polygon, segment) of each point as the left end of a pair
        new_ts = []
        count = 0
        for b in bps:  # ≤ 2 breakpoints per activation
            above = h > b
            cross = (above[:-1] != above[1:]) & same.unsqueeze(1)  # (M−1, units)
            if not bool(cross.any()):
                continue
            pair, _unit = torch.nonzero(cross, as_tuple=True)
            h0, h1 = h[:-1][cross], h[1:][cross]
            w = ((b - h0) / (h1 - h0)).clamp(0.0, 1.0)
            new_ts.append(ts[pair] + w * (ts[pair + 1] - ts[pair]))
            per_step += torch.bincount(step[pair], minlength=e_n * k)
            count += int(pair.numel())
        layer_counts.append(count)
        if new_ts:
            ts = torch.unique(torch.cat([ts] + new_ts))  # sorted
    return per_step.reshape(e_n, k), layer_counts


def _exact_counts(parsed: ParsedMLP, z: torch.Tensor) -> Tuple[torch.Tensor, List[int]]:
    """Exact crossings per step ``(k,)`` along the closed polygon through ``z`` (k, D), float64."""
    _, layers = parsed
    coded = [i for i, layer in enumerate(layers) if layer.activation is not None]

    def preact(j: int, h: torch.Tensor) -> torch.Tensor:
        for prev in layers[:coded[j]]:
            h = prev.module(h)
        return h

    per_step, layer_counts = _refined_crossings(z.unsqueeze(0), preact, [layers[i].activation.breakpoints for i in coded])
    return per_step[0], layer_counts


@torch.no_grad()
def exact_transitions_affine(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], activation: nn.Module,
                             trajectories, *, chunk: int = 8) -> torch.Tensor:
    """Exact transitions per step of a fully-connected net given by its weights, around many closed
    trajectories at once (the same count as ``transitions(..., method="exact")``).

    Args:
        weights: per layer ``(in_i, out_i)`` (``h @ W + b`` convention); the last layer gives the
            logits and is not coded.
        biases: per layer ``(out_i,)`` (or ``(1, out_i)``).
        activation: the hidden layers' activation module; must be piecewise linear.
        trajectories: ``(E, k, D)``; point k−1 of each neighbours its point 0.
        chunk: trajectories refined together (bounds memory).

    Returns:
        ``(E, k)`` int64: crossings between point j and point (j+1) mod k of each trajectory.

    Example:
        >>> import torch
        >>> w = [torch.ones(1, 1), torch.ones(1, 2)]
        >>> b = [torch.tensor([-0.5]), torch.zeros(2)]
        >>> exact_transitions_affine(w, b, torch.nn.ReLU(), torch.tensor([[[0.0], [1.0]]])).tolist()
        [[1, 1]]
    """
    spec = activation_spec(activation)
    if spec is None or not spec.piecewise_linear:
        raise ValueError(f"Expected a piecewise-linear `activation` (ReLU, ReLU6, Hardtanh, Hardsigmoid...), "
                         f"got {type(activation).__name__}.")
    if len(weights) != len(biases) or len(weights) < 2:
        raise ValueError(f"Expected as many `biases` as `weights` and at least 2 layers, got {len(weights)} "
                         f"weights and {len(biases)} biases.")
    traj = as_float_tensor("trajectories", trajectories, min_ndim=3)
    check_finite("trajectories", traj)
    w64 = [w.detach().double() for w in weights]
    b64 = [b.detach().double().reshape(-1) for b in biases]
    if traj.shape[2] != w64[0].shape[0]:
        raise ValueError(f"Expected `trajectories` of shape (E, k, {w64[0].shape[0]}), got {fmt_shape(traj.shape)}.")
    dev = w64[0].device

    def preact(j: int, h: torch.Tensor) -> torch.Tensor:
        for i in range(j):
            h = activation(torch.addmm(b64[i], h, w64[i]))
        return torch.addmm(b64[j], h, w64[j])

    bps = [spec.breakpoints] * (len(w64) - 1)
    z = traj.double().to(dev)
    out = [_refined_crossings(z[s:s + chunk], preact, bps)[0] for s in range(0, len(z), chunk)]
    return torch.cat(out).cpu()


def transitions(
    model: nn.Module,
    trajectory,
    *,
    method: str = "sampled",
    device=None,
    force_eval: bool = False,
) -> TransitionResult:
    """Count linear-region transitions around a closed trajectory.

    Args:
        model: the network. ``method="exact"`` needs a plain fully-connected ``nn.Sequential``
            with piecewise-linear activations.
        trajectory: ``(k, *input_shape)`` points; point k−1 neighbours point 0.
        method: ``"sampled"`` (the paper's count on the given points) or ``"exact"`` (every
            crossing along the polygon through them, computed in float64).

    Returns:
        :class:`TransitionResult`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(1.0), net[0].bias.fill_(-0.5)
        >>> transitions(net, torch.tensor([[0.0], [1.0]]), method="exact").count
        2
    """
    check_choice("method", method, ("sampled", "exact"))
    traj = as_float_tensor("trajectory", trajectory, min_ndim=2)
    check_finite("trajectory", traj)
    if traj.shape[0] < 2:
        raise ValueError(f"Expected `trajectory` to hold at least 2 points, got shape {fmt_shape(traj.shape)}.")
    dev = resolve_device(device, model)
    with prepared(model, device=dev, force_eval=force_eval) as m:
        dtype = model_dtype(m)
        codes, smooth = _hooked_codes(m, traj.to(dev, dtype))
        sampled = _closed_l1(codes.cpu())
        if method == "sampled":
            return TransitionResult(int(sampled.sum()), sampled, "sampled", smooth, int(sampled.sum()), codes.shape[1])
        parsed = parse_mlp(m)
        if parsed is None or smooth or any(
            layer.activation is not None and not layer.activation.piecewise_linear for layer in parsed.layers
        ):
            raise ValueError("method='exact' needs a fully-connected nn.Sequential with piecewise-linear "
                             "activations (ReLU, LeakyReLU, ReLU6, Hardtanh, Hardsigmoid); use method='sampled'.")
        m64 = _double_copy(m)
        parsed64 = parse_mlp(m64)
        check_mlp_input(parsed64, traj, name="trajectory")
        z = traj.double().reshape(traj.shape[0], -1).to(dev)
        with torch.no_grad():
            per_step, layer_counts = _exact_counts(parsed64, z)
    return TransitionResult(int(per_step.sum()), per_step.cpu(), "exact", False, int(sampled.sum()),
                            codes.shape[1], layer_counts)


def _double_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()
