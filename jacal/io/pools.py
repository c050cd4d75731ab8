"""Pools: the items :func:`jacal.acquire` scores, from array files, image folders and manifests.

A manifest is what labeling tools export: a CSV (``.csv``) or JSON-lines (``.jsonl``) file with an
``id`` column and a ``path`` and/or ``uri`` column. A value is a local path (relative paths resolve
against the manifest's folder) or a ``file://`` URI; with both columns jacal reads ``path`` and hands
``uri`` to the labeling tool. Images are decoded lazily, one batch at a time, by :class:`ImagePool`.
"""
from __future__ import annotations

import csv
import io as _stdio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse
from urllib.request import url2pathname

import torch
from torch.utils.data import Dataset

from jacal._internal.validation import JacalError, first_line
from jacal.io._files import DECODE_ERRORS as _DECODE_ERRORS, read_jsonl as _read_jsonl, read_text as _read_text
from jacal.io.readers import decode_image, image_transform, list_image_folder, load_array

__all__ = ["Manifest", "read_manifest", "ImagePool", "Pool", "open_pool", "MANIFEST_SUFFIXES", "ARRAY_SUFFIXES"]

MANIFEST_SUFFIXES = (".csv", ".jsonl")
ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


@dataclass
class Manifest:
    """A manifest's rows.

    Attributes:
        ids: item ids, verbatim (unique, non-empty).
        files: the local file of each item, or ``None`` where its location is not a local path
            (an ``http://`` or ``s3://`` URI: such an item cannot be read, and is reported).
        uris: what a labeling tool should show for each item: the ``uri`` column where present,
            else the ``path`` value as written.
        path: the manifest file.
    """

    ids: List[str]
    files: List[Optional[str]]
    uris: List[str]
    path: Path


def _local_file(value: str, base: Path) -> Optional[str]:
    """A local path for a manifest value (a path, or a ``file://`` URI), else ``None`` (kept as a
    string: a 100,000-row manifest holds 100,000 of them)."""
    parsed = urlparse(value)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        p = Path(url2pathname(parsed.path))
    elif len(parsed.scheme) > 1:  # http, s3, gs...; a one-letter scheme is a Windows drive
        return None
    else:
        p = Path(value)
    return os.fspath(p if p.is_absolute() else base / p)


def read_manifest(path: Union[str, Path]) -> Manifest:
    """Read a pool manifest: CSV (``.csv``) or JSON lines (``.jsonl``) with ``id`` and ``path``/``uri``.

    Ids are kept verbatim (spaces, commas and non-ASCII characters included); a ``path`` or ``uri``
    value is a local path, relative to the manifest's folder unless absolute, or a ``file://`` URI.
    Files are not opened here (see :class:`ImagePool`).

    Raises:
        JacalError: no ``id`` column, no ``path``/``uri`` column, an empty or duplicate id, a row
            without a location, or a file that is not UTF-8 CSV / JSON lines.
    """
    path = Path(path)
    text = _read_text(path)
    if path.suffix.lower() == ".jsonl":
        rows: Iterable[dict] = _read_jsonl(path, text, "one object per line with 'id' and 'path' or 'uri'")
        columns = set().union(*(r.keys() for r in rows)) if rows else set()
        first_row = 1
    else:
        rows = csv.DictReader(_stdio.StringIO(text, newline=""))  # streamed: no list of 100,000 row dicts
        columns = set(rows.fieldnames or [])
        first_row = 2
    shown = ", ".join(sorted(map(str, columns))) or "none"
    if "id" not in columns:
        raise JacalError(f"manifest {path} has no 'id' column (columns: {shown})")
    if "path" not in columns and "uri" not in columns:
        raise JacalError(f"manifest {path} has no 'path' or 'uri' column (columns: {shown})")
    ids, files, uris, seen = [], [], [], set()
    for n, row in enumerate(rows, first_row):
        item = row.get("id")
        if item is None or item == "" or isinstance(item, (dict, list, bool)):
            raise JacalError(f"manifest {path} row {n} has no id")
        item = str(item)
        if item in seen:
            raise JacalError(f"manifest {path} has the id {item!r} twice (rows {ids.index(item) + first_row} and {n}); "
                             "ids must be unique")
        seen.add(item)
        location = row.get("path") or row.get("uri")
        if not location or not isinstance(location, str):
            raise JacalError(f"manifest {path} row {n} (id {item!r}) has no path or uri")
        ids.append(item)
        files.append(_local_file(location, path.parent))
        uris.append(row.get("uri") or location)
    if not ids:
        raise JacalError(f"manifest {path} lists no items")
    return Manifest(ids, files, uris, path)


class ImagePool(Dataset):
    """Image files decoded when an item is read: memory holds one batch, never the pool.

    Items are ``(C, H, W)`` float32 tensors in [0, 1], decoded with Pillow and the documented
    transform of :func:`load_image_folder` (convert to ``channels``, ``Resize(size)``, scale). A
    missing or unreadable file gives an all-NaN item: :func:`jacal.acquire` lists it in
    ``invalid`` and never selects it; :meth:`problem` says why.

    Args:
        ids: one id per item.
        files: the file of each item (``None``: not a local file, always unreadable).
        size: ``(H, W)`` after resizing.
        channels: 1 (grayscale) or 3 (RGB).
        uris: what a labeling tool shows for each item (default: the files as ``file://`` URIs).

    Attributes:
        decoded: files decoded so far by this object (the laziness is testable).
    """

    def __init__(self, ids: Sequence[str], files: Sequence[Union[str, Path, None]], *, size: Sequence[int], channels: int,
                 uris: Optional[Sequence[str]] = None) -> None:
        self.ids = list(ids)
        self.files = list(files)
        self.size = (int(size[0]), int(size[-1]))
        self.channels = channels
        self.uris = list(uris) if uris is not None else None
        self.decoded = 0
        self._transform = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def input_shape(self) -> tuple:
        """``(C, H, W)`` of every item."""
        return (self.channels, *self.size)

    def _decode(self, i: int) -> torch.Tensor:
        if self._transform is None:
            self._transform = image_transform(self.size, self.channels)
        f = self.files[i]
        if f is None:
            raise ValueError(f"not a local file: {self.uris[i] if self.uris else i}")
        self.decoded += 1
        return decode_image(f, self.channels, self._transform)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            return self._decode(i)
        except _DECODE_ERRORS:
            return torch.full(self.input_shape, float("nan"))

    def problem(self, i: int) -> Optional[str]:
        """Why item ``i`` cannot be read (``None`` if it can)."""
        try:
            self._decode(i)
        except FileNotFoundError:
            return f"file not found: {self.files[i]}"
        except _DECODE_ERRORS as err:
            if self.files[i] is None:
                return first_line(err, 200)
            return f"cannot read {self.files[i]}: {first_line(err)}"
        return None


@dataclass
class Pool:
    """Items to score, with what names them.

    Attributes:
        items: a tensor or numpy array ``(N, ...)``, or an :class:`ImagePool` (decoded lazily);
            what :func:`jacal.acquire` takes as ``pool``.
        ids: one id per item (strings, or row numbers for an array without ids).
        uris: what a labeling tool shows for each item (image pools), else ``None``.
        source: the file or folder read.
    """

    items: Any
    ids: list
    uris: Optional[List[str]] = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def input_shape(self) -> tuple:
        """The shape of one item."""
        return self.items.input_shape if isinstance(self.items, ImagePool) else tuple(self.items.shape[1:])

    def index_of(self, ids: Iterable[Any]) -> Tuple[List[int], List[str]]:
        """``(indices, unknown)``: the sorted pool indices of ``ids`` (compared as strings) and the
        ids that name no pool item, in the order given."""
        pos = {str(item): i for i, item in enumerate(self.ids)}
        wanted = list(dict.fromkeys(str(item) for item in ids))
        return sorted(pos[w] for w in wanted if w in pos), [w for w in wanted if w not in pos]

    def materialize(self, indices: Optional[Sequence[int]] = None) -> torch.Tensor:
        """The items (all, or ``indices``) as one float tensor ``(M, ...)``, decoded now.

        Raises:
            JacalError: an image that cannot be read (named, with why).
        """
        idx = list(range(len(self))) if indices is None else [int(i) for i in indices]
        if not isinstance(self.items, ImagePool):
            x = torch.as_tensor(self.items[idx] if indices is not None else self.items[:])
            return x if x.is_floating_point() else x.float()
        out = []
        for i in idx:  # decoding is per file by nature
            try:
                out.append(self.items._decode(i))
            except _DECODE_ERRORS:
                raise JacalError(f"cannot read item {self.ids[i]!r}: {self.items.problem(i)}") from None
        return torch.stack(out) if out else torch.zeros((0, *self.input_shape))

    def readable(self, indices: Sequence[int]) -> Tuple[List[int], torch.Tensor, Dict[str, str]]:
        """The items at ``indices`` that can be read and hold finite values, decoded one at a time:
        ``(their indices, items (M, ...), {id: why} for the others)``."""
        keep, xs, unreadable = [], [], {}
        for i in indices:  # a small set next to the pool; each file is decoded once
            try:
                xi = self.materialize([i])[0]
            except JacalError:
                unreadable[str(self.ids[i])] = self.problems([i]).get(i, "unreadable")
                continue
            if not torch.isfinite(xi).all():
                unreadable[str(self.ids[i])] = "contains NaN/Inf values"
                continue
            keep.append(i)
            xs.append(xi)
        return keep, (torch.stack(xs) if xs else torch.zeros((0, *self.input_shape))), unreadable

    def problems(self, indices: Iterable[int]) -> Dict[int, str]:
        """``{index: reason}`` for the given items that could not be read (missing or unreadable
        files); invalid items not listed hold NaN/Inf values."""
        if not isinstance(self.items, ImagePool):
            return {}
        found = {int(i): self.items.problem(int(i)) for i in indices}
        return {i: r for i, r in found.items() if r is not None}

    def invalid_report(self, indices: Iterable[int], limit: int = 100) -> List[str]:
        """Lines that say why the items at ``indices`` (e.g. :attr:`jacal.AcquisitionResult.invalid`)
        were left out: one per unreadable item (at most ``limit``, then a count), and one for all the
        items that hold NaN/Inf values."""
        indices = list(indices)
        reasons = self.problems(indices)
        lines = []
        for n, (i, why) in enumerate(reasons.items()):
            if n == limit:
                lines.append(f"... and {len(reasons) - limit} more unreadable item(s) (Pool.problems lists them all)")
                break
            lines.append(f"skipped item {self.ids[i]!r}: {why}")
        nan = [i for i in indices if int(i) not in reasons]
        if nan:
            shown = ", ".join(str(self.ids[i]) for i in nan[:10]) + (" ..." if len(nan) > 10 else "")
            lines.append(f"{len(nan)} pool item(s) contain NaN/Inf and were not selected: {shown}")
        return lines


def _image_shape(source: Path, files: List[Optional[str]], image_size, channels, input_shape, infer: bool):
    """``(size, channels)`` for an image pool: given, else from the model's input shape, else (with
    ``infer``) from the first readable image."""
    shape = list(input_shape) if input_shape is not None else None
    if image_size:
        size = (int(image_size[0]), int(image_size[-1]))
    elif shape and len(shape) == 3:
        size = (int(shape[1]), int(shape[2]))
    elif infer:
        size, mode = _first_image(source, files)
        if channels is None:
            channels = 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    else:
        raise JacalError(f"{source} holds images of no known size for this model: pass `image_size` (and `channels`)")
    if channels is None:
        channels = int(shape[0]) if shape and len(shape) == 3 else 3
    if channels not in (1, 3):
        raise JacalError(f"`channels` must be 1 or 3, got {channels}")
    return size, channels


def _first_image(source: Path, files: List[Optional[str]]):
    from PIL import Image

    for f in files:
        if f is None:
            continue
        try:
            with Image.open(f) as im:
                return (im.height, im.width), im.mode
        except _DECODE_ERRORS:
            continue
    raise JacalError(f"no readable image in {source}")


def open_pool(path: Union[str, Path], *, image_size: Optional[Sequence[int]] = None, channels: Optional[int] = None,
              input_shape: Optional[Sequence[int]] = None, infer_image_shape: bool = False,
              mmap: bool = False) -> Pool:
    """Open the items at ``path``: an array file, an image folder or a manifest (see the module).

    Args:
        path: ``.npy``/``.npz``/``.pt``, a folder of PNG/JPEG images, or a ``.csv``/``.jsonl`` manifest.
        image_size: ``(H, W)`` (or ``(S,)`` for square) to resize images to.
        channels: 1 or 3 for images.
        input_shape: the model's ``(C, H, W)``: the default size and channels.
        infer_image_shape: without ``image_size``/``input_shape``, take the size (and, without
            ``channels``, grayscale or RGB) of the first readable image instead of failing.
        mmap: memory-map a ``.npy`` file (rows are read when used).

    Returns:
        :class:`Pool`; images are not decoded yet (:class:`ImagePool`).

    Raises:
        JacalError: nothing at ``path``, an unsupported file type, a bad manifest, no images, or
            images of unknown size.
    """
    path = Path(path)
    if path.is_dir():
        ids, files = list_image_folder(path)
        if not files:
            raise JacalError(f"no PNG/JPEG images in {path}")
        uris = [f.resolve().as_uri() for f in files]
        files = [os.fspath(f) for f in files]
    elif path.suffix.lower() in MANIFEST_SUFFIXES:
        m = read_manifest(path)
        ids, files, uris = m.ids, m.files, m.uris
    elif not path.exists():
        raise JacalError(f"pool not found: {path}")
    elif path.suffix.lower() in ARRAY_SUFFIXES:
        if mmap and path.suffix.lower() == ".npy":
            x, _ = load_array(path, mmap=True)
            return Pool(x, list(range(len(x))), None, str(path))
        x, ids = load_array(path)
        return Pool(x, ids if ids is not None else list(range(len(x))), None, str(path))
    else:
        raise JacalError(f"unsupported pool {path}: expected .npy, .npz, .pt, a .csv or .jsonl manifest, "
                         "or a folder of PNG/JPEG images")
    size, ch = _image_shape(path, files, image_size, channels, input_shape, infer_image_shape)
    return Pool(ImagePool(ids, files, size=size, channels=ch, uris=uris), list(ids), list(uris), str(path))
