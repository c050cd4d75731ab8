"""Pools as teams have them: open sets, long tails, repeated items, frozen embeddings, large images.

A scenario is a pool builder: a function of a dataset (:class:`jacal.data.Splits`) and its own
keyword parameters that returns a :class:`ScenarioPool`: the items an annotator would be shown,
the label each would get (``-1``: the annotator answers "none of these", the item is outside the
label set), what kind of item each is, and which items are copies of one another. ``jacal loop``
and ``benchmarks/al_experiments.py`` share these builders (``LoopConfig(scenario=...,
scenario_params=...)``); nothing in the loop branches on a scenario's name.

Builders (all deterministic for a given ``seed``; jacal's choices, documented here):

* ``clean``: the dataset as it is.
* ``open-set``: the task knows the first ``known`` classes (default: 60% of them); the pool holds
  every training item of those, plus out-of-set items making up ``share`` of the pool (default
  0.4): items of the other classes, and a ``junk`` fraction of them (default 0.25) of junk in equal
  parts: uniform noise, blank scans (a constant grey level plus faint noise) and corrupted scans (an
  in-set image with its pixels shuffled). The test set holds the known classes only.
* ``even-odd``: a near open set with unknown classes only: the task is the even classes (relabeled
  ``c // 2``), the odd classes are the out-of-set items, making up ``share`` of the pool (default 0.4);
  no junk. The near open set over the first classes is ``open-set`` with ``known=5, junk=0``.
* ``junk``: every class is in the task; ``share`` of the pool (default 0.3) is junk in six equal
  parts: uniform noise, blank scans, shuffled scans (as ``open-set``), and three that keep a digit's
  strokes: inverted scans (``1 − x``), scans blurred past recognition (Gaussian, σ = 3 pixels) and two
  scans of different classes overlaid (their pixelwise maximum). Images ``(N, C, H, W)`` only.
* ``long-tail``: class ``c`` keeps ``ratio^(−c/(K−1))`` of its training items (class 0 all of them,
  the last class ``1/ratio``; default ratio 100); the test set is cut to the same count per class,
  so plain accuracy on it is balanced accuracy (reported as such).
* ``repeated``: every training item ``copies`` times (default 3), each copy with its own Gaussian
  noise of standard deviation ``noise`` (default 0.1; Repeated MNIST, Kirsch et al. 2019); copies
  share a ``group``.
* ``embedding``: items replaced by a frozen ``dim``-dimensional embedding (default 64): a PCA of the
  training items (scikit-learn, fitted on the unlabeled training set only; not whitened, which would
  blow the weakest components up to the strongest's scale, but divided by one overall scale so the
  features have unit mean variance), so a model on it is a head on frozen features (a linear head:
  ``depth=0``).
* ``image3``: each image resized to ``size × size`` (default 32) and repeated over 3 channels
  (torchvision's resize), so a CNN's input is above the exact Jacobian-embedding limit and the
  sketched path is the one measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
import torch

from jacal.data import Splits

__all__ = ["ScenarioPool", "SCENARIOS", "KINDS", "OUT_OF_SET", "build_scenario", "register_scenario",
           "parse_params"]

#: The label of an item outside the label set (the annotator answers "none of these").
OUT_OF_SET = -1

#: Item kinds, by code (``ScenarioPool.kind``); ``none-of-these``: an item a team's own export answers
#: "none of these" (:mod:`jacal.loop.source`).
KINDS = ("in-set", "unseen-class", "noise", "blank", "corrupted", "inverted", "blurred", "overlaid", "none-of-these")


@dataclass
class ScenarioPool:
    """A dataset as a scenario presents it.

    Attributes:
        data: ``x_train (N, ...)`` the items, ``y_train (N,)`` their labels (``OUT_OF_SET`` for items
            outside the label set); the test split holds in-set items only; ``n_classes`` in-set classes.
        kind: ``(N,)`` int codes into :data:`KINDS`.
        group: ``(N,)`` int: items with the same group are copies of one item.
        balanced: the test split has the same count per class (its accuracy is balanced accuracy).
    """

    data: Splits
    kind: np.ndarray
    group: np.ndarray
    balanced: bool = False

    @property
    def labelable(self) -> np.ndarray:
        """``(N,)`` bool: the annotator can give this item a class."""
        return self.data.y_train.numpy() != OUT_OF_SET


SCENARIOS: Dict[str, Callable[..., ScenarioPool]] = {}


def register_scenario(name: str):
    """Decorator: make a pool builder ``fn(data, *, seed, **params) -> ScenarioPool`` available by name."""
    def deco(fn):
        if name in SCENARIOS:
            raise ValueError(f"A scenario named {name!r} is already registered.")
        SCENARIOS[name] = fn
        return fn
    return deco


def parse_params(text: str) -> Dict[str, float]:
    """``"share=0.4,junk=0.25"`` → ``{"share": 0.4, "junk": 0.25}`` (a one-line error otherwise)."""
    out: Dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"Expected scenario parameters as name=number pairs separated by commas, got {part!r}.") \
                from None
    return out


def build_scenario(name: str, data: Splits, params: Optional[Mapping[str, Any]] = None, *, seed: int = 0) -> ScenarioPool:
    """The pool of scenario ``name`` over ``data`` (``params``: the builder's keyword parameters)."""
    if name not in SCENARIOS:
        raise ValueError(f"Expected `scenario` to be one of {sorted(SCENARIOS)}, got {name!r}.")
    fn = SCENARIOS[name]
    params = dict(params or {})
    import inspect

    allowed = [p for p in inspect.signature(fn).parameters if p not in ("data", "seed")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"scenario {name!r} takes parameters {allowed}, got {unknown}.")
    return fn(data, seed=seed, **params)


def _kinds(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


@register_scenario("clean")
def clean(data: Splits, *, seed: int = 0) -> ScenarioPool:
    n = len(data.x_train)
    return ScenarioPool(data, _kinds(n), np.arange(n))


def _fraction(name: str, v: float, *, low_open: bool = False) -> float:
    if not (0 < v < 1) if low_open else not (0 <= v < 1):
        raise ValueError(f"Expected `{name}` in {'(0, 1)' if low_open else '[0, 1)'}, got {v!r}.")
    return float(v)


@register_scenario("open-set")
def open_set(data: Splits, *, seed: int = 0, share: float = 0.4, known: Optional[float] = None,
             junk: float = 0.25) -> ScenarioPool:
    share = _fraction("share", share, low_open=True)
    junk = float(junk)
    if not 0 <= junk <= 1:
        raise ValueError(f"Expected `junk` in [0, 1], got {junk!r}.")
    k = data.n_classes
    known = int(round(0.6 * k)) if known is None else int(known)
    if not 1 <= known < k:
        raise ValueError(f"Expected `known` (classes the task has) in [1, {k - 1}], got {known}.")
    rng = np.random.default_rng([seed, 11])
    y = data.y_train.numpy()
    inset = np.flatnonzero(y < known)
    unseen = rng.permutation(np.flatnonzero(y >= known))
    n_out = int(round(share / (1 - share) * len(inset)))
    n_junk = int(round(junk * n_out))
    n_unseen = n_out - n_junk
    if n_unseen > len(unseen):  # not enough unseen-class items: keep fewer in-set ones, same share
        n_unseen = len(unseen)
        n_out = int(math.floor(n_unseen / max(1e-12, 1 - junk))) if junk < 1 else n_out
        n_junk = n_out - n_unseen
        inset = rng.permutation(inset)[:int(round(n_out * (1 - share) / share))]
    x = data.x_train
    shape = x.shape[1:]
    per = [n_junk // 3 + (1 if i < n_junk % 3 else 0) for i in range(3)]
    g = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    noise = torch.rand((per[0], *shape), generator=g)
    blank = torch.rand((per[1], *([1] * len(shape))), generator=g) * 0.2 + 0.02 * torch.rand((per[1], *shape), generator=g)
    src = x[torch.from_numpy(rng.choice(inset, size=per[2]))].reshape(per[2], int(np.prod(shape)))
    perm = torch.argsort(torch.rand(src.shape, generator=g), dim=1)
    corrupted = torch.gather(src, 1, perm).reshape(per[2], *shape)
    xs = torch.cat([x[torch.from_numpy(np.sort(inset))], x[torch.from_numpy(unseen[:n_unseen])], noise,
                    blank.clamp(0, 1), corrupted]).float()
    ys = torch.cat([data.y_train[torch.from_numpy(np.sort(inset))],
                    torch.full((n_unseen + n_junk,), OUT_OF_SET, dtype=data.y_train.dtype)])
    kind = np.concatenate([np.zeros(len(inset)), np.ones(n_unseen)] + [np.full(c, 2 + i) for i, c in enumerate(per)])
    order = rng.permutation(len(xs))  # mixed, as a real pool is
    order_t = torch.from_numpy(order)
    test_keep = torch.from_numpy(np.flatnonzero(data.y_test.numpy() < known))
    out = Splits(f"{data.name}-open-set", xs[order_t], ys[order_t], data.x_test[test_keep], data.y_test[test_keep],
                 n_classes=known)
    return ScenarioPool(out, kind[order].astype(np.int64), np.arange(len(xs)))


def _mixed(data: Splits, name: str, x: torch.Tensor, y: torch.Tensor, kind: np.ndarray, test_keep: np.ndarray,
           n_classes: int, rng: np.random.Generator, test_labels=None) -> ScenarioPool:
    """The pool in a random order (as a real pool is), the test set cut to ``test_keep``."""
    order = torch.from_numpy(rng.permutation(len(x)))
    keep = torch.from_numpy(test_keep)
    y_test = data.y_test[keep] if test_labels is None else test_labels
    out = Splits(f"{data.name}-{name}", x[order].float(), y[order], data.x_test[keep], y_test, n_classes=n_classes)
    return ScenarioPool(out, kind[order.numpy()].astype(np.int64), np.arange(len(x)))


@register_scenario("even-odd")
def even_odd(data: Splits, *, seed: int = 0, share: float = 0.4) -> ScenarioPool:
    share = _fraction("share", share, low_open=True)
    if data.n_classes < 2:
        raise ValueError(f"scenario 'even-odd' needs at least 2 classes, got {data.n_classes}.")
    rng = np.random.default_rng([seed, 19])
    y = data.y_train.numpy()
    inset, odd = np.flatnonzero(y % 2 == 0), rng.permutation(np.flatnonzero(y % 2 == 1))
    n_out = int(round(share / (1 - share) * len(inset)))
    if n_out > len(odd):  # not enough odd items: keep fewer in-set ones, same share
        n_out = len(odd)
        inset = np.sort(rng.permutation(inset)[:int(round(n_out * (1 - share) / share))])
    idx = torch.from_numpy(np.concatenate([inset, odd[:n_out]]))
    ys = torch.cat([data.y_train[torch.from_numpy(inset)] // 2,
                    torch.full((n_out,), OUT_OF_SET, dtype=data.y_train.dtype)])
    kind = np.concatenate([np.zeros(len(inset)), np.ones(n_out)])
    test_keep = np.flatnonzero(data.y_test.numpy() % 2 == 0)
    return _mixed(data, "even-odd", data.x_train[idx], ys, kind, test_keep, (data.n_classes + 1) // 2, rng,
                  test_labels=data.y_test[torch.from_numpy(test_keep)] // 2)


@register_scenario("junk")
def junk(data: Splits, *, seed: int = 0, share: float = 0.3) -> ScenarioPool:
    from torchvision.transforms.functional import gaussian_blur

    share = _fraction("share", share, low_open=True)
    x = data.x_train
    if x.ndim != 4:
        raise ValueError(f"scenario 'junk' needs images (N, C, H, W), got shape {tuple(x.shape)}.")
    rng = np.random.default_rng([seed, 23])
    y = data.y_train.numpy()
    n_junk = int(round(share / (1 - share) * len(x)))
    per = [n_junk // 6 + (1 if i < n_junk % 6 else 0) for i in range(6)]
    shape = x.shape[1:]
    g = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))

    def some(n: int) -> torch.Tensor:
        return x[torch.from_numpy(rng.choice(len(x), size=n))]

    noise = torch.rand((per[0], *shape), generator=g)
    blank = (torch.rand((per[1], 1, 1, 1), generator=g) * 0.2 + 0.02 * torch.rand((per[1], *shape), generator=g))
    src = some(per[2]).reshape(per[2], -1)
    shuffled = torch.gather(src, 1, torch.argsort(torch.rand(src.shape, generator=g), dim=1)).reshape(per[2], *shape)
    inverted = 1.0 - some(per[3])
    blurred = gaussian_blur(some(per[4]), kernel_size=[13, 13], sigma=[3.0, 3.0])
    a = rng.choice(len(x), size=per[5])
    b = np.array([rng.choice(np.flatnonzero(y != y[i])) for i in a], dtype=np.int64) if per[5] else a
    overlaid = torch.maximum(x[torch.from_numpy(a)], x[torch.from_numpy(b)])
    xs = torch.cat([x, noise, blank.clamp(0, 1), shuffled, inverted, blurred, overlaid])
    ys = torch.cat([data.y_train, torch.full((n_junk,), OUT_OF_SET, dtype=data.y_train.dtype)])
    kind = np.concatenate([np.zeros(len(x))] + [np.full(c, (2, 3, 4, 5, 6, 7)[i]) for i, c in enumerate(per)])
    return _mixed(data, "junk", xs, ys, kind, np.arange(len(data.x_test)), data.n_classes, rng)


@register_scenario("long-tail")
def long_tail(data: Splits, *, seed: int = 0, ratio: float = 100.0) -> ScenarioPool:
    ratio = float(ratio)
    if not ratio >= 1:
        raise ValueError(f"Expected `ratio` (largest / smallest class) >= 1, got {ratio!r}.")
    k = data.n_classes
    rng = np.random.default_rng([seed, 13])
    y = data.y_train.numpy()
    keep = []
    for c in range(k):
        idx = rng.permutation(np.flatnonzero(y == c))
        keep.append(idx[:max(1, int(round(len(idx) * ratio ** (-c / max(1, k - 1)))))])
    keep = np.sort(np.concatenate(keep))
    yt = data.y_test.numpy()
    m = min(int((yt == c).sum()) for c in range(k))
    test = np.sort(np.concatenate([rng.permutation(np.flatnonzero(yt == c))[:m] for c in range(k)]))
    kt, tt = torch.from_numpy(keep), torch.from_numpy(test)
    out = Splits(f"{data.name}-long-tail", data.x_train[kt], data.y_train[kt], data.x_test[tt], data.y_test[tt], k)
    return ScenarioPool(out, _kinds(len(keep)), np.arange(len(keep)), balanced=True)


@register_scenario("repeated")
def repeated(data: Splits, *, seed: int = 0, copies: float = 3, noise: float = 0.1) -> ScenarioPool:
    copies = int(copies)
    if copies < 1:
        raise ValueError(f"Expected `copies` >= 1, got {copies}.")
    g = torch.Generator().manual_seed(int(np.random.default_rng([seed, 17]).integers(2 ** 31)))
    x = data.x_train.repeat(copies, *([1] * (data.x_train.ndim - 1)))
    x = x + float(noise) * torch.randn(x.shape, generator=g)
    n = len(data.x_train)
    out = replace(data, name=f"{data.name}-repeated", x_train=x.float(), y_train=data.y_train.repeat(copies))
    return ScenarioPool(out, _kinds(len(x)), np.tile(np.arange(n), copies))


@register_scenario("embedding")
def embedding(data: Splits, *, seed: int = 0, dim: float = 64) -> ScenarioPool:
    from sklearn.decomposition import PCA

    dim = int(dim)
    if not 1 <= dim <= data.input_dim:
        raise ValueError(f"Expected `dim` in [1, {data.input_dim}], got {dim}.")
    pca = PCA(n_components=dim, random_state=seed).fit(data.x_train.reshape(len(data.x_train), -1).numpy())
    scale = float(np.sqrt(pca.explained_variance_.mean()))

    def emb(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy((pca.transform(x.reshape(len(x), -1).numpy()) / scale).astype(np.float32))

    out = replace(data, name=f"{data.name}-embedding", x_train=emb(data.x_train), x_test=emb(data.x_test))
    n = len(out.x_train)
    return ScenarioPool(out, _kinds(n), np.arange(n))


@register_scenario("image3")
def image3(data: Splits, *, seed: int = 0, size: float = 32) -> ScenarioPool:
    from torchvision.transforms.functional import resize

    size = int(size)
    if size < 4:
        raise ValueError(f"Expected `size` >= 4, got {size}.")

    def to3(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), -1, *x.shape[-2:]) if x.ndim >= 3 else x
        if x.ndim != 4:
            raise ValueError(f"scenario 'image3' needs images (N, C, H, W), got shape {tuple(x.shape)}.")
        x = resize(x, [size, size], antialias=True).clamp(0, 1)
        return x[:, :1].repeat(1, 3, 1, 1).contiguous()

    out = replace(data, name=f"{data.name}-image3", x_train=to3(data.x_train), x_test=to3(data.x_test))
    n = len(out.x_train)
    return ScenarioPool(out, _kinds(n), np.arange(n))
