"""jacal checkpoints: a model's kind, config and weights, plus metadata, in one torch file."""
from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from jacal._internal.io import atomic_path
from jacal._internal.validation import JacalError, first_line
from jacal.models.builders import MODEL_KINDS, build_model

__all__ = ["save_checkpoint", "load_checkpoint", "load_model_file", "Checkpoint"]

FORMAT = "jacal-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode, CPU) and its metadata."""

    model: nn.Module
    kind: str
    config: Dict[str, Any]
    metadata: Dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: Union[str, Path], model: nn.Module, *, metadata: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``model`` (built by :mod:`jacal.models`) and ``metadata`` to ``path`` atomically."""
    kind = next((k for k, cls in MODEL_KINDS.items() if type(model) is cls), None)
    if kind is None or not hasattr(model, "config"):
        raise TypeError(f"Expected a model built by jacal.models ({', '.join(MODEL_KINDS)}), got {type(model).__name__}.")
    payload = {
        "format": FORMAT, "version": VERSION, "kind": kind, "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    return write_tagged(path, payload)


def write_tagged(path: Union[str, Path], payload: dict) -> Path:
    """``torch.save`` a tagged dict (its ``"format"`` names what it is; see :func:`read_tagged`) to
    ``path`` atomically: a crash leaves the old file or none, never half a file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_tagged(path: Path, fmt: str, what: str, kind: str) -> dict:
    """The dict saved by ``torch.save`` at ``path`` (read with ``weights_only=True``: no pickled code)
    whose ``"format"`` is ``fmt``; one-line :class:`JacalError` naming ``what`` (the file) or ``kind``
    (what it should have been) otherwise."""
    if not path.is_file():
        raise JacalError(f"{what} not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise JacalError(f"not a readable {what}: {path} ({first_line(err)})") from err
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise JacalError(f"not a {kind}: {path}")
    return payload


def load_checkpoint(path: Union[str, Path]) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code).

    Raises:
        JacalError: the file is missing, unreadable or not a jacal checkpoint.
    """
    path = Path(path)
    payload = read_tagged(path, FORMAT, "checkpoint", "jacal checkpoint")
    try:
        model = build_model(payload["kind"], payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise JacalError(f"corrupt jacal checkpoint: {path} ({first_line(err)})") from err
    return Checkpoint(model.eval(), payload["kind"], payload["config"], payload.get("metadata", {}))


def load_model_file(path: Union[str, Path]) -> Checkpoint:
    """Load a classifier from a jacal checkpoint, a TorchScript file or a ``torch.export`` program.

    A ``torch.export`` program must be saved with a ``.pt2`` suffix and exported with a dynamic
    batch dimension (``dynamic_shapes={"input": {0: torch.export.Dim("batch")}}``), since jacal
    feeds it chunks of varying size.

    Returns:
        :class:`Checkpoint` with ``kind`` ``"mlp"``/``"cnn"`` (jacal), ``"torchscript"`` or
        ``"export"``; ``metadata["input_shape"]`` when known.

    Raises:
        JacalError: missing file or none of the three formats.
    """
    path = Path(path)
    if not path.is_file():
        raise JacalError(f"model file not found: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice, torch.load's archive hints
        try:
            return load_checkpoint(path)
        except JacalError:
            pass
        if path.suffix == ".pt2":  # torch.export's archive format requires this suffix
            try:
                program = torch.export.load(str(path))
                module = program.module()
                module._jacal_program = program  # to send the model to workers in its own format
                return Checkpoint(module, "export", {}, {})
            except Exception as err:  # torch.export raises many types for corrupt archives
                raise JacalError(f"{path} is not a readable torch.export program ({type(err).__name__})") from err
        try:
            model = torch.jit.load(str(path), map_location="cpu")
            return Checkpoint(model.eval(), "torchscript", {}, {})
        except Exception:  # torch.jit raises RuntimeError/ValueError/... for foreign files
            pass
    raise JacalError(f"{path} is not a jacal checkpoint, TorchScript file or torch.export program (.pt2) "
                     "(corrupt or foreign file)")
