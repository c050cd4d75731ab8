"""Annotations back in: Label Studio and Argilla exports, CSV / JSON-lines label files and plain id
lists; label names to class indices; the labeled pool items decoded, ready to train on.

An item an annotator says is outside the label set (the reserved choice :data:`NONE_OF_THESE`, a
skipped / cancelled Label Studio annotation, a discarded Argilla response) is *out of set*: listed
in :attr:`Annotations.out_of_set`, never in :attr:`Annotations.labels`, so it is excluded from the
next batch but never trained on as a class."""
from __future__ import annotations

import csv
import io as _stdio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch

from jacal._validation import JacalError
from jacal.io._files import read_jsonl as _read_jsonl, read_text as _read_text
from jacal.io.pools import Pool

__all__ = ["Annotations", "read_annotations", "read_ids", "parse_label_names", "LabeledItems", "labeled_items", "TOOLS", "NONE_OF_THESE", "is_none_of_these",
           "merge_annotations", "read_all_annotations", "annotations_from_label_studio"]

TOOLS = ("label-studio", "argilla", "csv")
#: The reserved answer "this item is outside the label set" (a ``<Choice>`` of the labeling config, a
#: label of a CSV row); compared without case and surrounding spaces (:func:`is_none_of_these`).
NONE_OF_THESE = "none of these"
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
        raise JacalError(f"`label_names` must be comma-separated non-empty names, got {text!r}")
    if any(is_none_of_these(n) for n in names):
        raise JacalError(f"`label_names` must not hold {NONE_OF_THESE!r}: it is the reserved answer for items outside "
                         "the label set, never a class")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise JacalError(f"`label_names` repeats {', '.join(map(repr, dup))}")
    return names


def is_none_of_these(label: Any) -> bool:
    """Whether ``label`` is the reserved answer :data:`NONE_OF_THESE` (any case, spaces around ignored).

    >>> is_none_of_these(" None of these"), is_none_of_these("nine")
    (True, False)
    """
    return isinstance(label, str) and label.strip().casefold() == NONE_OF_THESE


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
        raise JacalError(f"`label_names` has {len(names)} names but the model has {n_classes} classes")
    return list(names)


@dataclass
class Annotations:
    """What a labeling tool's export (or a list of ids) says about pool items.

    Attributes:
        ids: every item id the file names, labeled or only queued, in file order (unique).
        labels: ``{id: label name}`` for the items with a class label (majority of the votes).
        tool: ``"label-studio"``, ``"argilla"`` or ``"csv"`` (CSV, JSON lines or a plain id list).
        path: the file read (several, comma-separated, after :func:`merge_annotations`).
        out_of_set: ids answered "outside the label set" (:data:`NONE_OF_THESE` won the vote, or
            every annotation was a skip), in file order; never in ``labels``.
        counts: ``{file: number of ids it named}`` (one entry per file merged).
    """

    ids: List[str]
    labels: Dict[str, str]
    tool: str
    path: str = ""
    out_of_set: List[str] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)

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
                                 f"names ({shown}); set them with `label_names`")
        return {item: index[label] for item, label in self.labels.items()}


def _majority(votes: List[str]) -> str:
    """The most frequent label; a tie goes to the one given first."""
    return max(dict.fromkeys(votes), key=votes.count)


class _Collector:
    """Votes per item: class labels, :data:`NONE_OF_THESE` and skips; the majority decides at the end."""

    def __init__(self, path: Path) -> None:
        self.path, self.ids, self.votes, self.skipped = path, [], {}, set()

    def add(self, item: str, label: Optional[str]) -> None:
        if item not in self.votes:
            self.votes[item] = []
            self.ids.append(item)
        if label is not None:
            self.votes[item].append(NONE_OF_THESE if is_none_of_these(label) else label)

    def skip(self, item: str) -> None:
        """An annotator skipped the item (cancelled / discarded): out of set unless someone labeled it."""
        self.add(item, None)
        self.skipped.add(item)

    def result(self, tool: str) -> Annotations:
        labels, out_of_set = {}, []
        for item in self.ids:
            votes = self.votes[item]
            winner = _majority(votes) if votes else (NONE_OF_THESE if item in self.skipped else None)
            if winner == NONE_OF_THESE:
                out_of_set.append(item)
            elif winner is not None:
                labels[item] = winner
        return Annotations(self.ids, labels, tool, str(self.path), out_of_set, {str(self.path): len(self.ids)})


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
                             "item id); export the project that jacal's Label Studio tasks went into")
        item = str(data["id"])
        votes, skipped = [], False
        for ann in (task.get("annotations") or task.get("completions") or []):
            if not isinstance(ann, dict):
                continue
            if ann.get("was_cancelled"):  # "Skip" in Label Studio's labeling screen
                skipped = True
                continue
            for r in ann.get("result") or []:
                if not isinstance(r, dict) or r.get("type") != "choices":
                    continue
                if r.get("from_name") != question:
                    other_controls.add(str(r.get("from_name")))
                    continue
                votes.append(_single_choice((r.get("value") or {}).get("choices"), f"{path}: an annotation of {item!r}"))
                break
        out.add(item, None)
        for vote in votes:
            out.add(item, vote)
        if skipped:
            out.skip(item)
    if not any(out.votes.values()) and other_controls:
        raise JacalError(f"{path} has no choices from the control {question!r} (found {', '.join(sorted(other_controls))}); "
                         "pass `question`")
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
        answers = [r for r in responses.get(question) or [] if isinstance(r, dict)]
        out.add(item, None)
        for r in answers:
            if r.get("status", "submitted") == "discarded":
                out.skip(item)
            elif r.get("value") is not None and r.get("status", "submitted") == "submitted":
                out.add(item, _single_choice(r["value"], f"{path}: a response to {item!r}"))
    if not any(out.votes.values()) and other_questions:
        raise JacalError(f"{path} has no responses to the question {question!r} (found {', '.join(sorted(other_questions))}); "
                         "pass `question`")
    return out


def _from_rows(path: Path, text: str, question: str) -> _Collector:
    # CSV / TSV / JSON lines: one row per item, or one per annotation (Label Studio's CSV and TSV exports:
    # a row per annotation, the label in the column named after the <Choices> control): votes pooled per id
    out = _Collector(path)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return out
    if lines[0].lstrip().startswith("{"):
        for row in _read_jsonl(path, text, "an object per line with 'id' (and 'label')"):
            if row.get("id") in (None, ""):
                raise JacalError(f"{path}: a line has no 'id'")
            label = row.get(question, row.get("label"))
            out.add(str(row["id"]), None if label in (None, "") else str(label))
        return out
    tab = path.suffix.lower() == ".tsv" or ("\t" in lines[0] and "id" in [c.strip() for c in lines[0].split("\t")])
    delimiter = "\t" if tab else ","
    header = [c.strip() for c in next(csv.reader([lines[0]], delimiter=delimiter))]
    if "id" in header:
        reader = csv.reader(_stdio.StringIO(text, newline=""), delimiter=delimiter)
        next(reader)
        col = header.index("id")
        lab = header.index(question) if question in header else header.index("label") if "label" in header else None
        for row in reader:
            if not row or col >= len(row) or row[col] == "":
                continue
            label = row[lab] if lab is not None and lab < len(row) and row[lab] != "" else None
            out.add(row[col], label)
        return out
    if len(header) > 1:
        raise JacalError(f"{path} is a {'TSV' if tab else 'CSV'} without an 'id' column")
    if "\t" in lines[0]:
        raise JacalError(f"{path} is tab-separated without an 'id' column; export it as CSV or JSON with jacal's id "
                         "(data.id)")
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

    Several annotators (JSON, or a CSV / TSV export with one row per annotation): the majority
    label (a tie goes to the first given). Every item in the file is in ``ids`` (labeled or only
    queued); only items with a class label are in ``labels``. The answer "outside the label set"
    (:data:`NONE_OF_THESE` as the choice or label, or only skipped / discarded annotations) puts an
    item in ``out_of_set`` instead. Label Studio's JSON-MIN export is refused (it names the export
    to use).

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
        elif dicts and all("data" not in d and ("annotator" in d or "annotation_id" in d or "lead_time" in d)
                           for d in dicts):
            raise JacalError(f"{path} is Label Studio's JSON-MIN export, which drops the task layout jacal reads; "
                             "export the project as JSON (with all tasks, queued ones included) instead")
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
        kind, got = "csv", _from_rows(path, text, question)
    ann = got.result(kind)
    if label_names is not None:
        ann.label_indices(label_names)
    return ann


def annotations_from_label_studio(tasks: List[Any], *, question: str = "label", source: str = "label-studio",
                                  label_names: Optional[Sequence[str]] = None) -> Annotations:
    """:func:`read_annotations` on Label Studio tasks already in memory (an export fetched from its API).

    >>> t = {"data": {"id": "a"}, "annotations": [{"was_cancelled": True, "result": []}]}
    >>> annotations_from_label_studio([t]).out_of_set
    ['a']
    """
    if not isinstance(tasks, list):
        raise JacalError(f"{source}: expected a list of Label Studio tasks, got {type(tasks).__name__}")
    ann = _from_label_studio(Path(source), tasks, question).result("label-studio")
    if label_names is not None:
        ann.label_indices(label_names)
    return ann


def merge_annotations(parts: Sequence[Annotations]) -> Annotations:
    """Several files' annotations as one: the union of their ids (first-seen order); for an item two
    files answer, the later file's answer (label or out of set) replaces the earlier one's.

    >>> a = Annotations(["x", "y"], {"x": "one"}, "csv", "a.csv", [], {"a.csv": 2})
    >>> b = Annotations(["y", "z"], {"z": "two"}, "csv", "b.csv", ["y"], {"b.csv": 2})
    >>> m = merge_annotations([a, b])
    >>> m.ids, m.labels, m.out_of_set, m.counts
    (['x', 'y', 'z'], {'x': 'one', 'z': 'two'}, ['y'], {'a.csv': 2, 'b.csv': 2})
    """
    if not parts:
        raise ValueError("Expected at least one Annotations to merge, got none.")
    if len(parts) == 1:
        return parts[0]
    ids: Dict[str, None] = {}
    answer: Dict[str, Optional[str]] = {}
    counts: Dict[str, int] = {}
    for part in parts:
        ids.update(dict.fromkeys(part.ids))
        answer.update(part.labels)
        answer.update(dict.fromkeys(part.out_of_set))  # None: out of set (a part never answers an item both ways)
        for name, n in part.counts.items():
            counts[name] = counts.get(name, 0) + n
    tools = {part.tool for part in parts}
    return Annotations(list(ids), {i: v for i, v in answer.items() if v is not None},
                       tools.pop() if len(tools) == 1 else "mixed", ", ".join(part.path for part in parts),
                       [i for i in ids if i in answer and answer[i] is None], counts)


def read_all_annotations(paths: Union[str, Path, Iterable[Union[str, Path]]], **kwargs: Any) -> Annotations:
    """:func:`read_annotations` of each file (same keywords), merged by :func:`merge_annotations`."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return merge_annotations([read_annotations(p, **kwargs) for p in paths])


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
                             "indices: pass `label_names` in class-index order")
        top = max((int(lab) for lab in annotations.labels.values()), default=-1)
        label_names = default_label_names(top + 1)
    index = annotations.label_indices(label_names)
    chosen, not_in_pool = pool.index_of(index)
    keep, x, unreadable = pool.readable(chosen)
    y = torch.tensor([index[str(pool.ids[i])] for i in keep], dtype=torch.int64)
    return LabeledItems(x, y, [str(pool.ids[i]) for i in keep], list(label_names), not_in_pool, unreadable)
