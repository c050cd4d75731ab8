"""Annotations back in: Label Studio and Argilla exports, CSV / JSON-lines label files and plain id
lists; label names to class indices; the labeled pool items decoded, ready to train on."""
from __future__ import annotations

import csv
import io as _stdio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from jacal._validation import JacalError
from jacal.io._files import read_jsonl as _read_jsonl, read_text as _read_text
from jacal.io.pools import Pool

__all__ = ["Annotations", "read_annotations", "read_ids", "parse_label_names", "default_label_names",
           "resolve_label_names", "LabeledItems", "labeled_items", "TOOLS"]

TOOLS = ("label-studio", "argilla", "csv")
_TOOL_NAMES = {"label-studio": "Label Studio JSON", "argilla": "Argilla JSON", "csv": "a list of ids"}


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


def resolve_label_names(given: Optional[Sequence[str]], stored: Optional[Sequence[str]] = None,
                        n_classes: Optional[int] = None) -> Optional[List[str]]:
    """The class names to write a model's predictions with: ``given``, else ``stored`` (a
    checkpoint's), else ``0..K-1`` (:func:`default_label_names`) when the model's ``n_classes`` is known.

    >>> resolve_label_names(None, None, 3)
    ['0', '1', '2']

    Returns:
        The names, or ``None`` when neither names nor the number of classes are known.

    Raises:
        JacalError: names that are not one per class.
    """
    names = given if given is not None else stored
    if names is None:
        return default_label_names(n_classes) if n_classes else None
    if n_classes is not None and len(names) != n_classes:
        raise JacalError(f"--label-names has {len(names)} names but the model has {n_classes} classes")
    return list(names)


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
