"""One round of a stopping criterion whose state is carried in a JSON file (``jacal stop``, and
``jacal acquire --stop-set``): the same model file twice in a row is not a new round."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from jacal import io as jio
from jacal._internal.io import atomic_open
from jacal._internal.validation import JacalError
from jacal.pipeline._common import PathLike


def _file_digest(path: PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stop_advice(model: Any, stop_set: PathLike, state: PathLike, *, criterion: Optional[str] = None,
                model_file: Optional[PathLike] = None, labeled: Optional[int] = None, picked: Any = None,
                input_shape: Optional[Sequence[int]] = None, image_size=None, channels=None, batch_size: int = 256,
                device: Any = "auto") -> dict:
    """One round of a stopping criterion carried in a state file: load it (or start ``criterion``),
    observe ``model`` on the items at ``stop_set``, write the state back atomically, return the advice.

    The same model twice in a row (``model_file``'s bytes unchanged, e.g. a batch acquired again)
    does not count as a round: the last advice is returned and the state is left as it was.
    """
    advice, payload = _stop_round(model, stop_set, state, criterion=criterion, model_file=model_file, labeled=labeled,
                                  picked=picked, input_shape=input_shape, image_size=image_size, channels=channels,
                                  batch_size=batch_size, device=device)
    _write_stop_state(state, payload)
    return advice


def _write_stop_state(state: PathLike, payload: Optional[dict]) -> None:
    if payload is not None:
        with atomic_open(state, "w", encoding="utf-8") as f:
            f.write(json.dumps(payload))


def _stop_round(model, stop_set, state, *, criterion, model_file, labeled, picked, input_shape, image_size, channels,
                batch_size, device):
    """``(advice dict, state to write or None)`` for one round; nothing is written here."""
    from jacal import stopping

    state = Path(state)
    if state.exists():
        crit = stopping.load_state(state)
        if criterion is not None and criterion != crit.name:
            raise JacalError(f"`stop_criterion` {criterion!r} differs from the criterion in {state} ({crit.name!r}); "
                             "start a new `stop_state` file to change criterion")
        last = json.loads(state.read_text(encoding="utf-8")).get("last", {})
    else:
        if criterion is not None and criterion not in stopping.CRITERIA:
            raise JacalError(f"`stop_criterion` must be one of {list(stopping.CRITERIA)}, got {criterion!r}")
        if criterion == "budget":
            raise JacalError("`stop_criterion` budget needs a label budget: count the labels instead")
        crit = stopping.criterion(criterion)
        last = {}
    digest = _file_digest(model_file) if model_file is not None else None
    if digest is not None and last.get("model") == digest and last.get("advice"):
        return {**last["advice"], "repeated": True,
                "note": "the same model as the last round: advice repeated, state unchanged"}, None
    if not Path(stop_set).exists():
        raise JacalError(f"`stop_set` not found: {stop_set}")
    watched = jio.open_pool(stop_set, image_size=image_size, channels=channels, input_shape=input_shape)
    try:
        advice = crit.update(model, watched.items, labeled=labeled, picked=picked, batch_size=batch_size,
                             device=device)
    except ValueError as e:
        raise JacalError(f"`stop_set`: {e}") from None
    out = advice.to_dict()
    return out, {**crit.state_dict(), "last": {"model": digest, "advice": out}}
