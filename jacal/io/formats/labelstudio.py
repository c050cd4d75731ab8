"""Label Studio's JSON, both directions: task-import JSON with the model's predictions out
(:func:`label_studio_tasks`, and the result entries of the ML backend's predictions); its JSON
export back in (:func:`annotations_from_label_studio`).

Formats: https://labelstud.io/guide/task_format and https://labelstud.io/guide/predictions. A task is
``{"id", "data": {...}, "annotations": [{"result": [{"from_name", "to_name", "type": "choices",
"value": {"choices": [...]}}], "was_cancelled": bool, ...}], "predictions": [...]}`` (older versions
call ``annotations`` ``completions``); jacal's item id travels as ``data.id``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from jacal._internal.validation import JacalError
from jacal.io.formats.reasons import check_names, num, reason_data
from jacal.io.records import Annotations, Votes, single_choice

__all__ = ["label_studio_tasks", "annotations_from_label_studio"]


def choice_result(from_name: str, to_name: str, label: str) -> dict:
    """One ``choices`` result: the class ``label`` chosen in the control ``from_name`` for the object ``to_name``."""
    return {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}


def text_result(from_name: str, to_name: str, text: str) -> dict:
    """One ``textarea`` result: the line ``text`` in the text area ``from_name`` on the object ``to_name``."""
    return {"from_name": from_name, "to_name": to_name, "type": "textarea", "value": {"text": [text]}}


def is_export(entries: List[Dict[str, Any]]) -> bool:
    """Whether the JSON objects of a list are the tasks of a JSON export (each has ``data``)."""
    return bool(entries) and all("data" in d for d in entries)


def is_json_min(entries: List[Dict[str, Any]]) -> bool:
    """Whether they are rows of the JSON-MIN export (annotation fields, no task layout)."""
    return bool(entries) and all("data" not in d and ("annotator" in d or "annotation_id" in d or "lead_time" in d)
                                 for d in entries)


def key_tasks(tasks: List[Any]) -> List[Any]:
    """The tasks with jacal's item id in ``data.id``: a task imported without one is named by its
    Label Studio task id (``"task 12"``)."""
    keyed = []
    for t in tasks:
        if isinstance(t, dict) and isinstance(t.get("data"), dict) and "id" not in t["data"]:
            t = {**t, "data": {**t["data"], "id": f"task {t.get('id')}"}}
        keyed.append(t)
    return keyed


def label_studio_tasks(result: Any, ids: Sequence[Any], *, label_names: Sequence[str], uris: Optional[Sequence[str]] = None,
                       from_name: str = "label", to_name: str = "image", model_version: str = "jacal") -> List[dict]:
    """Label Studio task-import JSON for the picks, each with the model's prediction as a pre-annotation.

    Each task: ``data`` holds ``image`` (the item's uri, for ``<Image name="image" value="$image"/>``),
    ``id`` (jacal's item id, read back from the export), ``al_score``, ``al_rank`` and ``strategy``
    (sortable columns in the Data Manager), ``al_reason`` (why it was picked, one line) and the
    fields behind it as ``al_<field>`` (``al_runner_up`` as a class name, ``al_boundary_distance``...),
    so the Data Manager can show, sort and filter them; ``predictions`` holds one prediction with
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
    check_names(result, label_names)
    tasks = []
    for r, i in enumerate(result.indices):
        data = {"image": uris[i]} if uris is not None else {}
        data.update({"id": ids[i], "al_score": num(result.scores[i]), "al_rank": r + 1, "strategy": result.strategy})
        data.update(reason_data(result, r, prefix="al_", label_names=label_names))
        tasks.append({"data": data, "predictions": [{
            "model_version": model_version, "score": num(result.confidence[i]),
            "result": [choice_result(from_name, to_name, label_names[int(result.predicted[i])])]}]})
    return tasks


def votes_from_export(path: Path, tasks: List[Any], question: str) -> Votes:
    """The votes of a JSON export's tasks: the ``choices`` of the control ``question`` in each
    non-cancelled annotation; a cancelled one ("Skip" in the labeling screen) is a skip."""
    out, other_controls = Votes(path), set()
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
                votes.append(single_choice((r.get("value") or {}).get("choices"), f"{path}: an annotation of {item!r}"))
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


def annotations_from_label_studio(tasks: List[Any], *, question: str = "label", source: str = "label-studio",
                                  label_names: Optional[Sequence[str]] = None) -> Annotations:
    """:func:`read_annotations` on Label Studio tasks already in memory (an export fetched from its API).

    >>> t = {"data": {"id": "a"}, "annotations": [{"was_cancelled": True, "result": []}]}
    >>> annotations_from_label_studio([t]).out_of_set
    ['a']
    """
    if not isinstance(tasks, list):
        raise JacalError(f"{source}: expected a list of Label Studio tasks, got {type(tasks).__name__}")
    ann = votes_from_export(Path(source), tasks, question).result("label-studio")
    if label_names is not None:
        ann.label_indices(label_names)
    return ann
