"""Argument and tensor validation shared by the whole library.

Every user-facing error is raised from here, as a ``TypeError`` (wrong container) or a
``ValueError`` (bad value), with a message that names the argument and echoes what was given.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "JacalError",
    "as_float_tensor",
    "as_input_tensor",
    "check_finite",
    "check_choice",
    "check_positive_int",
    "as_points",
    "first_line",
    "call_model",
    "check_logits",
    "forward_logits",
    "check_probabilities",
]

#: What a model's forward raises on input it cannot take (wrong shape, wrong dtype, its own checks).
MODEL_ERRORS = (RuntimeError, ValueError, IndexError, AssertionError)


class JacalError(ValueError):
    """A user-facing problem (missing file, corrupt checkpoint, unusable dataset...)."""


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError``."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {choices}, got {value!r}.")
    return value


def check_positive_int(name: str, value: Any, *, upper: int | None = None, upper_name: str = "") -> int:
    """Return ``value`` as an int if it is a positive integer (≤ ``upper`` when given)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}.")
    if upper is not None and value > upper:
        raise ValueError(
            f"Expected `{name}` to be a positive int no larger than {upper_name or 'the limit'} ({upper}), got {value}."
        )
    return int(value)


def as_float_tensor(name: str, x: Any, *, min_ndim: int = 1) -> torch.Tensor:
    """Convert a numpy array or tensor to a floating tensor without copying when possible.

    Args:
        name: the argument's name, used in error messages.
        x: ``torch.Tensor`` or ``numpy.ndarray``.
        min_ndim: the smallest allowed number of dimensions.
    """
    if isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise TypeError(f"Expected `{name}` to be a numeric array, got dtype {x.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor or numpy.ndarray, got {type(x).__name__}.")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if x.ndim < min_ndim:
        raise ValueError(f"Expected `{name}` to have at least {min_ndim} dimensions, got shape {tuple(x.shape)}.")
    return x


def as_input_tensor(name: str, x: Any, *, min_ndim: int = 1) -> torch.Tensor:
    """Model inputs as a floating tensor, by one rule for every entry point that takes items.

    * floating arrays are the model's input units and are used as given;
    * ``uint8`` arrays are images in [0, 255] and are scaled to [0, 1], as image folders are
      (torchvision's ``ToTensor`` / ``ToDtype(float32, scale=True)``): a model that expects
      normalized inputs gets them with ``normalize=(mean, std)`` where the entry point takes it, or
      has the normalization as its first layer;
    * other integer and boolean arrays are refused (``TypeError``): token ids of a text model cannot
      be differentiated; pass continuous inputs, e.g. the token embeddings with the part of the
      model that reads them.
    """
    dtype = x.dtype if isinstance(x, (np.ndarray, torch.Tensor)) else None
    if dtype in (np.uint8, torch.uint8):
        return as_float_tensor(name, x, min_ndim=min_ndim) / 255.0
    if dtype is not None and dtype not in (np.dtype(object),) and (
            (isinstance(x, np.ndarray) and (np.issubdtype(dtype, np.integer) or dtype == bool))
            or (isinstance(x, torch.Tensor) and not x.is_floating_point() and not x.is_complex())):
        raise TypeError(f"`{name}` holds {str(dtype).replace('torch.', '')} values: integer token inputs (text "
                        f"models) are not supported; pass continuous inputs, e.g. the token embeddings with the part "
                        f"of the model that reads them (uint8 images are read as pixels in [0, 255]).")
    return as_float_tensor(name, x, min_ndim=min_ndim)


def nonfinite_rows(x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Boolean mask ``(N,)`` of rows of ``x`` (N, ...) that contain NaN or Inf.

    Works ``chunk`` rows at a time, so the temporary is bounded by the chunk, not by N.
    """
    flat = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)
    out = torch.zeros(flat.shape[0], dtype=torch.bool, device=x.device)
    for s in range(0, flat.shape[0], chunk):
        out[s:s + chunk] = ~torch.isfinite(flat[s:s + chunk]).all(dim=1)
    return out


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the first offending rows if ``x`` holds NaN or Inf."""
    if x.numel() == 0:
        return
    bad_rows = nonfinite_rows(x)
    if bool(bad_rows.any()):
        idx = torch.nonzero(bad_rows).flatten()
        shown = ", ".join(str(int(i)) for i in idx[:5])
        more = f" (and {len(idx) - 5} more)" if len(idx) > 5 else ""
        raise ValueError(f"`{name}` contains NaN or Inf in {len(idx)} row(s): {shown}{more}.")


def fmt_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def first_line(err: BaseException, limit: Optional[int] = 120) -> str:
    """The first line of an exception's message, cut at ``limit`` characters (``None``: uncut); its
    type name when it has no message."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def as_points(name: str, x: Any) -> torch.Tensor:
    """``x`` as a float tensor of at least one finite point ``(N ≥ 1, ...)``, else ``ValueError``/``TypeError``."""
    xt = as_input_tensor(name, x, min_ndim=2)
    if xt.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: expected at least one point, got shape {fmt_shape(xt.shape)}.")
    check_finite(name, xt)
    return xt


def call_model(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, *, what: str = "`x`") -> Any:
    """``fn(x)``, with the model's own error reworded as one line that names the input:
    "`model` rejected {what} with per-point shape (…): <its first line>". A :class:`JacalError`
    (jacal's own message, e.g. from an embedding hook) passes unchanged."""
    try:
        return fn(x)
    except JacalError:
        raise
    except MODEL_ERRORS as err:
        raise ValueError(f"`model` rejected {what} with per-point shape {fmt_shape(x.shape[1:])}: "
                         f"{first_line(err, None)}") from err


def check_logits(z: Any, n: int) -> torch.Tensor:
    """``z`` if it is a tensor of logits ``(n, K)``, else ``ValueError`` echoing what the model returned."""
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != n:
        got = fmt_shape(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"Expected `model` to return logits of shape (N, K) for N={n} points, got {got}.")
    return z


def forward_logits(model: Callable[[torch.Tensor], Any], x: torch.Tensor, *, what: str = "`x`") -> torch.Tensor:
    """``model(x)``: logits ``(N, K)`` for ``x (N, ...)``, or a one-line ``ValueError`` (see :func:`call_model`)."""
    return check_logits(call_model(model, x, what=what), x.shape[0])


def check_probabilities(name: str, probs: Any, *, ndim: int = 2) -> np.ndarray:
    """``probs (..., K)`` as float64 numpy, checked: ``ndim`` dimensions, K ≥ 2, finite, non-negative rows
    summing to 1 (to 1e-3), clipped to [0, 1]."""
    t = as_float_tensor(name, probs, min_ndim=ndim)
    if t.ndim != ndim:
        raise ValueError(f"Expected `{name}` with {ndim} dimensions, got shape {tuple(t.shape)}.")
    if t.shape[-1] < 2:
        raise ValueError(f"Expected `{name}` to have at least 2 classes in its last dimension, got shape {tuple(t.shape)}.")
    check_finite(name, t.reshape(-1, t.shape[-1]))
    p = t.double().cpu().numpy()
    if (p < -1e-6).any() or np.abs(p.sum(-1) - 1).max() > 1e-3:
        raise ValueError(f"Expected `{name}` to hold probabilities (non-negative rows summing to 1).")
    return np.clip(p, 0.0, 1.0)
