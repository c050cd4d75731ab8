"""Per-sample data augmentation on image batches, vectorized over samples.

torchvision's ``RandomCrop(padding=...)`` / ``RandomHorizontalFlip`` draw one transform per call,
so applying them per sample needs a Python loop over points; jacal's population trainer needs a
different random shift for every sample of every model in one tensor operation, hence these two
small vectorized functions (same semantics: zero padding then a random crop; a flip with p=0.5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_translate", "random_hflip"]


def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by an independent integer offset in ``[-max_shift, max_shift]²``, zero-filled.

    Args:
        x: ``(M, C, H, W)`` images.
        max_shift: largest shift in pixels (0 returns ``x``).
        generator: CPU generator for the offsets.

    Returns:
        ``(M, C, H, W)`` shifted images.
    """
    if max_shift <= 0:
        return x
    m, c, h, w = x.shape
    s = int(max_shift)
    padded = F.pad(x, (s, s, s, s))
    offs = torch.randint(0, 2 * s + 1, (2, m), generator=generator).to(x.device)
    rows = offs[0][:, None] + torch.arange(h, device=x.device)  # (M, H)
    cols = offs[1][:, None] + torch.arange(w, device=x.device)  # (M, W)
    return padded[torch.arange(m, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image ``(M, C, H, W)`` horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
