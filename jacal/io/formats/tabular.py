"""Tabular files, both directions: batch rows out as CSV or JSON lines (:func:`batch_rows`,
:func:`write_rows`); CSV / TSV / JSON-lines label files and plain id lists back in
(:func:`votes_from_rows`), Label Studio's CSV and TSV exports included (a row per annotation, the
label in the column named after the ``<Choices>`` control)."""
from __future__ import annotations

import csv
import io as _stdio
import json
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from jacal._internal.io import atomic_open
from jacal._internal.validation import JacalError
from jacal.io._files import read_jsonl as _read_jsonl
from jacal.io.formats.reasons import reason_data
from jacal.io.records import Votes

__all__ = ["BATCH_COLUMNS", "batch_rows", "write_rows"]

#: The columns every batch file starts with.
BATCH_COLUMNS = ("id", "rank", "score", "predicted", "confidence")


def batch_rows(result: Any, ids: Sequence[Any]) -> List[dict]:
    """Rows of a batch file: ``id, rank, score, predicted, confidence``, then the pick's ``reason``
    and its structured fields (:func:`jacal.io.formats.reasons.reason_columns`), for each pick in rank order.

    ``rank`` is the strategy's order (1 = label first), ``score`` the strategy's per-item score of the
    pick (what each strategy's score and rank mean: the table in :mod:`jacal.io.batches`; for the k-means++
    and k-center strategies the score does not fall with rank), ``predicted`` the model's class
    index and ``confidence`` its max softmax probability.

    Args:
        result: a :class:`jacal.AcquisitionResult`.
        ids: the pool's ids.
    """
    return [{"id": ids[i], "rank": r + 1, "score": float(result.scores[i]), "predicted": int(result.predicted[i]),
             "confidence": float(result.confidence[i]), **reason_data(result, r)} for r, i in enumerate(result.indices)]


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


def votes_from_rows(path: Path, text: str, question: str) -> Votes:
    """The votes of a CSV / TSV / JSON-lines file (``text``, read from ``path``): one row per item, or
    one per annotation, pooled per id; the label is the column ``question``, else ``label``. A file
    without an ``id`` column is a plain list of ids, one per line."""
    out = Votes(path)
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
