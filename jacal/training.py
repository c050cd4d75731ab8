"""Train one classifier with a seeded, documented recipe."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from jacal._model_utils import resolve_device
from jacal._validation import check_choice, check_positive_int
from jacal.data import Splits

__all__ = ["train", "evaluate", "TrainResult", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")


@dataclass
class TrainResult:
    """Metrics of a finished training run (accuracies in [0, 1], mean cross-entropy losses; the test
    metrics are NaN without a test split)."""

    train_accuracy: float
    test_accuracy: float
    train_loss: float
    test_loss: float
    steps: int
    epochs: float
    wall_time_s: float

    @property
    def gap(self) -> float:
        """Generalization gap: train accuracy − test accuracy."""
        return self.train_accuracy - self.test_accuracy

    def to_dict(self) -> dict:
        return {**asdict(self), "gap": self.gap}


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
          progress: Optional[Callable[[int, int], Any]] = None) -> TrainResult:
    """Train ``model`` in place on ``data`` with cross-entropy and report its metrics.

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
    dev = resolve_device(device if device is not None else "cpu", None)
    model.to(dev)
    x, y = data.x_train.to(dev), data.y_train.to(dev)
    opt = _make_optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator().manual_seed(int(seed))
    start = time.perf_counter()
    model.train()
    step, order = 0, None
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
    opt.zero_grad(set_to_none=True)
    model.eval()
    tr_acc, tr_loss = evaluate(model, data.x_train, data.y_train, device=dev)
    te_acc, te_loss = (evaluate(model, data.x_test, data.y_test, device=dev) if len(data.x_test)
                       else (math.nan, math.nan))  # no held-out split: no test metrics, not a fake 0
    return TrainResult(tr_acc, te_acc, tr_loss, te_loss, step, step / per_epoch, time.perf_counter() - start)
