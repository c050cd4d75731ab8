"""Model factories: the paper's fully-connected nets, and a small CNN.

Every model built here records its constructor arguments in ``.config`` (a plain dict) so a
checkpoint can rebuild it (:mod:`jacal.models.checkpoint`).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from jacal._internal.validation import check_choice, check_positive_int

__all__ = ["MLP", "SmallCNN", "mlp", "cnn", "ACTIVATIONS", "build_model", "MODEL_KINDS"]

ACTIVATIONS: Dict[str, type] = {
    "relu": nn.ReLU,
    "leaky-relu": nn.LeakyReLU,
    "relu6": nn.ReLU6,
    "hard-tanh": nn.Hardtanh,
    "hard-sigmoid": nn.Hardsigmoid,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


class MLP(nn.Sequential):
    """Fully-connected classifier: ``Flatten → [Linear → act] × depth → Linear``.

    Weights are drawn from ``N(0, weight_variance / fan_in)`` and biases from
    ``N(0, bias_variance)`` (the paper's "weight-init variance" factor). It accepts any input
    shape whose size is ``input_dim`` (images are flattened by the first layer).

    Args:
        input_dim: features per point (e.g. 784 for MNIST).
        n_classes: K.
        width: hidden units per layer.
        depth: number of hidden layers (0 gives a linear model).
        activation: a key of :data:`ACTIVATIONS`.
        weight_variance, bias_variance: initialization variances.
        dropout: dropout probability after each hidden activation (0: none). Needed by the
            ``bald`` acquisition strategy (MC dropout).
        seed: seeds the initialization (``None``: torch's global generator).
    """

    def __init__(self, input_dim: int, n_classes: int, *, width: int = 512, depth: int = 3,
                 activation: str = "relu", weight_variance: float = 2.0, bias_variance: float = 0.0,
                 dropout: float = 0.0, seed: Optional[int] = None) -> None:
        check_positive_int("input_dim", input_dim)
        check_positive_int("n_classes", n_classes)
        check_positive_int("width", width)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"Expected `depth` to be a non-negative int, got {depth!r}.")
        check_choice("activation", activation, ACTIVATIONS)
        if weight_variance <= 0 or bias_variance < 0:
            raise ValueError(f"Expected `weight_variance` > 0 and `bias_variance` >= 0, got {weight_variance}, {bias_variance}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Expected `dropout` in [0, 1), got {dropout!r}.")
        layers = [nn.Flatten()]
        fan_in = input_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        layers.append(nn.Linear(fan_in, n_classes))
        super().__init__(*layers)
        self.config = dict(input_dim=input_dim, n_classes=n_classes, width=width, depth=depth,
                           activation=activation, weight_variance=weight_variance,
                           bias_variance=bias_variance, dropout=dropout, seed=seed)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for m in self:
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, math.sqrt(weight_variance / m.in_features), generator=gen)
                    if bias_variance > 0:
                        m.bias.normal_(0.0, math.sqrt(bias_variance), generator=gen)
                    else:
                        m.bias.zero_()

    @property
    def n_neurons(self) -> int:
        """Number of hidden units."""
        return self.config["width"] * self.config["depth"]


def mlp(input_dim: int, n_classes: int, **kwargs) -> MLP:
    """Build an :class:`MLP` (see its arguments)."""
    return MLP(input_dim, n_classes, **kwargs)


class SmallCNN(nn.Sequential):
    """``[Conv3×3 → ReLU → MaxPool2] × len(channels) → Flatten → Linear → ReLU → Linear``."""

    def __init__(self, input_shape: Sequence[int], n_classes: int, *, channels: Sequence[int] = (16, 32),
                 hidden: int = 128, seed: Optional[int] = None) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"Expected `input_shape` (C, H, W), got {tuple(input_shape)}.")
        # PyTorch's default initialization, drawn from a private generator state when seeded.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            c, h, w = (int(s) for s in input_shape)
            layers = []
            for out_c in channels:
                layers += [nn.Conv2d(c, out_c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
                c, h, w = out_c, h // 2, w // 2
            layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
            super().__init__(*layers)
        self.config = dict(input_shape=list(input_shape), n_classes=n_classes, channels=list(channels),
                           hidden=hidden, seed=seed)


def cnn(input_shape: Sequence[int], n_classes: int, **kwargs) -> SmallCNN:
    """Build a :class:`SmallCNN`."""
    return SmallCNN(input_shape, n_classes, **kwargs)


MODEL_KINDS = {"mlp": MLP, "cnn": SmallCNN}


def build_model(kind: str, config: dict) -> nn.Module:
    """Rebuild a model from its kind (``"mlp"`` / ``"cnn"``) and ``.config``."""
    check_choice("kind", kind, MODEL_KINDS)
    cfg = dict(config)
    if kind == "mlp":
        return MLP(cfg.pop("input_dim"), cfg.pop("n_classes"), **cfg)
    return SmallCNN(cfg.pop("input_shape"), cfg.pop("n_classes"), **cfg)
