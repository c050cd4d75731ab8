"""How far apart two float32 results may be when only the order of their sums differs.

Chunk sizes, batched vs single kernels and the processor's BLAS code paths change the order in which
float32 sums are taken; equality to a fixed relative tolerance per element is not a property the code
has (an element that is small next to the others of its row, after cancellation, carries the rounding
of the large ones). The forward error of a float32 dot product of ``length`` terms is at most about
``length · ε · Σ|aᵢbᵢ|`` (ε = float32 machine epsilon), and a result built from ``depth`` such sums in a
row carries about ``depth`` times that. These helpers allow that much, scaled to the magnitude of the
values compared (per row by default), which is still orders of magnitude below what a bug (a row out
of place, a wrong chunk offset, state leaking between chunks) changes.

``MKL_CBWR=COMPATIBLE`` makes MKL take other code paths on the same machine, which reproduces the
failures of the fixed-tolerance versions of these comparisons (issue 21).
"""
import numpy as np
import torch

EPS32 = float(np.finfo(np.float32).eps)


def _array(a) -> np.ndarray:
    return (a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64))


def reordered_f32_atol(scale, *, length: int, depth: int = 1, slack: float = 4.0):
    """Absolute tolerance ``slack · depth · length · ε · scale`` for float32 values of magnitude ``scale``."""
    return slack * depth * length * EPS32 * np.asarray(scale, dtype=np.float64)


def assert_close_reordered(got, ref, *, length: int, depth: int = 1, per_row: bool = True, slack: float = 4.0):
    """``got`` equals ``ref`` up to the rounding of float32 sums of ``length`` terms taken in another order.

    The scale is each row's largest magnitude (``per_row``, rows along axis 0) or the whole array's;
    compared in float64.
    """
    a, b = _array(got), _array(ref)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    if not per_row:
        scale = np.abs(b).max(initial=0.0)
    elif b.ndim == 1:  # one number per point: its own magnitude
        scale = np.abs(b)
    else:
        scale = np.abs(b).reshape(len(b), -1).max(1).reshape((-1,) + (1,) * (b.ndim - 1))
    tol = reordered_f32_atol(scale, length=length, depth=depth, slack=slack)
    err = np.abs(a - b)
    bad = ~(err <= tol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(tol, 1e-300), 0)), b.shape)
        raise AssertionError(f"{int(bad.sum())} of {b.size} values differ by more than float32 reordering allows "
                             f"(length {length}, depth {depth}): at {tuple(int(k) for k in i)} got {a[i]!r}, "
                             f"expected {b[i]!r}, |diff| {err[i]:.3g} > {np.broadcast_to(tol, b.shape)[i]:.3g}")
