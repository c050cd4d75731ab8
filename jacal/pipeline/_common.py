"""What the pipeline's steps share: the types of their path, progress and warning arguments, and
the small readers every step uses (label names, one file or several, items loaded whole, the
number of classes of a model).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

import torch

from jacal import io as jio
from jacal._internal.validation import JacalError

PathLike = Union[str, Path]
PathsLike = Union[PathLike, Sequence[PathLike]]
Progress = Optional[Callable[[int, int], Any]]
Warn = Optional[Callable[[str], Any]]


def _warner(on_warning: Warn) -> Callable[[str], Any]:
    return on_warning if on_warning is not None else (lambda text: warnings.warn(text, stacklevel=3))


def _names(label_names: Union[str, Sequence[str], None]) -> Optional[List[str]]:
    return jio.parse_label_names(label_names) if isinstance(label_names, str) else label_names


def _paths(paths: Optional[PathsLike]) -> List[Path]:
    """One file or several, as a list (``None``: none)."""
    if paths is None:
        return []
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]


def _n_classes(model: Any, input_shape: Sequence[int]) -> Optional[int]:
    """K, from one forward pass on a blank item (None when the model refuses it; acquire then reports why)."""
    try:
        with torch.no_grad():
            z = model(torch.zeros((2, *input_shape)))  # 2: exported programs may specialize a batch of 1
        return int(z.shape[1]) if isinstance(z, torch.Tensor) and z.ndim == 2 else None
    except Exception:  # noqa: BLE001 - the real pass reports the model's error in one line
        return None


def _load_items(path: PathLike, input_shape: Optional[Sequence[int]], image_size, channels, what: str):
    """Items ``(N, ...)`` decoded in memory and their ids (for steps that need them all at once)."""
    if not Path(path).exists():
        raise JacalError(f"`{what}` not found: {path}")
    pool = jio.open_pool(path, image_size=image_size, channels=channels, input_shape=input_shape)
    return pool.materialize(), pool.ids
