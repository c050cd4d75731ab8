"""Closed trajectories through input space (Novak et al. 2018, §2.2 and §4.1)."""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from jacal._internal.validation import as_float_tensor, check_choice, check_finite, check_positive_int, fmt_shape

__all__ = ["ellipse", "random_ellipse", "closed_length", "RANDOM_CONSTRUCTIONS"]

Array = Union[torch.Tensor, np.ndarray]


def ellipse(a1: Array, a2: Array, a3: Array, n_points: int) -> torch.Tensor:
    """Points on the ellipse through three anchors, exactly as in the paper.

    Unit-circle points at angles π/3, π, 5π/3 form ``P`` (3 × 2); with ``c`` the anchors' mean,
    ``T = pinv(P) (A − c)`` and the samples are ``[cos θ_j, sin θ_j] T + c`` for
    ``θ_j = 2πj / n_points``. The ellipse passes through a1, a2, a3 (at θ = π/3, π, 5π/3, which
    are samples when ``n_points`` is a multiple of 6).

    Args:
        a1, a2, a3: anchors, each of the same shape ``S`` (e.g. ``(784,)`` or ``(1, 28, 28)``).
        n_points: number of samples k.

    Returns:
        ``(n_points, *S)`` float64 tensor; consecutive rows are neighbours and the last row
        neighbours the first (the trajectory is closed).

    Example:
        >>> import torch
        >>> pts = ellipse(torch.zeros(2), torch.ones(2), torch.tensor([1.0, 0.0]), 6)
        >>> pts.shape
        torch.Size([6, 2])
    """
    check_positive_int("n_points", n_points)
    anchors = [as_float_tensor(name, a, min_ndim=1).double() for name, a in (("a1", a1), ("a2", a2), ("a3", a3))]
    shape = anchors[0].shape
    for name, a in zip(("a2", "a3"), anchors[1:]):
        if a.shape != shape:
            raise ValueError(f"Expected anchors of one shape; `a1` is {fmt_shape(shape)} but `{name}` is {fmt_shape(a.shape)}.")
    a = torch.stack([t.reshape(-1) for t in anchors])  # (3, D)
    check_finite("anchors", a)
    angles = torch.tensor([math.pi / 3, math.pi, 5 * math.pi / 3], dtype=torch.float64)
    p = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (3, 2)
    centre = a.mean(dim=0)
    t = torch.linalg.pinv(p) @ (a - centre)  # (2, D)
    theta = 2 * math.pi * torch.arange(n_points, dtype=torch.float64) / n_points
    circle = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)  # (k, 2)
    return (circle @ t + centre).reshape(n_points, *shape)


RANDOM_CONSTRUCTIONS = ("data-matched", "standard-normal")


def random_ellipse(data: Array, n_points: int, *, seed: int = 0, construction: str = "data-matched") -> torch.Tensor:
    """An ellipse through three random points far from the data manifold (the paper's "random
    ellipse", §4.1). How the paper drew its anchors is not stated; jacal offers two [ours]:

    * ``"data-matched"``: each feature independently from ``N(mean_d, std_d²)``, with ``mean_d``,
      ``std_d`` the per-feature statistics of ``data``. The anchors have the data's first two
      moments per feature but none of its structure (for images: pixel noise), so they lie at about
      the data's radius.
    * ``"standard-normal"``: each feature i.i.d. ``N(0, 1)`` in the model's input units (for
      ``[0, 1]`` pixels: far outside the data's range and radius).

    Args:
        data: reference points ``(N, *S)`` (only their shape is used by ``"standard-normal"``).
        n_points: samples on the ellipse.
        seed: random seed.
        construction: one of :data:`RANDOM_CONSTRUCTIONS`.

    Returns:
        ``(n_points, *S)`` float64 tensor.
    """
    check_choice("construction", construction, RANDOM_CONSTRUCTIONS)
    x = as_float_tensor("data", data, min_ndim=2).double()
    if x.shape[0] < 2:
        raise ValueError(f"Expected `data` to hold at least 2 points, got shape {fmt_shape(x.shape)}.")
    check_finite("data", x)
    flat = x.reshape(x.shape[0], -1)
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(3, flat.shape[1], generator=gen, dtype=torch.float64)
    if construction == "data-matched":
        anchors = flat.mean(dim=0) + flat.std(dim=0) * noise
    else:
        anchors = noise
    shape = x.shape[1:]
    return ellipse(anchors[0].reshape(shape), anchors[1].reshape(shape), anchors[2].reshape(shape), n_points)


def closed_length(trajectory: Array) -> float:
    """Length of the closed polygon through ``trajectory`` ``(k, *S)`` (point k−1 joins point 0),
    in input units: the length transition densities per unit length divide by."""
    z = as_float_tensor("trajectory", trajectory, min_ndim=2).double()
    z = z.reshape(z.shape[0], -1)
    return float((torch.roll(z, -1, dims=0) - z).norm(dim=1).sum())
