"""Readers of arrays and images: array files (``.npy``, ``.npz``, ``.pt``), image folders, and the
documented image transform that :class:`jacal.io.ImagePool` decodes with."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

__all__ = ["load_array", "load_image_folder", "image_transform", "decode_image", "list_image_folder", "read_labels",
           "IMAGE_SUFFIXES"]


def load_array(path: Union[str, Path], *, mmap: bool = False):
    """Read points from ``.npy``, ``.npz`` (array ``x``, optional ``ids``) or ``.pt`` (a tensor,
    or a dict with ``x`` and optional ``ids``).

    Returns:
        ``(x, ids)``: a float tensor ``(N, ...)`` and a list of ids (or ``None``). With ``mmap=True`` a
        ``.npy`` file comes back as a read-only memory-mapped numpy array (rows are read when used).

    Raises:
        JacalError: the file is missing, unreadable, or has no ``x``.
    """
    import numpy as np
    import torch

    from jacal._internal.validation import JacalError, first_line

    path = Path(path)
    if not path.is_file():
        raise JacalError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    ids = None
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
            if mmap:
                if x.ndim < 2:
                    raise JacalError(f"{path}: expected an array of points (N, ...), got shape {x.shape}")
                return x, None
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                keys = list(f.keys())
                if "x" in keys:
                    x = f["x"]
                elif len(keys) == 1:
                    x = f[keys[0]]
                else:
                    raise JacalError(f"{path} holds arrays {keys}; expected one named 'x'")
                ids = f["ids"].tolist() if "ids" in keys else None
        elif suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if "x" not in obj:
                    raise JacalError(f"{path} holds a dict without an 'x' entry")
                ids = list(obj["ids"]) if "ids" in obj else None
                obj = obj["x"]
            if not isinstance(obj, (torch.Tensor, np.ndarray)):
                raise JacalError(f"{path} does not hold a tensor")
            x = obj
        else:
            raise JacalError(f"unsupported input file type '{suffix}' for {path}; use .npy, .npz or .pt")
    except JacalError:
        raise
    except Exception as err:  # numpy/torch raise many types for corrupt files
        raise JacalError(f"could not read {path}: {first_line(err, 160)}") from err
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise JacalError(f"{path}: expected an array of points (N, ...), got shape {tuple(x.shape)}")
    if ids is not None and len(ids) != len(x):
        raise JacalError(f"{path}: 'ids' has {len(ids)} entries but 'x' has {len(x)} rows")
    return x.float() if not x.is_floating_point() else x, ids


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_transform(size: tuple, channels: int):
    """The documented image preprocessing, as ``transform(pil_image) -> (C, H, W)`` float32 in [0, 1].

    torchvision ``v2``: ``PILToTensor``, ``Resize(size)`` (bilinear, antialiased),
    ``ToDtype(float32, scale=True)``; no mean/std normalisation. Convert the image to ``channels``
    first (:func:`decode_image` does).

    Raises:
        JacalError: ``channels`` is not 1 or 3.
    """
    import torch
    from torchvision.transforms import v2

    from jacal._internal.validation import JacalError

    if channels not in (1, 3):
        raise JacalError(f"`channels` must be 1 or 3, got {channels}")
    return v2.Compose([v2.PILToTensor(), v2.Resize(list(size), antialias=True), v2.ToDtype(torch.float32, scale=True)])


def decode_image(path: Union[str, Path], channels: int, transform):
    """Decode one image file with Pillow, convert it to ``channels`` (1: ``"L"``, 3: ``"RGB"``) and
    apply ``transform`` (from :func:`image_transform`).

    Raises:
        OSError, ValueError, PIL.UnidentifiedImageError: the file is missing or not a readable image.
    """
    from PIL import Image

    with Image.open(path) as im:
        img = im.convert("L" if channels == 1 else "RGB")
    return transform(img)


def list_image_folder(folder: Union[str, Path]):
    """Every PNG/JPEG under ``folder``, nested class folders included, sorted by relative path.

    Returns:
        ``(ids, files)``: ids are the paths relative to ``folder`` with ``/`` separators (the file
        name for a flat folder), files the paths themselves.
    """
    folder = Path(folder)
    files = sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                   key=lambda p: p.relative_to(folder).as_posix())
    return [p.relative_to(folder).as_posix() for p in files], files


def load_image_folder(folder: Union[str, Path], *, size: tuple, channels: int):
    """Read every PNG/JPEG under ``folder`` (nested class folders included, sorted by relative path)
    as a float tensor ``(N, C, H, W)``.

    Transform (documented; matches jacal's dataset preprocessing): decode with Pillow, convert to
    ``channels`` (1: grayscale ``"L"``, 3: ``"RGB"``), then torchvision ``v2``: ``PILToTensor``,
    ``Resize(size)`` (bilinear, antialiased), ``ToDtype(float32, scale=True)`` → [0, 1]. No mean/std
    normalisation (:func:`image_transform`). :class:`jacal.io.ImagePool` reads the same folder
    lazily, item by item.

    Returns:
        ``(x, ids)`` with ids the paths relative to ``folder`` (the file names for a flat folder).

    Raises:
        JacalError: no images, or an unreadable image (named).
    """
    import torch
    from PIL import UnidentifiedImageError

    from jacal._internal.validation import JacalError, first_line

    folder = Path(folder)
    ids, files = list_image_folder(folder)
    if not files:
        raise JacalError(f"no PNG/JPEG images in {folder}")
    transform = image_transform(size, channels)
    images = []
    for name, f in zip(ids, files):  # decoding is per file by nature; the scoring that follows is batched
        try:
            images.append(decode_image(f, channels, transform))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise JacalError(f"cannot decode image {name}: {first_line(err)}") from err
    return torch.stack(images), ids


def read_labels(path: Union[str, Path], n: Optional[int] = None):
    """Class indices from a ``.npy`` file or a text file with one integer per line.

    Args:
        path: the file.
        n: how many items the labels are for (checked when given).

    Returns:
        An int64 numpy array ``(N,)``.

    Raises:
        JacalError: a missing or unreadable file, or not ``n`` labels.
    """
    import numpy as np

    from jacal._internal.validation import JacalError

    path = Path(path)
    if not path.is_file():
        raise JacalError(f"labels file not found: {path}")
    try:
        y = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (ValueError, OSError) as err:
        raise JacalError(f"could not read labels from {path}: {err}") from err
    y = np.asarray(y).reshape(-1)
    if n is not None and len(y) != n:
        raise JacalError(f"{path} has {len(y)} labels for {n} items")
    return y.astype(np.int64)
