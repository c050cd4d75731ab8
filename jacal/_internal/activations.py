"""Activation functions jacal understands: breakpoints, derivatives and region codes.

Piecewise-linear activations are described by their breakpoints; the region code of a
pre-activation ``h`` is the number of breakpoints strictly below it (ReLU: 0/1, ReLU6,
Hardtanh, Hardsigmoid: 0/1/2), so the L1 distance between two codes counts the breakpoints
crossed. Smooth activations get the sign code ``h > 0`` and are flagged as such.
Derivatives at a breakpoint follow PyTorch's autograd conventions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import nn

__all__ = ["ActivationSpec", "activation_spec", "SMOOTH_ACTIVATIONS"]


@dataclass(frozen=True)
class ActivationSpec:
    """How jacal treats one activation module.

    Attributes:
        breakpoints: the pre-activation values where the linear piece changes (sorted).
        piecewise_linear: True when the activation is piecewise linear.
        derivative: ``h -> d act(h) / dh`` elementwise, or None when unknown.
    """

    breakpoints: Tuple[float, ...]
    piecewise_linear: bool
    derivative: Optional[Callable[[torch.Tensor], torch.Tensor]]

    def codes(self, h: torch.Tensor) -> torch.Tensor:
        """Region code of each pre-activation: number of breakpoints strictly below it (int8)."""
        bps = self.breakpoints if self.piecewise_linear else (0.0,)
        code = torch.zeros(h.shape, dtype=torch.int8, device=h.device)
        for b in bps:
            code += (h > b).to(torch.int8)
        return code


SMOOTH_ACTIVATIONS = (
    nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Softplus,
    nn.Mish, nn.Hardswish, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
)


def activation_spec(module: nn.Module) -> Optional[ActivationSpec]:
    """Return the :class:`ActivationSpec` of an activation module, or None if it is not one."""
    if isinstance(module, nn.ReLU):
        return ActivationSpec((0.0,), True, lambda h: (h > 0).to(h.dtype))
    if isinstance(module, nn.LeakyReLU):
        s = float(module.negative_slope)
        return ActivationSpec((0.0,), True, lambda h: torch.where(h > 0, 1.0, s).to(h.dtype))
    if isinstance(module, nn.Hardtanh):  # includes nn.ReLU6 (Hardtanh(0, 6))
        lo, hi = float(module.min_val), float(module.max_val)
        return ActivationSpec((lo, hi), True, lambda h: ((h > lo) & (h < hi)).to(h.dtype))
    if isinstance(module, nn.Hardsigmoid):
        return ActivationSpec((-3.0, 3.0), True, lambda h: ((h > -3) & (h < 3)).to(h.dtype) / 6.0)
    if isinstance(module, nn.Tanh):
        return ActivationSpec((), False, lambda h: 1.0 - torch.tanh(h) ** 2)
    if isinstance(module, nn.Sigmoid):
        def _dsig(h: torch.Tensor) -> torch.Tensor:
            s = torch.sigmoid(h)
            return s * (1.0 - s)
        return ActivationSpec((), False, _dsig)
    if isinstance(module, SMOOTH_ACTIVATIONS):
        return ActivationSpec((), False, None)
    return None
