"""Why each pick was picked, as the fields every batch format carries: ``reason`` (one line) and the
structured fields behind it (:data:`jacal.acquisition.reasons.REASON_FIELDS`), JSON-safe."""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

from jacal._internal.validation import JacalError

__all__ = ["reason_columns", "reason_data"]


def num(v: Any) -> Optional[float]:
    """``v`` as a float, ``None`` when it is not finite (JSON has no NaN)."""
    v = float(v)
    return v if math.isfinite(v) else None


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
    return int(v) if name == "runner_up" else num(v)


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


def check_names(result: Any, label_names: Sequence[str]) -> None:
    """Refuse ``label_names`` that do not name every class the picks are predicted as."""
    top = int(max(result.predicted[result.indices].max(initial=-1), 0))
    if top >= len(label_names):
        raise JacalError(f"the model predicts class {top} but only {len(label_names)} label names are given")
