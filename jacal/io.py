"""jacal's public I/O: pools in, annotations back in, batches and labeling-tool tasks out.

**Pools** (:func:`open_pool`), what :func:`jacal.acquire` scores:

* arrays: ``.npy``, ``.npz`` (array ``x``, optional ``ids``), ``.pt`` (:func:`load_array`);
* a folder of PNG/JPEG images, nested class folders included; ids are the paths relative to the
  folder (the file names for a flat folder);
* a **manifest**, as labeling tools export them: a CSV (``.csv``) or JSON-lines (``.jsonl``) file
  with an ``id`` column and a ``path`` and/or ``uri`` column. A value is a local path (relative paths
  resolve against the manifest's folder) or a ``file://`` URI; with both columns jacal reads
  ``path`` and hands ``uri`` to the labeling tool.

Images are decoded lazily, one batch at a time, by :class:`ImagePool` with the documented transform
of :func:`load_image_folder`; a missing or unreadable file becomes an all-NaN item, which
:func:`jacal.acquire` reports in ``invalid`` and never selects (:meth:`Pool.problems` names why).

**Annotations back in** (:func:`read_annotations`): a Label Studio JSON export, an Argilla export
(``dataset.records.to_json``), a CSV (or JSON lines) with ``id`` and optional ``label`` columns,
or a plain list of ids; labels map to class indices through the label names
(:func:`parse_label_names`, :meth:`Annotations.label_indices`).

**Batches out** (:func:`write_batch`): CSV / JSON lines (id, rank, score, predicted, confidence),
Label Studio task-import JSON (:func:`label_studio_tasks`) or Argilla record JSON
(:func:`argilla_records`), always written atomically.
"""
from __future__ import annotations

import csv
import io as _stdio
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse
from urllib.request import url2pathname

import torch
from torch.utils.data import Dataset

from jacal._io import (IMAGE_SUFFIXES, atomic_open, atomic_path, decode_image, image_transform, list_image_folder,
                       load_array, load_image_folder)
from jacal._validation import JacalError, first_line

__all__ = [
    "Pool", "ImagePool", "open_pool", "read_manifest", "Manifest",
    "Annotations", "read_annotations", "read_ids", "parse_label_names", "default_label_names",
    "LabeledItems", "labeled_items",
    "batch_rows", "label_studio_tasks", "argilla_records", "write_rows", "write_batch", "model_version",
    "BATCH_FORMATS", "TOOLS", "MANIFEST_SUFFIXES", "ARRAY_SUFFIXES",
    "atomic_open", "atomic_path", "load_array", "load_image_folder", "image_transform", "IMAGE_SUFFIXES",
]

MANIFEST_SUFFIXES = (".csv", ".jsonl")
ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
BATCH_FORMATS = ("csv", "jsonl", "label-studio", "argilla")
TOOLS = ("label-studio", "argilla", "csv")
_TOOL_NAMES = {"label-studio": "Label Studio JSON", "argilla": "Argilla JSON", "csv": "a list of ids"}
_DECODE_ERRORS = (OSError, ValueError, SyntaxError)  # PIL.UnidentifiedImageError is an OSError


# ---------------------------------------------------------------------------------------------- pools

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


def _read_jsonl(path: Path, text: str, what: str) -> List[dict]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise JacalError(f"{path} line {n} is not valid JSON ({err.msg}); expected {what}") from err
        if not isinstance(obj, dict):
            raise JacalError(f"{path} line {n} is not a JSON object; expected {what}")
        rows.append(obj)
    return rows


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise JacalError(f"file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise JacalError(f"{path} is not UTF-8 text") from err


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

    def problems(self, indices: Iterable[int]) -> Dict[int, str]:
        """``{index: reason}`` for the given items that could not be read (missing or unreadable
        files); invalid items not listed hold NaN/Inf values."""
        if not isinstance(self.items, ImagePool):
            return {}
        found = {int(i): self.items.problem(int(i)) for i in indices}
        return {i: r for i, r in found.items() if r is not None}


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
        raise JacalError(f"{source} holds images of no known size for this model: pass --image-size (and --channels)")
    if channels is None:
        channels = int(shape[0]) if shape and len(shape) == 3 else 3
    if channels not in (1, 3):
        raise JacalError(f"--channels must be 1 or 3, got {channels}")
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


# ---------------------------------------------------------------------------------------- annotations

def parse_label_names(text: str) -> List[str]:
    """Class names, comma-separated, in class-index order (CSV quoting allowed: ``'"a, b",c'``).

    >>> parse_label_names('cat, dog,"bird, small"')
    ['cat', 'dog', 'bird, small']

    Raises:
        JacalError: an empty or repeated name.
    """
    names = [n.strip() for n in next(csv.reader([text]), [])]
    if not names or any(n == "" for n in names):
        raise JacalError(f"--label-names must be comma-separated non-empty names, got {text!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise JacalError(f"--label-names repeats {', '.join(map(repr, dup))}")
    return names


def default_label_names(n_classes: int) -> List[str]:
    """``["0", "1", ..., "K-1"]``: class indices as names.

    >>> default_label_names(3)
    ['0', '1', '2']
    """
    return [str(i) for i in range(n_classes)]


@dataclass
class Annotations:
    """What a labeling tool's export (or a list of ids) says about pool items.

    Attributes:
        ids: every item id the file names, labeled or only queued, in file order (unique).
        labels: ``{id: label name}`` for the items with an annotation.
        tool: ``"label-studio"``, ``"argilla"`` or ``"csv"`` (CSV, JSON lines or a plain id list).
        path: the file read.
    """

    ids: List[str]
    labels: Dict[str, str]
    tool: str
    path: str = ""

    def label_indices(self, label_names: Sequence[str]) -> Dict[str, int]:
        """``{id: class index}`` through ``label_names`` (index = position in the list).

        Raises:
            JacalError: a label that is not one of ``label_names``.
        """
        index = {n: i for i, n in enumerate(label_names)}
        for item, label in self.labels.items():
            if label not in index:
                shown = ", ".join(label_names[:12]) + (", ..." if len(label_names) > 12 else "")
                raise JacalError(f"{self.path}: item {item!r} is labeled {label!r}, which is not one of the label "
                                 f"names ({shown}); set them with --label-names")
        return {item: index[label] for item, label in self.labels.items()}


def _majority(votes: List[str]) -> str:
    """The most frequent label; a tie goes to the one given first."""
    return max(dict.fromkeys(votes), key=votes.count)


class _Collector:
    def __init__(self, path: Path) -> None:
        self.path, self.ids, self.labels, self.seen = path, [], {}, set()

    def add(self, item: str, label: Optional[str]) -> None:
        if item not in self.seen:
            self.seen.add(item)
            self.ids.append(item)
        if label is None:
            return
        if self.labels.get(item, label) != label:
            raise JacalError(f"{self.path}: item {item!r} is labeled both {self.labels[item]!r} and {label!r}")
        self.labels[item] = label


def _single_choice(value: Any, where: str) -> str:
    if isinstance(value, list):
        if len(value) != 1:
            raise JacalError(f"{where} has {len(value)} choices; jacal reads single-label classification (one choice)")
        value = value[0]
    if isinstance(value, (dict, list)) or value is None:
        raise JacalError(f"{where} is not a class name: {value!r}")
    return str(value)


def _from_label_studio(path: Path, tasks: List[Any], question: str) -> _Collector:
    # Label Studio's JSON export: a list of tasks {"id", "data": {...}, "annotations": [{"result": [{"from_name",
    # "to_name", "type": "choices", "value": {"choices": [...]}}], "was_cancelled": bool, ...}], "predictions": [...]}
    # https://labelstud.io/guide/task_format (older versions call "annotations" "completions")
    out, other_controls = _Collector(path), set()
    for n, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or "id" not in data:
            raise JacalError(f"{path}: task {task.get('id', n) if isinstance(task, dict) else n} has no data.id (jacal's "
                             "item id); export the project the tasks of `jacal acquire --format label-studio` went into")
        item = str(data["id"])
        votes = []
        for ann in (task.get("annotations") or task.get("completions") or []):
            if not isinstance(ann, dict) or ann.get("was_cancelled"):
                continue
            for r in ann.get("result") or []:
                if not isinstance(r, dict) or r.get("type") != "choices":
                    continue
                if r.get("from_name") != question:
                    other_controls.add(str(r.get("from_name")))
                    continue
                votes.append(_single_choice((r.get("value") or {}).get("choices"), f"{path}: an annotation of {item!r}"))
                break
        out.add(item, _majority(votes) if votes else None)
    if not out.labels and other_controls:
        raise JacalError(f"{path} has no choices from the control {question!r} (found {', '.join(sorted(other_controls))}); "
                         "pass --from-name")
    return out


def _from_argilla(path: Path, records: List[Any], question: str) -> _Collector:
    # Argilla 2.x export (dataset.records.to_json = Record.to_dict per record): {"id", "fields": {...},
    # "metadata": {...}, "suggestions": {question: {"value", "score", "agent"}}, "responses": {question:
    # [{"value", "user_id"}]}, "vectors", "status", "_server_id"}
    # https://docs.argilla.io/latest/reference/argilla/records/records (argilla/records/_resource.py)
    out, other_questions = _Collector(path), set()
    for n, rec in enumerate(records):
        if not isinstance(rec, dict) or rec.get("id") in (None, ""):
            raise JacalError(f"{path}: record {n} has no id")
        item = str(rec["id"])
        responses = rec.get("responses") or {}
        if not isinstance(responses, dict):
            raise JacalError(f"{path}: record {item!r} has responses in an unknown layout (expected question -> list)")
        other_questions.update(q for q, v in responses.items() if q != question and v)
        votes = [_single_choice(r["value"], f"{path}: a response to {item!r}") for r in responses.get(question) or []
                 if isinstance(r, dict) and r.get("value") is not None and r.get("status", "submitted") == "submitted"]
        out.add(item, _majority(votes) if votes else None)
    if not out.labels and other_questions:
        raise JacalError(f"{path} has no responses to the question {question!r} (found {', '.join(sorted(other_questions))}); "
                         "pass --from-name")
    return out


def _from_rows(path: Path, text: str) -> _Collector:
    out = _Collector(path)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return out
    if lines[0].lstrip().startswith("{"):
        for row in _read_jsonl(path, text, "an object per line with 'id' (and 'label')"):
            if row.get("id") in (None, ""):
                raise JacalError(f"{path}: a line has no 'id'")
            label = row.get("label")
            out.add(str(row["id"]), None if label in (None, "") else str(label))
        return out
    header = [c.strip() for c in next(csv.reader([lines[0]]))]
    if "id" in header:
        reader = csv.reader(_stdio.StringIO(text, newline=""))
        next(reader)
        col, lab = header.index("id"), header.index("label") if "label" in header else None
        for row in reader:
            if not row or col >= len(row) or row[col] == "":
                continue
            label = row[lab] if lab is not None and lab < len(row) and row[lab] != "" else None
            out.add(row[col], label)
        return out
    if len(header) > 1:
        raise JacalError(f"{path} is a CSV without an 'id' column")
    for ln in lines:  # a plain list: one id per line
        out.add(ln.strip(), None)
    return out


def read_annotations(path: Union[str, Path], *, tool: str = "auto", question: str = "label",
                     label_names: Optional[Sequence[str]] = None) -> Annotations:
    """Read what a labeling tool exported, or a list of ids, and detect which it is.

    Formats:

    * Label Studio JSON export (a list of tasks with ``data``): the item id is ``data.id`` (as
      written by :func:`label_studio_tasks`), the label the ``choices`` result of the control
      ``question`` (``from_name``) in each non-cancelled annotation;
    * Argilla export (``dataset.records.to_json``: a list of records with ``fields``): the item id
      is the record ``id``, the label the submitted responses to the question ``question``;
    * CSV with an ``id`` column and an optional ``label`` column, JSON lines with ``id`` (and
      ``label``), or a plain list of ids, one per line.

    Several annotators: the majority label (a tie goes to the first given). Every item in the file
    is in ``ids`` (labeled or only queued); only annotated items are in ``labels``.

    Args:
        path: the file.
        tool: ``"auto"``, or the tool the file must come from (``"label-studio"``, ``"argilla"``):
            an export of the other tool is an error. Lists of ids (``"csv"``) are always accepted.
        question: the Label Studio ``from_name`` / Argilla question holding the class.
        label_names: when given, every label must be one of them.

    Raises:
        JacalError: missing or malformed file, an export of the wrong tool, an item labeled two
            ways, several choices in one annotation, or a label not in ``label_names``.
    """
    path = Path(path)
    if tool != "auto" and tool not in TOOLS:
        raise ValueError(f"Expected `tool` to be 'auto' or one of {list(TOOLS)}, got {tool!r}.")
    text = _read_text(path)
    head = text.lstrip()[:1]
    if head == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise JacalError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from err
        dicts = [d for d in data if isinstance(d, dict)]
        if dicts and all("data" in d for d in dicts):
            kind = "label-studio"
        elif dicts and all("fields" in d or "responses" in d for d in dicts):
            kind = "argilla"
        elif not data:
            kind = tool if tool != "auto" else "csv"
        else:
            raise JacalError(f"{path} is a JSON list but neither a Label Studio export (tasks with 'data') nor an "
                             "Argilla export (records with 'fields')")
        if tool in ("label-studio", "argilla") and kind != tool:
            raise JacalError(f"{path} is {_TOOL_NAMES[kind]}, not {_TOOL_NAMES[tool]} (the tool this batch is for)")
        if len(dicts) != len(data):
            raise JacalError(f"{path}: every entry of {_TOOL_NAMES[kind]} must be a JSON object")
        got = (_from_label_studio(path, data, question) if kind == "label-studio"
               else _from_argilla(path, data, question) if kind == "argilla" else _Collector(path))
    elif head == "{" and "\n" not in text.strip():
        raise JacalError(f"{path} is a single JSON object; expected a Label Studio or Argilla export (a JSON list), "
                         "JSON lines with 'id', or a CSV")
    else:
        kind, got = "csv", _from_rows(path, text)
    ann = Annotations(got.ids, got.labels, kind, str(path))
    if label_names is not None:
        ann.label_indices(label_names)
    return ann


def read_ids(path: Union[str, Path]) -> List[str]:
    """The item ids a file names: any format :func:`read_annotations` reads."""
    return read_annotations(path).ids


@dataclass
class LabeledItems:
    """Annotated pool items, decoded, ready to train on.

    Attributes:
        x: ``(M, ...)`` float items.
        y: ``(M,)`` int64 class indices.
        ids: the ``M`` item ids, in pool order.
        label_names: class names in class-index order.
        not_in_pool: labeled ids that name no pool item.
        unreadable: ``{id: reason}`` for labeled items that could not be read (skipped).
    """

    x: torch.Tensor
    y: torch.Tensor
    ids: List[str]
    label_names: List[str]
    not_in_pool: List[str]
    unreadable: Dict[str, str]


def labeled_items(pool: Pool, annotations: Annotations, label_names: Optional[Sequence[str]] = None) -> LabeledItems:
    """The pool items that ``annotations`` label, decoded, with their class indices.

    Args:
        pool: from :func:`open_pool`.
        annotations: from :func:`read_annotations`.
        label_names: class names in class-index order; ``None``: the labels must be class indices
            (``"0"``, ``"1"``, ...) and the names are ``0..max``.

    Raises:
        JacalError: a label not in ``label_names`` (or, without names, a label that is not an index).
    """
    if label_names is None:
        bad = sorted({lab for lab in annotations.labels.values() if not (lab.isascii() and lab.isdigit())})
        if bad:
            raise JacalError(f"{annotations.path} labels items with names ({', '.join(map(repr, bad[:5]))}), not class "
                             "indices: pass --label-names in class-index order")
        top = max((int(lab) for lab in annotations.labels.values()), default=-1)
        label_names = default_label_names(top + 1)
    index = annotations.label_indices(label_names)
    chosen, not_in_pool = pool.index_of(index)
    keep, xs, unreadable = [], [], {}
    for i in chosen:  # a labeled set is small next to the pool; each file is decoded once
        try:
            xi = pool.materialize([i])[0]
        except JacalError:
            unreadable[str(pool.ids[i])] = pool.problems([i]).get(i, "unreadable")
            continue
        if not torch.isfinite(xi).all():
            unreadable[str(pool.ids[i])] = "contains NaN/Inf values"
            continue
        keep.append(i)
        xs.append(xi)
    x = torch.stack(xs) if xs else torch.zeros((0, *pool.input_shape))
    y = torch.tensor([index[str(pool.ids[i])] for i in keep], dtype=torch.int64)
    return LabeledItems(x, y, [str(pool.ids[i]) for i in keep], list(label_names), not_in_pool, unreadable)


# ---------------------------------------------------------------------------------------------- batches

def _num(v: Any) -> Optional[float]:
    v = float(v)
    return v if math.isfinite(v) else None


def batch_rows(result: Any, ids: Sequence[Any]) -> List[dict]:
    """Rows of a batch file: ``id, rank, score, predicted, confidence`` for each pick, in rank order.

    Args:
        result: a :class:`jacal.AcquisitionResult`.
        ids: the pool's ids.
    """
    return [{"id": ids[i], "rank": r + 1, "score": float(result.scores[i]), "predicted": int(result.predicted[i]),
             "confidence": float(result.confidence[i])} for r, i in enumerate(result.indices)]


def _check_names(result: Any, label_names: Sequence[str]) -> None:
    top = int(max(result.predicted[result.indices].max(initial=-1), 0))
    if top >= len(label_names):
        raise JacalError(f"the model predicts class {top} but only {len(label_names)} label names are given")


def label_studio_tasks(result: Any, ids: Sequence[Any], *, label_names: Sequence[str], uris: Optional[Sequence[str]] = None,
                       from_name: str = "label", to_name: str = "image", model_version: str = "jacal") -> List[dict]:
    """Label Studio task-import JSON for the picks, each with the model's prediction as a pre-annotation.

    Each task: ``data`` holds ``image`` (the item's uri, for ``<Image name="image" value="$image"/>``),
    ``id`` (jacal's item id, read back from the export), ``al_score``, ``al_rank`` and ``strategy``
    (sortable columns in the Data Manager); ``predictions`` holds one prediction with
    ``model_version``, ``score`` = the model's confidence (max softmax; Label Studio orders by
    lowest score first, so the least confident come first) and a ``choices`` result from
    ``from_name`` to ``to_name`` with the predicted class name.
    Format: https://labelstud.io/guide/predictions and https://labelstud.io/guide/task_format

    Args:
        result: a :class:`jacal.AcquisitionResult`.
        ids: the pool's ids.
        label_names: class names in class-index order.
        uris: what Label Studio shows for each pool item (omitted when ``None``).
        from_name: the ``<Choices name=...>`` control.
        to_name: the object the choices label (``toName``).
        model_version: the prediction's model version.
    """
    _check_names(result, label_names)
    tasks = []
    for r, i in enumerate(result.indices):
        data = {"image": uris[i]} if uris is not None else {}
        data.update({"id": ids[i], "al_score": _num(result.scores[i]), "al_rank": r + 1, "strategy": result.strategy})
        tasks.append({"data": data, "predictions": [{
            "model_version": model_version, "score": _num(result.confidence[i]),
            "result": [{"from_name": from_name, "to_name": to_name, "type": "choices",
                        "value": {"choices": [label_names[int(result.predicted[i])]]}}]}]})
    return tasks


def argilla_records(result: Any, ids: Sequence[Any], *, label_names: Sequence[str], uris: Optional[Sequence[str]] = None,
                    question: str = "label", field: str = "image", model_version: str = "jacal") -> List[dict]:
    """Argilla records for the picks, in the layout of Argilla's own export (``Record.to_dict``), so
    ``rg.Record.from_dict`` / ``dataset.records.from_json`` read them.

    Each record: ``id`` (jacal's item id, as a string), ``fields`` ``{field: uri}``, ``metadata``
    ``{"al_score", "al_rank"}`` and ``suggestions`` ``{question: {"value": predicted class name,
    "score": confidence, "agent": model_version}}``.
    Format: https://docs.argilla.io/latest/reference/argilla/records/records and
    https://docs.argilla.io/latest/reference/argilla/records/suggestions

    Args:
        result: a :class:`jacal.AcquisitionResult`.
        ids: the pool's ids.
        label_names: class names in class-index order (the question's labels).
        uris: the image of each pool item (``fields`` is empty when ``None``).
        question: the label question's name.
        field: the image field's name.
        model_version: the suggestion's agent.
    """
    _check_names(result, label_names)
    return [{"id": str(ids[i]), "fields": {field: uris[i]} if uris is not None else {},
             "metadata": {"al_score": _num(result.scores[i]), "al_rank": r + 1},
             "suggestions": {question: {"value": label_names[int(result.predicted[i])],
                                        "score": _num(result.confidence[i]), "agent": model_version}}}
            for r, i in enumerate(result.indices)]


def write_rows(path: Union[str, Path], rows: List[dict], *, fmt: str, fields: Optional[Sequence[str]] = None) -> None:
    """Write ``rows`` as CSV (header ``fields``, default the first row's keys) or JSON lines, atomically."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"Expected `fmt` to be 'csv' or 'jsonl', got {fmt!r}.")
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        if fmt == "jsonl":
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            w = csv.DictWriter(f, fieldnames=list(fields if fields is not None else (rows[0] if rows else [])))
            w.writeheader()
            w.writerows(rows)


def write_batch(path: Union[str, Path], result: Any, ids: Sequence[Any], *, fmt: str,
                label_names: Optional[Sequence[str]] = None, uris: Optional[Sequence[str]] = None,
                from_name: str = "label", to_name: str = "image", model_version: str = "jacal") -> int:
    """Write the picks of ``result`` to ``path`` atomically, in ``fmt`` (one of :data:`BATCH_FORMATS`).

    ``csv`` / ``jsonl``: :func:`batch_rows`; ``label-studio``: :func:`label_studio_tasks`;
    ``argilla``: :func:`argilla_records` (``from_name`` is the question, ``to_name`` the field).
    Everything is built before the file is opened, so a failure leaves no file behind.

    Returns:
        The number of items written.
    """
    if fmt not in BATCH_FORMATS:
        raise ValueError(f"Expected `fmt` to be one of {list(BATCH_FORMATS)}, got {fmt!r}.")
    if fmt in ("csv", "jsonl"):
        rows = batch_rows(result, ids)
        write_rows(path, rows, fmt=fmt, fields=["id", "rank", "score", "predicted", "confidence"])
        return len(rows)
    if label_names is None:
        raise ValueError(f"format {fmt!r} needs `label_names`.")
    if fmt == "label-studio":
        out = label_studio_tasks(result, ids, label_names=label_names, uris=uris, from_name=from_name,
                                 to_name=to_name, model_version=model_version)
    else:
        out = argilla_records(result, ids, label_names=label_names, uris=uris, question=from_name, field=to_name,
                              model_version=model_version)
    with atomic_open(path, "w", encoding="utf-8") as f:  # a JSON list, one task or record per line
        f.write("[\n" + ",\n".join(json.dumps(t, ensure_ascii=False) for t in out) + "\n]\n")
    return len(out)


def model_version(checkpoint: Union[str, Path], metadata: Optional[dict] = None) -> str:
    """A model's version tag: ``metadata["model_version"]`` when present, else the checkpoint file's stem."""
    value = (metadata or {}).get("model_version")
    return str(value) if value else Path(checkpoint).stem
