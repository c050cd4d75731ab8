"""Train one classifier with a seeded, documented recipe."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from jacal._internal.validation import check_choice, check_positive_int
from jacal.data import Splits
from jacal.models._utils import resolve_device

__all__ = ["train", "evaluate", "TrainResult", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")


@dataclass
class TrainResult:
    """Metrics of a finished training run (accuracies in [0, 1], mean cross-entropy losses; the test
    metrics are NaN without a test split). ``steps`` and ``epochs`` count what ran (fewer than asked
    when early stopping ended the run); with a validation split, ``val_accuracy`` is the best
    validation accuracy and ``best_epoch`` the epoch whose weights were kept (both NaN without one)."""

    train_accuracy: float
    test_accuracy: float
    train_loss: float
    test_loss: float
    steps: int
    epochs: float
    wall_time_s: float
    val_accuracy: float = math.nan
    best_epoch: float = math.nan

    @property
    def gap(self) -> float:
        """Generalization gap: train accuracy − test accuracy."""
        return self.train_accuracy - self.test_accuracy

    def to_dict(self) -> dict:
        """The metrics as a dict, ``gap`` included; the validation entries only when a validation split was used."""
        d = {**asdict(self), "gap": self.gap}
        if math.isnan(self.val_accuracy):
            del d["val_accuracy"], d["best_epoch"]
        return d


def _make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.RMSprop(params, lr=lr)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 2048,
             device: Union[str, torch.device, None] = None) -> Tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``x (N, ...)``, ``y (N,)``."""
    dev = resolve_device(device, model)
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
        z = model(xb)
        loss += float(F.cross_entropy(z, yb, reduction="sum"))
        correct += int((z.argmax(1) == yb).sum())
    return correct / max(len(x), 1), loss / max(len(x), 1)


def train(model: nn.Module, data: Splits, *, optimizer: str = "adam", lr: float = 1e-3,
          batch_size: Optional[int] = 128, epochs: Optional[float] = 20, steps: Optional[int] = None,
          seed: int = 0, device: Union[str, torch.device, None] = None,
          progress: Optional[Callable[[int, int], Any]] = None,
          val: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, patience: Optional[int] = None) -> TrainResult:
    """Train ``model`` in place on ``data`` with cross-entropy and report its metrics.

    Each epoch is one pass over a fresh permutation of the training set (drawn from ``seed``) in
    mini-batches of ``batch_size`` (the last one smaller). With ``val``, the model's accuracy on the
    validation split is measured in eval mode after every epoch (and after the last step); the
    weights with the best validation accuracy (the earliest of equals) are restored at the end, and
    with ``patience`` the run stops after ``patience`` epochs in a row without a better validation
    accuracy (early stopping; ``epochs``/``steps`` is then the most that runs).

    Args:
        model: a classifier (moved to ``device``).
        data: :class:`jacal.data.Splits`.
        optimizer: ``"sgd"``, ``"momentum"`` (SGD, 0.9), ``"adam"`` or ``"rmsprop"``.
        lr: learning rate.
        batch_size: mini-batch size; ``None`` or ``0`` means full batch.
        epochs: passes over the training set (ignored when ``steps`` is given).
        steps: optimizer steps.
        seed: seeds the data order.
        device: ``None`` (the model's), ``"auto"``, ``"cpu"``, ``"cuda"``.
        progress: optional ``callback(step, total_steps)``.
        val: optional validation split ``(x_val (M, ...), y_val (M,))`` (never trained on).
        patience: early stopping, in epochs without improvement (needs ``val``); ``None`` runs every
            epoch and still keeps the best weights when ``val`` is given.

    Returns:
        :class:`TrainResult` (evaluated in eval mode after training; test metrics are NaN when
        ``data`` has an empty test split, e.g. a model trained on everything annotated so far).
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"Expected `lr` to be a positive finite number, got {lr!r}.")
    n = len(data.x_train)
    bs = n if not batch_size else min(check_positive_int("batch_size", batch_size), n)
    per_epoch = math.ceil(n / bs)
    if steps is not None:
        total = check_positive_int("steps", steps)
    else:
        if epochs is None or not epochs > 0:
            raise ValueError(f"Expected `epochs` > 0 or `steps`, got epochs={epochs!r}.")
        total = max(1, int(round(epochs * per_epoch)))
    if patience is not None:
        check_positive_int("patience", patience)
        if val is None:
            raise ValueError("`patience` needs a validation split: pass `val=(x_val, y_val)`.")
    if val is not None:
        xv, yv = _validation_split(val)
    dev = resolve_device(device if device is not None else "cpu", None)
    model.to(dev)
    x, y = data.x_train.to(dev), data.y_train.to(dev)
    opt = _make_optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator().manual_seed(int(seed))
    start = time.perf_counter()
    model.train()
    step, order = 0, None
    best_acc, best_state, best_step, since = -1.0, None, 0, 0
    while step < total:
        if step % per_epoch == 0:
            order = torch.randperm(n, generator=gen).to(dev)
        j = step % per_epoch
        idx = order[j * bs:(j + 1) * bs]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if progress is not None:
            progress(step, total)
        if val is not None and (step % per_epoch == 0 or step == total):  # an epoch ended: validate
            model.eval()
            acc, _ = evaluate(model, xv, yv, device=dev)
            model.train()
            if acc > best_acc:
                best_acc, best_state, best_step, since = acc, copy.deepcopy(model.state_dict()), step, 0
            else:
                since += 1
                if patience is not None and since >= patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    opt.zero_grad(set_to_none=True)
    model.eval()
    tr_acc, tr_loss = evaluate(model, data.x_train, data.y_train, device=dev)
    te_acc, te_loss = (evaluate(model, data.x_test, data.y_test, device=dev) if len(data.x_test)
                       else (math.nan, math.nan))  # no held-out split: no test metrics, not a fake 0
    return TrainResult(tr_acc, te_acc, tr_loss, te_loss, step, step / per_epoch, time.perf_counter() - start,
                       val_accuracy=best_acc if val is not None else math.nan,
                       best_epoch=best_step / per_epoch if val is not None else math.nan)


def _validation_split(val: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """``val`` as ``(x_val, y_val)`` tensors of one non-zero length, else ``TypeError``/``ValueError``."""
    if not isinstance(val, (tuple, list)) or len(val) != 2 or not all(isinstance(t, torch.Tensor) for t in val):
        raise TypeError(f"Expected `val` to be a pair of tensors (x_val, y_val), got {type(val).__name__}.")
    xv, yv = val
    if len(xv) == 0 or len(xv) != len(yv):
        raise ValueError(f"Expected `val` to hold as many labels as inputs (at least one), got {len(xv)} inputs "
                         f"and {len(yv)} labels.")
    return xv, yv
