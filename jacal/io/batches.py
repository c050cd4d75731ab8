"""Batches out: the picks of an acquisition as CSV / JSON lines, Label Studio task-import JSON or
Argilla record JSON, always written atomically (each tool's shape: :mod:`jacal.io.formats`).

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

import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from jacal._internal.io import atomic_open
from jacal._internal.validation import JacalError
from jacal.io.formats.argilla import argilla_records
from jacal.io.formats.labelstudio import label_studio_tasks
from jacal.io.formats.reasons import reason_columns
from jacal.io.formats.tabular import BATCH_COLUMNS, batch_rows, write_rows

__all__ = ["write_batch", "model_version", "BATCH_FORMATS", "DEFAULT_MODEL_VERSION"]

BATCH_FORMATS = ("csv", "jsonl", "label-studio", "argilla")


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
