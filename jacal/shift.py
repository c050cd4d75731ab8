"""Distribution shift that runs offline: seeded image corruptions, a near shift and far-OOD sets.

Corruptions follow the spirit of MNIST-C (Mu & Gilmer 2019, arXiv 1906.02337), generated on the
fly from clean images ``x (N, C, H, W)`` in ``[0, 1]`` (jacal's datasets), at severities 1–3:

==================  =====================================================  ==========================
corruption          what it does (lengths in units of a 28-pixel image)     severity 1 / 2 / 3
==================  =====================================================  ==========================
``gaussian_noise``  ``clip(x + σ·ε)``, ε ~ N(0, 1) per pixel (v2)          σ = 0.2 / 0.35 / 0.5
``impulse_noise``   salt and pepper: a fraction of pixels set to 0 or 1     5% / 12% / 25%
``gaussian_blur``   Gaussian kernel (v2)                                    σ = 1 / 1.5 / 2 px
``rotate``          rotation by ±θ, sign drawn per image (v2 affine)       θ = 20° / 35° / 50°
``shear``           horizontal shear by ±φ, sign per image (v2 affine)      φ = 15° / 30° / 45°
``scale``           zoom out about the centre (v2 affine)                   0.8 / 0.65 / 0.5
``translate``       shift by ±t pixels along both axes, signs per image     t = 3 / 5 / 7 px
``brightness``      ``clip(x + b)``                                          b = 0.2 / 0.4 / 0.6
``contrast``        blend with the image mean (v2 ``adjust_contrast``)      factor 0.5 / 0.3 / 0.15
``invert``          ``(1 − a)·x + a·(1 − x)`` (v2 ``invert``)              a = 0.6 / 0.8 / 1
``stripes``         1 / 2 / 3 white stripes, 2 px wide, vertical or          1 / 2 / 3 stripes
                    horizontal (per image) at random positions
``dotted_lines``    1 / 2 / 3 white dotted segments between random points   1 / 2 / 3 lines
==================  =====================================================  ==========================

Every draw comes from a private ``torch.Generator`` seeded by ``(seed, corruption, severity)``, so
a corruption of the same images is the same whatever else was generated before it, and global RNG
state is neither read nor changed. Outputs keep the input's shape and lie in ``[0, 1]``.

Out of distribution, offline (:func:`far_ood`): ``uniform_noise`` (every pixel U[0, 1]) and
``sample_images`` (random square crops of scikit-learn's two sample photographs, grayscale for one
channel, resized to the input size). Near shift (:func:`near_shift_digits`): scikit-learn's 8×8
digits (same ten classes, another writer population and scanner) upscaled into MNIST's layout
(a 20×20 box centred in 28×28, as MNIST's digits are).

Example:
    >>> import torch
    >>> from jacal.shift import corrupt
    >>> x = torch.rand(4, 1, 28, 28)
    >>> y = corrupt(x, "rotate", 2, seed=0)
    >>> y.shape, bool(y.min() >= 0), bool(y.max() <= 1)
    (torch.Size([4, 1, 28, 28]), True, True)
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence, Tuple, Union

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from jacal._internal.validation import as_float_tensor, check_choice, check_finite, check_positive_int, fmt_shape

__all__ = ["CORRUPTIONS", "SEVERITIES", "FAR_OOD", "corrupt", "corruptions", "far_ood", "near_shift_digits"]

SEVERITIES = (1, 2, 3)
_LEVELS = {
    "gaussian_noise": (0.2, 0.35, 0.5),
    "impulse_noise": (0.05, 0.12, 0.25),
    "gaussian_blur": (1.0, 1.5, 2.0),
    "rotate": (20.0, 35.0, 50.0),
    "shear": (15.0, 30.0, 45.0),
    "scale": (0.8, 0.65, 0.5),
    "translate": (3.0, 5.0, 7.0),
    "brightness": (0.2, 0.4, 0.6),
    "contrast": (0.5, 0.3, 0.15),
    "invert": (0.6, 0.8, 1.0),
    "stripes": (1, 2, 3),
    "dotted_lines": (1, 2, 3),
}
CORRUPTIONS = tuple(_LEVELS)
FAR_OOD = ("uniform_noise", "sample_images")


def _images(name: str, x) -> torch.Tensor:
    xt = as_float_tensor(name, x)
    if xt.ndim != 4 or xt.shape[0] == 0:
        raise ValueError(f"Expected `{name}` to be images (N ≥ 1, C, H, W), got shape {fmt_shape(xt.shape)}.")
    check_finite(name, xt)
    lo, hi = float(xt.min()), float(xt.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"Expected `{name}` in [0, 1] (jacal's datasets), got values in [{lo:.3g}, {hi:.3g}].")
    return xt.clamp(0, 1)


def _generator(seed: int, corruption: str, severity: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Expected `seed` to be a non-negative int, got {seed!r}.")
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + CORRUPTIONS.index(corruption) * 101 + severity)


def _signs(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n, k), generator=gen) * 2 - 1


def _grouped_affine(x: torch.Tensor, signs: torch.Tensor, params) -> torch.Tensor:
    """v2 ``affine`` applied to each group of images that share a sign pattern (one call per group)."""
    out = torch.empty_like(x)
    for pattern in torch.unique(signs, dim=0):
        sel = (signs == pattern).all(dim=1)
        angle, translate, scale, shear = params(pattern.tolist())
        out[sel] = TF.affine(x[sel], angle=angle, translate=translate, scale=scale, shear=shear,
                             interpolation=TF.InterpolationMode.BILINEAR, fill=[0.0])
    return out


def _line_masks(n: int, h: int, w: int, n_lines: int, gen: torch.Generator, dotted: bool) -> torch.Tensor:
    """Boolean masks ``(n, h, w)`` of ``n_lines`` straight segments between random points per image."""
    mask = torch.zeros(n, h * w, dtype=torch.bool)
    steps = 2 * max(h, w)
    t = torch.linspace(0, 1, steps)
    keep = (torch.arange(steps) // max(1, round(steps / max(h, w))) % 2 == 0) if dotted else torch.ones(steps, dtype=torch.bool)
    for _ in range(n_lines):
        p0 = torch.rand(n, 2, generator=gen) * torch.tensor([h - 1, w - 1])
        p1 = torch.rand(n, 2, generator=gen) * torch.tensor([h - 1, w - 1])
        pts = (p0[:, None, :] + t[None, :, None] * (p1 - p0)[:, None, :]).round().long()[:, keep]  # (n, s, 2)
        mask.scatter_(1, pts[..., 0] * w + pts[..., 1], True)
    return mask.reshape(n, h, w)


def corrupt(x: Union[torch.Tensor, np.ndarray], corruption: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """Corrupt images ``x (N, C, H, W)`` in ``[0, 1]``; returns a new float tensor of the same shape in [0, 1].

    Args:
        x: clean images (MNIST ``(N, 1, 28, 28)``, digits ``(N, 1, 8, 8)``, colour images too).
        corruption: one of :data:`CORRUPTIONS` (see the module docstring for each one's parameters).
        severity: 1, 2 or 3.
        seed: seeds every random draw (signs, positions, noise); the same seed gives the same output.
    """
    check_choice("corruption", corruption, CORRUPTIONS)
    if severity not in SEVERITIES or isinstance(severity, bool):
        raise ValueError(f"Expected `severity` to be one of {list(SEVERITIES)}, got {severity!r}.")
    xt = _images("x", x).float()
    gen = _generator(seed, corruption, severity)
    level = _LEVELS[corruption][severity - 1]
    n, c, h, w = xt.shape
    px = h / 28.0  # lengths are given for 28-pixel images and scaled to this size
    if corruption == "gaussian_noise":
        # v2.gaussian_noise draws from the global generator: run it on a forked, seeded one
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(gen.initial_seed()))
            out = TF.gaussian_noise(xt, mean=0.0, sigma=level, clip=True)
    elif corruption == "impulse_noise":
        # hand-written: torchvision has no salt-and-pepper transform
        u = torch.rand(n, 1, h, w, generator=gen)
        salt = torch.rand(n, 1, h, w, generator=gen) < 0.5
        hit = (u < level).expand_as(xt)
        out = torch.where(hit, salt.expand_as(xt).to(xt.dtype), xt)
    elif corruption == "gaussian_blur":
        sigma = level * px
        k = min(2 * math.ceil(2 * sigma) + 1, 2 * (min(h, w) // 2) - 1)
        out = TF.gaussian_blur(xt, kernel_size=[k, k], sigma=[sigma, sigma])
    elif corruption == "rotate":
        out = _grouped_affine(xt, _signs(n, 1, gen), lambda s: (s[0] * level, [0, 0], 1.0, [0.0, 0.0]))
    elif corruption == "shear":
        out = _grouped_affine(xt, _signs(n, 1, gen), lambda s: (0.0, [0, 0], 1.0, [s[0] * level, 0.0]))
    elif corruption == "scale":
        out = TF.affine(xt, angle=0.0, translate=[0, 0], scale=level, shear=[0.0, 0.0],
                        interpolation=TF.InterpolationMode.BILINEAR, fill=[0.0])
    elif corruption == "translate":
        t = max(1, round(level * px))
        out = _grouped_affine(xt, _signs(n, 2, gen), lambda s: (0.0, [s[0] * t, s[1] * t], 1.0, [0.0, 0.0]))
    elif corruption == "brightness":
        # hand-written: v2's adjust_brightness multiplies, which leaves a black background black
        out = (xt + level).clamp(0, 1)
    elif corruption == "contrast":
        out = TF.adjust_contrast(xt, level) if c in (1, 3) else xt.mean(dim=(2, 3), keepdim=True) * (1 - level) + xt * level
    elif corruption == "invert":
        out = (1 - level) * xt + level * TF.invert(xt)
    elif corruption == "stripes":
        # hand-written: v2.erase fills one rectangle at the same place in a whole batch; here each
        # image gets its own positions and orientation, vectorised as a mask
        width = max(1, round(2 * px))
        vertical = torch.rand(n, generator=gen) < 0.5
        mask = torch.zeros(n, h, w, dtype=torch.bool)
        for _ in range(int(level)):
            col = torch.randint(0, w - width + 1, (n,), generator=gen)
            row = torch.randint(0, h - width + 1, (n,), generator=gen)
            cols = (torch.arange(w)[None, :] >= col[:, None]) & (torch.arange(w)[None, :] < col[:, None] + width)
            rows = (torch.arange(h)[None, :] >= row[:, None]) & (torch.arange(h)[None, :] < row[:, None] + width)
            mask |= torch.where(vertical[:, None, None], cols[:, None, :].expand(n, h, w), rows[:, :, None].expand(n, h, w))
        out = xt.masked_fill(mask[:, None], 1.0)
    else:  # dotted_lines; hand-written: torchvision does not draw lines
        out = xt.masked_fill(_line_masks(n, h, w, int(level), gen, dotted=True)[:, None], 1.0)
    return out.clamp(0, 1).contiguous()


def corruptions(x: Union[torch.Tensor, np.ndarray], *, names: Sequence[str] = CORRUPTIONS,
                severities: Sequence[int] = SEVERITIES, seed: int = 0) -> Iterator[Tuple[str, int, torch.Tensor]]:
    """``(corruption, severity, corrupted x)`` for every pair, in order (one corrupted copy at a time)."""
    for name in names:
        for s in severities:
            yield name, s, corrupt(x, name, s, seed=seed)


def _shape(shape) -> Tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"Expected `shape` (C, H, W), got {shape}.")
    return shape


def far_ood(kind: str, n: int, shape: Sequence[int], *, seed: int = 0) -> torch.Tensor:
    """``n`` far-out-of-distribution images ``(n, C, H, W)`` in [0, 1] that need no download.

    Args:
        kind: ``"uniform_noise"`` or ``"sample_images"`` (square crops of scikit-learn's
            ``load_sample_images`` photographs, side 10–100% of the photograph's height, at random
            positions, grayscale when ``C == 1``, resized to ``H × W`` with antialiasing).
        n: how many.
        shape: ``(C, H, W)`` with ``C`` 1 or 3 for ``"sample_images"``.
        seed: seeds the draws.
    """
    check_choice("kind", kind, FAR_OOD)
    check_positive_int("n", n)
    c, h, w = _shape(shape)
    gen = torch.Generator().manual_seed(int(seed) * 7919 + FAR_OOD.index(kind))
    if kind == "uniform_noise":
        return torch.rand(n, c, h, w, generator=gen)
    if c not in (1, 3):
        raise ValueError(f"'sample_images' makes 1- or 3-channel images, got C={c}.")
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255.0
              for im in load_sample_images().images]
    if c == 1:
        photos = [TF.rgb_to_grayscale(p) for p in photos]
    which = torch.randint(0, len(photos), (n,), generator=gen)
    frac = 0.1 + 0.9 * torch.rand(n, generator=gen)
    out = torch.empty(n, c, h, w)
    for i in range(n):
        p = photos[int(which[i])]
        side = max(2, int(frac[i] * p.shape[1]))
        top = int(torch.randint(0, p.shape[1] - side + 1, (1,), generator=gen))
        left = int(torch.randint(0, p.shape[2] - side + 1, (1,), generator=gen))
        out[i] = TF.resized_crop(p, top, left, side, side, [h, w], antialias=True)
    return out.clamp(0, 1)


def near_shift_digits(shape: Sequence[int] = (1, 28, 28)) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits ``(x (N, C, H, W) in [0, 1], y (N,))`` in another image layout.

    The 8×8 images (values / 16) are resized with antialiasing to a centred box of 20/28 of the
    side and zero-padded to ``H × W``, MNIST's own layout (its digits sit in a 20×20 box of 28×28);
    channels are repeated for ``C > 1``.
    """
    from sklearn.datasets import load_digits

    c, h, w = _shape(shape)
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    bh, bw = max(1, round(h * 20 / 28)), max(1, round(w * 20 / 28))
    x = TF.resize(x, [bh, bw], antialias=True).clamp(0, 1)
    top, left = (h - bh) // 2, (w - bw) // 2
    out = torch.zeros(len(x), 1, h, w)
    out[:, :, top:top + bh, left:left + bw] = x
    return out.expand(-1, c, -1, -1).contiguous(), torch.from_numpy(d.target.astype(np.int64))
