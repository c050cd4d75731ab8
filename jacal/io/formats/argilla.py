"""Argilla's record JSON, both directions: records with the model's suggestions out
(:func:`argilla_records`), in the layout of Argilla's own export so ``rg.Record.from_dict`` /
``dataset.records.from_json`` read them; that export back in (:func:`votes_from_export`).

Argilla 2.x export (``dataset.records.to_json`` = ``Record.to_dict`` per record): ``{"id", "fields":
{...}, "metadata": {...}, "suggestions": {question: {"value", "score", "agent"}}, "responses":
{question: [{"value", "user_id"}]}, "vectors", "status", "_server_id"}``.
Format: https://docs.argilla.io/latest/reference/argilla/records/records (``argilla/records/_resource.py``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from jacal._internal.validation import JacalError
from jacal.io.formats.reasons import check_names, num, reason_data
from jacal.io.records import Votes, single_choice

__all__ = ["argilla_records"]


def is_export(entries: List[Dict[str, Any]]) -> bool:
    """Whether the JSON objects of a list are the records of an Argilla export (``fields`` or ``responses``)."""
    return bool(entries) and all("fields" in d or "responses" in d for d in entries)


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
    check_names(result, label_names)
    return [{"id": str(ids[i]), "fields": {field: uris[i]} if uris is not None else {},
             "metadata": {"al_score": num(result.scores[i]), "al_rank": r + 1,
                          **reason_data(result, r, prefix="al_", label_names=label_names)},
             "suggestions": {question: {"value": label_names[int(result.predicted[i])],
                                        "score": num(result.confidence[i]), "agent": model_version}}}
            for r, i in enumerate(result.indices)]


def votes_from_export(path: Path, records: List[Any], question: str) -> Votes:
    """The votes of an export's records: the submitted responses to ``question``; a discarded one is a skip."""
    out, other_questions = Votes(path), set()
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
                out.add(item, single_choice(r["value"], f"{path}: a response to {item!r}"))
    if not any(out.votes.values()) and other_questions:
        raise JacalError(f"{path} has no responses to the question {question!r} (found {', '.join(sorted(other_questions))}); "
                         "pass `question`")
    return out
