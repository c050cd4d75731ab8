"""Batches out: the picks of an acquisition as CSV / JSON lines, Label Studio task-import JSON or
Argilla record JSON, always written atomically.

Every format carries each pick's ``rank`` and ``score`` (Label Studio: ``al_rank``, ``al_score``).
``rank`` is the order to label in (1 = first). ``score`` is the strategy's per-item score of that
item (:attr:`jacal.AcquisitionResult.scores`, higher = more wanted), which is *not* always
decreasing with rank:

=========================================== ================================== ==============================
strategy                                    score                              rank
=========================================== ================================== ==============================
``least-confidence``, ``margin``,           the uncertainty (``1 − p_max``,    highest score first: scores
``entropy``, ``bald``                       ``−(p₁ − p₂)``, entropy, mutual    fall with rank
                                            information)
``jacobian-topk``                           ‖∂softmax/∂x‖_F                    highest score first
``random``                                  a seeded uniform draw              highest draw first
``jacobian`` (and its variants)             ‖v(x)‖ = 1 / first-order distance  the k-means++ draw order over
                                            to the decision boundary           the boundary embeddings
``jacobian-kmeans``                         ‖∂softmax/∂x‖_F                    the k-means++ draw order over
                                                                               the softmax Jacobians
``badge``                                   the gradient-embedding norm        the k-means++ draw order over
                                            ‖p − onehot(ŷ)‖·‖h‖                the gradient embeddings
``ldm-s``                                   −LDM (higher = nearer the          the weighted k-means++ draw
                                            boundary)                          order
``coreset``                                 distance to the nearest labeled    the k-center greedy order
                                            item's embedding                   (farthest from the batch so
                                                                               far first)
=========================================== ================================== ==============================

For the k-means++ and k-center strategies a pick is drawn for how far it lies from the picks
before it, so rank 2 can score far below rank 1: the order spreads the batch, the score says how
wanted each item is on its own. Neither is re-sorted, so the file keeps the strategy's order.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from jacal._io import atomic_open
from jacal._validation import JacalError

__all__ = ["batch_rows", "reason_columns", "reason_data", "BATCH_COLUMNS", "label_studio_tasks", "argilla_records",
           "write_rows", "write_batch", "model_version", "BATCH_FORMATS", "DEFAULT_MODEL_VERSION"]

BATCH_FORMATS = ("csv", "jsonl", "label-studio", "argilla")


def _num(v: Any) -> Optional[float]:
    v = float(v)
    return v if math.isfinite(v) else None


#: The columns every batch file starts with.
BATCH_COLUMNS = ("id", "rank", "score", "predicted", "confidence")


def reason_columns(result: Any) -> List[str]:
    """The reason columns of ``result``'s batch: ``reason`` then its structured fields (those of
    :data:`jacal.acquisition.reasons.REASON_FIELDS` it has), empty for a result without reasons."""
    from jacal.acquisition.reasons import REASON_FIELDS

    fields = getattr(result, "reason_fields", None) or {}
    if not getattr(result, "reasons", None):
        return []
    return ["reason"] + [f for f in REASON_FIELDS if f in fields]


def _reason_value(result: Any, name: str, r: int) -> Any:
    """Pick ``r``'s (rank order) reason field ``name``, as JSON-safe Python (ints stay ints)."""
    if name == "reason":
        return result.reasons[r]
    v = result.reason_fields[name][r]
    return int(v) if name == "runner_up" else _num(v)


def reason_data(result: Any, r: int, *, prefix: str = "", label_names: Optional[Sequence[str]] = None) -> dict:
    """Pick ``r``'s (rank order) reason and fields as ``{prefix + name: value}``; with
    ``label_names`` the runner-up is its class name."""
    out = {}
    for name in reason_columns(result):
        v = _reason_value(result, name, r)
        if name == "runner_up" and label_names is not None and 0 <= v < len(label_names):
            v = label_names[v]
        out[prefix + name] = v
    return out


def batch_rows(result: Any, ids: Sequence[Any]) -> List[dict]:
    """Rows of a batch file: ``id, rank, score, predicted, confidence``, then the pick's ``reason``
    and its structured fields (:func:`reason_columns`), for each pick in rank order.

    ``rank`` is the strategy's order (1 = label first), ``score`` the strategy's per-item score of the
    pick (what each strategy's score and rank mean: the module docstring's table; for the k-means++
    and k-center strategies the score does not fall with rank), ``predicted`` the model's class
    index and ``confidence`` its max softmax probability.

    Args:
        result: a :class:`jacal.AcquisitionResult`.
        ids: the pool's ids.
    """
    return [{"id": ids[i], "rank": r + 1, "score": float(result.scores[i]), "predicted": int(result.predicted[i]),
             "confidence": float(result.confidence[i]), **reason_data(result, r)} for r, i in enumerate(result.indices)]


def _check_names(result: Any, label_names: Sequence[str]) -> None:
    top = int(max(result.predicted[result.indices].max(initial=-1), 0))
    if top >= len(label_names):
        raise JacalError(f"the model predicts class {top} but only {len(label_names)} label names are given")


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
    _check_names(result, label_names)
    tasks = []
    for r, i in enumerate(result.indices):
        data = {"image": uris[i]} if uris is not None else {}
        data.update({"id": ids[i], "al_score": _num(result.scores[i]), "al_rank": r + 1, "strategy": result.strategy})
        data.update(reason_data(result, r, prefix="al_", label_names=label_names))
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
    ``{"al_score", "al_rank", "al_reason", "al_<field>"...}`` (the reason and its fields) and ``suggestions`` ``{question: {"value": predicted class name,
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
             "metadata": {"al_score": _num(result.scores[i]), "al_rank": r + 1,
                          **reason_data(result, r, prefix="al_", label_names=label_names)},
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

    ``csv`` / ``jsonl``: :func:`batch_rows` (header ``id, rank, score, predicted, confidence``; what
    ``rank`` and ``score`` mean per strategy: the module docstring); ``label-studio``: :func:`label_studio_tasks`;
    ``argilla``: :func:`argilla_records` (``from_name`` is the question, ``to_name`` the field).
    Everything is built before the file is opened, so a failure leaves no file behind.

    Returns:
        The number of items written.
    """
    if fmt not in BATCH_FORMATS:
        raise ValueError(f"Expected `fmt` to be one of {list(BATCH_FORMATS)}, got {fmt!r}.")
    if fmt in ("csv", "jsonl"):
        rows = batch_rows(result, ids)
        write_rows(path, rows, fmt=fmt, fields=[*BATCH_COLUMNS, *reason_columns(result)])
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


DEFAULT_MODEL_VERSION = "jacal"


def model_version(checkpoint: Union[str, Path, None] = None, metadata: Optional[dict] = None) -> str:
    """A model's version tag: ``metadata["model_version"]`` when present, else :data:`DEFAULT_MODEL_VERSION`.

    Not the checkpoint's file name: a Label Studio project shows the predictions of one model
    version, so a tag that changed every round (``model1``, ``model2``...) would hide each new
    round's pre-annotations behind the first round's version. ``checkpoint`` is accepted for
    compatibility and not used.

    >>> model_version("runs/model3.pt"), model_version("m.pt", {"model_version": "digits-mlp"})
    ('jacal', 'digits-mlp')
    """
    value = (metadata or {}).get("model_version")
    return str(value) if value else DEFAULT_MODEL_VERSION


def output_format(path: Union[str, Path], fmt: Optional[str] = None, allowed: Sequence[str] = ("csv", "jsonl")) -> str:
    """The format to write ``path`` in: ``fmt`` when given, else ``path``'s suffix; one of ``allowed``.

    >>> output_format("batch.JSONL")
    'jsonl'

    Raises:
        JacalError: neither names one of ``allowed`` (the message names ``fmt`` and the formats it takes).
    """
    kind = fmt if fmt is not None else Path(path).suffix.lstrip(".").lower()
    if kind not in allowed:
        raise JacalError(f"cannot tell the format of {path}; pass `fmt` ({' or '.join(allowed)})")
    return kind
