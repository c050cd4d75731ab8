"""Annotations back in: which tool's export a file is (Label Studio or Argilla JSON, CSV / TSV /
JSON-lines label files, plain id lists), read by that tool's module under :mod:`jacal.io.formats`,
and several files read as one."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Union

from jacal._internal.validation import JacalError
from jacal.io._files import read_text as _read_text
from jacal.io.formats import argilla, labelstudio, tabular
from jacal.io.records import Annotations, Votes, merge_annotations

__all__ = ["read_annotations", "read_all_annotations", "read_ids", "TOOLS"]

TOOLS = ("label-studio", "argilla", "csv")
_TOOL_NAMES = {"label-studio": "Label Studio JSON", "argilla": "Argilla JSON", "csv": "a list of ids"}


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
        if labelstudio.is_export(dicts):
            kind = "label-studio"
        elif labelstudio.is_json_min(dicts):
            raise JacalError(f"{path} is Label Studio's JSON-MIN export, which drops the task layout jacal reads; "
                             "export the project as JSON (with all tasks, queued ones included) instead")
        elif argilla.is_export(dicts):
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
        got = (labelstudio.votes_from_export(path, data, question) if kind == "label-studio"
               else argilla.votes_from_export(path, data, question) if kind == "argilla" else Votes(path))
    elif head == "{" and "\n" not in text.strip():
        raise JacalError(f"{path} is a single JSON object; expected a Label Studio or Argilla export (a JSON list), "
                         "JSON lines with 'id', or a CSV")
    else:
        kind, got = "csv", tabular.votes_from_rows(path, text, question)
    ann = got.result(kind)
    if label_names is not None:
        ann.label_indices(label_names)
    return ann


def read_all_annotations(paths: Union[str, Path, Iterable[Union[str, Path]]], **kwargs: Any) -> Annotations:
    """:func:`read_annotations` of each file (same keywords), merged by :func:`merge_annotations`."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return merge_annotations([read_annotations(p, **kwargs) for p in paths])


def read_ids(path: Union[str, Path]) -> List[str]:
    """The item ids a file names: any format :func:`read_annotations` reads."""
    return read_annotations(path).ids
