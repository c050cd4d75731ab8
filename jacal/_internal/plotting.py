"""The figures' common steps: matplotlib without a display, and an atomic PNG write."""
from __future__ import annotations

from pathlib import Path

__all__ = ["pyplot", "save_png"]


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> str:
    """Write ``fig`` to ``path`` as a PNG (110 dpi, tight box) atomically, close it, return the file name."""
    from jacal._internal.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return path.name
