"""Private I/O plumbing: atomic file writes (a temporary name in the same folder, then a rename), array
files and image decoding. The public readers and writers are in :mod:`jacal.io`."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["atomic_path", "atomic_open", "ensure_out_dir", "load_array", "load_image_folder", "image_transform",
           "decode_image", "list_image_folder", "IMAGE_SUFFIXES"]


def ensure_out_dir(out: Union[str, Path]) -> Path:
    """Create the output folder ``out`` if needed; raise ``JacalError`` if it cannot be a writable folder."""
    from jacal._validation import JacalError

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JacalError(f"cannot create output folder {out}: {err.strerror or err}") from err
    if not out.is_dir():
        raise JacalError(f"output path {out} is not a folder")
    if not os.access(out, os.W_OK):
        raise JacalError(f"output folder {out} is not writable")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds.

    A failed write (an ``OSError``: disk full, a file-size limit, a read-only folder) removes the
    temporary file and raises ``JacalError`` naming ``path``; ``path`` itself is never half-written.
    """
    from jacal._validation import JacalError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise JacalError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would have
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):  # disk full, file-size limit, read-only folder: the old file is kept
            raise JacalError(f"cannot write {path}: {err.strerror or err}; the previous file (if any) "
                             f"is unchanged") from None
        raise


@contextlib.contextmanager
def atomic_open(path: Union[str, Path], mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open`` that leaves either the old file or the complete new one, never a partial one."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


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

    from jacal._validation import JacalError, first_line

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

    from jacal._validation import JacalError

    if channels not in (1, 3):
        raise JacalError(f"--channels must be 1 or 3, got {channels}")
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

    from jacal._validation import JacalError, first_line

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
