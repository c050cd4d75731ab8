"""Helpers to inspect and temporarily prepare a user's model without changing it."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Iterator, List, NamedTuple, Optional, Union

import torch
from torch import nn

from jacal._internal.activations import ActivationSpec, activation_spec

__all__ = ["resolve_device", "prepared", "parse_mlp", "ParsedMLP", "MLPLayer", "model_device", "model_dtype"]

def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def resolve_device(device: Union[str, torch.device, None], model: Optional[nn.Module] = None) -> torch.device:
    """``None`` → the model's device (CPU without a model); ``"auto"`` → CUDA when present."""
    if device is None:
        return model_device(model) if model is not None else torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Expected `device` to be 'auto', 'cpu', 'cuda[:i]' or a torch.device, got {device!r}.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {device!r} but CUDA is not available on this machine; use 'auto' or 'cpu'.")
    return dev


def _stochastic_layers(model: nn.Module) -> List[str]:
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Dropout, nn.AlphaDropout)
    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, kinds)})


@contextlib.contextmanager
def prepared(model: nn.Module, *, device: torch.device, force_eval: bool = False) -> Iterator[nn.Module]:
    """Yield a model ready for per-point derivative computations, and restore it afterwards.

    Parameters get ``requires_grad=False`` for the duration (gradients are taken w.r.t. inputs
    only) and their flags, and every module's train/eval mode, are restored on exit. A model on
    another device than ``device`` is deep-copied there, so the user's model never moves.

    Raises:
        ValueError: the model is in train mode and has BatchNorm/Dropout layers (their output
            for one point depends on the batch or on random draws), unless ``force_eval``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module, got {type(model).__name__}.")
    stochastic = _stochastic_layers(model)
    if any(m.training for m in model.modules()) and stochastic and not force_eval:
        raise ValueError(
            f"`model` is in train mode and has {', '.join(stochastic)} layers, whose per-point output "
            "depends on the batch or on random draws; call model.eval() first or pass force_eval=True."
        )
    target = model if model_device(model) == device else copy.deepcopy(model).to(device)
    modes = [(m, m.training) for m in target.modules()]
    flags = [(p, p.requires_grad) for p in target.parameters()]
    try:
        if force_eval:
            target.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield target
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class MLPLayer:
    """One step of a parsed fully-connected network: a Linear layer or an activation."""

    linear: Optional[nn.Linear] = None
    activation: Optional[ActivationSpec] = None
    module: Optional[nn.Module] = None


class ParsedMLP(NamedTuple):
    """A plain fully-connected network as :func:`parse_mlp` reads it."""

    flatten_first: bool  #: a leading ``nn.Flatten`` reshapes ``(N, ...)`` inputs to ``(N, D)``
    layers: List[MLPLayer]  #: Linear layers and activations in order (first and last are Linear)

    @property
    def first_weight(self) -> torch.Tensor:
        """``W₁ (h₁, D)``: the weight of the first Linear layer."""
        return self.layers[0].linear.weight


def _is_plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` (or subclass) whose ``forward`` is Sequential's own."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _flatten_sequential(module: nn.Module) -> Optional[List[nn.Module]]:
    out: List[nn.Module] = []
    for child in module.children():
        if _is_plain_sequential(child):
            inner = _flatten_sequential(child)
            if inner is None:
                return None
            out.extend(inner)
        else:
            out.append(child)
    return out


def parse_mlp(model: nn.Module) -> Optional[ParsedMLP]:
    """Describe ``model`` as a :class:`ParsedMLP` ``(flatten_first, layers)`` if it is a plain fully-connected net.

    Recognised: an ``nn.Sequential`` (nested Sequentials allowed, as is jacal's ``MLP``) made of
    an optional leading ``nn.Flatten``, ``nn.Linear`` layers, activations with a known derivative,
    and ``nn.Identity`` / ``nn.Dropout`` (the latter only in eval mode). Anything else → None,
    and callers fall back to autograd.
    """
    if not _is_plain_sequential(model):
        return None
    mods = _flatten_sequential(model)
    if not mods:
        return None
    flatten_first = False
    layers: List[MLPLayer] = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Flatten):
            if i != 0 or m.start_dim != 1 or m.end_dim != -1:
                return None
            flatten_first = True
        elif isinstance(m, nn.Linear):
            layers.append(MLPLayer(linear=m, module=m))
        elif isinstance(m, nn.Identity):
            continue
        elif isinstance(m, (nn.Dropout, nn.modules.dropout._DropoutNd)):
            if m.training:
                return None
        else:
            spec = activation_spec(m)
            if spec is None or spec.derivative is None:
                return None
            layers.append(MLPLayer(activation=spec, module=m))
    if not layers or layers[0].linear is None or layers[-1].linear is None:
        return None
    return ParsedMLP(flatten_first, layers)
