"""Datasets by name, as in-memory tensors.

Preprocessing (jacal's documented choice; the paper does not state its own):

* pixels are scaled to ``[0, 1]`` (``digits``: value / 16; the others: uint8 / 255) and kept
  in image layout ``(N, C, H, W)``; fully-connected models flatten with their first layer
  (:class:`jacal.models.MLP` starts with ``nn.Flatten``), or call :meth:`Splits.flattened`;
* no mean/std normalisation, so a Jacobian is taken w.r.t. ``[0, 1]`` pixels;
* ``digits`` (scikit-learn's 8×8 digits, 1,797 images, offline) is split 75/25, stratified,
  with a fixed seed (``random_state=0``); the others use their official train/test splits;
* ``n_train`` / ``n_test`` take a seeded random subset (the same for a given ``seed``).

``mnist``, ``fashion-mnist``, ``cifar10`` and ``cifar100`` are read by torchvision from
``root`` in its usual layout (``root/MNIST/raw/*-ubyte``, ``root/cifar-10-batches-py``...),
downloaded only when ``download=True``. MNIST also loads from ``root/mnist.npz`` (arrays
``x_train, y_train, x_test, y_test``) when the raw files are absent.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch

from jacal._internal.validation import JacalError, check_choice, first_line

__all__ = ["Splits", "load_dataset", "register_dataset", "DATASETS", "default_root"]


@dataclass
class Splits:
    """A dataset held in memory.

    Attributes:
        name: registry name.
        x_train: ``(N_train, *input_shape)`` float32 in [0, 1].
        y_train: ``(N_train,)`` int64 labels.
        x_test, y_test: the same for the test split.
        n_classes: K.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.input_shape))

    def flattened(self) -> "Splits":
        """The same data with inputs flattened to ``(N, D)``."""
        return replace(self, x_train=self.x_train.reshape(len(self.x_train), -1),
                       x_test=self.x_test.reshape(len(self.x_test), -1))

    def split(self, which: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``"train"`` or ``"test"``."""
        check_choice("split", which, ("train", "test"))
        return (self.x_train, self.y_train) if which == "train" else (self.x_test, self.y_test)


Loader = Callable[[Path, bool], Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]
DATASETS: Dict[str, Loader] = {}


def register_dataset(name: str, loader: Loader) -> None:
    """Register ``loader(root, download) -> (x_train, y_train, x_test, y_test, n_classes)``.

    ``x_*`` are float arrays ``(N, C, H, W)`` (or ``(N, D)``) already scaled; ``y_*`` integer labels.
    """
    DATASETS[name] = loader


def default_root() -> Path:
    """``$JACAL_DATA`` if set, else ``~/.cache/jacal/data``."""
    return Path(os.environ.get("JACAL_DATA", Path.home() / ".cache" / "jacal" / "data"))


def _digits(root: Path, download: bool):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te, 10


def _missing(name: str, root: Path, layout: str) -> JacalError:
    return JacalError(f"dataset '{name}' not found under {root} (expected {layout}); "
                      f"pass `download=True` to fetch it, or point `root` at it.")


def _torchvision(cls_name: str, name: str, layout: str, n_classes: int, images_hwc: bool):
    def load(root: Path, download: bool):
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        try:
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
        except (RuntimeError, OSError, ValueError, EOFError) as err:  # a download failure or a truncated file
            if isinstance(err, RuntimeError) and ("not found" in str(err).lower() or "corrupted" in str(err).lower()):
                raise _missing(name, root, layout) from err
            raise JacalError(f"could not read dataset '{name}' under {root}: {first_line(err, None)}") from err

        def arrays(ds):
            x = np.asarray(ds.data)
            x = x.transpose(0, 3, 1, 2) if images_hwc else x[:, None, :, :]
            return x.astype(np.float32) / 255.0, np.asarray(ds.targets, dtype=np.int64)

        return (*arrays(train), *arrays(test), n_classes)

    return load


def _mnist(root: Path, download: bool):
    raw = root / "MNIST" / "raw"
    npz = root / "mnist.npz"
    if not raw.exists() and npz.exists() and not download:
        try:
            with np.load(npz) as f:
                arr = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, KeyError, ValueError) as err:
            raise JacalError(f"could not read {npz}: {first_line(err, None)}") from err
        scale = lambda a: (a.astype(np.float32) / 255.0)[:, None, :, :]  # noqa: E731
        return (scale(arr["x_train"]), arr["y_train"].astype(np.int64), scale(arr["x_test"]),
                arr["y_test"].astype(np.int64), 10)
    return _torchvision("MNIST", "mnist", "MNIST/raw/*-ubyte or mnist.npz", 10, False)(root, download)


register_dataset("digits", _digits)
register_dataset("mnist", _mnist)
register_dataset("fashion-mnist", _torchvision("FashionMNIST", "fashion-mnist", "FashionMNIST/raw/*-ubyte", 10, False))
register_dataset("cifar10", _torchvision("CIFAR10", "cifar10", "cifar-10-batches-py/", 10, True))
register_dataset("cifar100", _torchvision("CIFAR100", "cifar100", "cifar-100-python/", 100, True))


def _subset(x: np.ndarray, y: np.ndarray, n: Optional[int], rng: np.random.Generator, what: str, clamp: bool):
    if n is None or (clamp and isinstance(n, (int, np.integer)) and n >= len(x)):
        return x, y
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 or n > len(x):
        raise ValueError(f"Expected `{what}` to be a positive int no larger than the split ({len(x)}), got {n!r}.")
    idx = np.sort(rng.choice(len(x), size=int(n), replace=False))
    return x[idx], y[idx]


def load_dataset(name: str = "digits", *, root: Union[str, Path, None] = None, download: bool = False,
                 n_train: Optional[int] = None, n_test: Optional[int] = None, seed: int = 0,
                 clamp: bool = False) -> Splits:
    """Load a registered dataset into memory.

    Args:
        name: ``"digits"`` (offline default), ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``,
            ``"cifar100"``, or a name added with :func:`register_dataset`.
        root: data folder (default :func:`default_root`).
        download: allow torchvision to download a missing dataset.
        n_train, n_test: optional seeded subset sizes.
        seed: seeds the subsets.
        clamp: a subset size larger than its split means the whole split (instead of an error).

    Raises:
        JacalError: the dataset is missing (and ``download`` is False) or unreadable.

    Example:
        >>> d = load_dataset("digits")
        >>> d.x_train.shape, d.n_classes
        (torch.Size([1347, 1, 8, 8]), 10)
    """
    check_choice("name", name, DATASETS)
    root_path = Path(root).expanduser() if root is not None else default_root()
    if name != "digits" and not download and not root_path.exists():
        raise JacalError(f"data root {root_path} does not exist; pass an existing `root` or `download=True`.")
    x_tr, y_tr, x_te, y_te, k = DATASETS[name](root_path, download)
    rng = np.random.default_rng(seed)
    x_tr, y_tr = _subset(x_tr, y_tr, n_train, rng, "n_train", clamp)
    x_te, y_te = _subset(x_te, y_te, n_test, rng, "n_test", clamp)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Splits(name, t(x_tr).float(), t(y_tr).long(), t(x_te).float(), t(y_te).long(), int(k))
