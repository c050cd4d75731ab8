"""Stop advice across model versions: ``jacal serve`` watches a fixed stop set of unlabeled items
with a stopping criterion (:mod:`jacal.stopping`) and advises, once per model version, whether
another round of labels still changes the model.

* :meth:`StopTracker.load` checks everything at start (the criterion's name, the stop set's file,
  its items' shape against the model's input, the saved state) and raises one line naming the
  parameter, so a bad setting stops the server before it serves;
* :meth:`StopTracker.advise` observes a version's model on the stop set: a version already observed
  (a restart) is answered from the state, not counted again; a new one is one round of the
  criterion, written to ``STATE_DIR/stop.json`` atomically and durably before it is answered;
* :meth:`StopTracker.status` is what ``/health`` shows: the last advice and one line per version.

The state file::

    {"schema": 1, "criterion": {...the criterion's state_dict()...}, "stop_set": {"path", "n"},
     "history": [{"model_version", "round", "stop", "value", "reason", "labeled"}, ...]}
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import torch

from jacal._internal.io import atomic_open
from jacal._internal.validation import JacalError, first_line, nonfinite_rows

__all__ = ["StopTracker", "STOP_FILE"]

#: the stop advice's file in the state folder
STOP_FILE = "stop.json"
STOP_SCHEMA = 1
#: versions kept in the history (the criterion's own state is kept whole)
MAX_HISTORY = 500

log = logging.getLogger("jacal.serve")


class StopTracker:
    """One stopping criterion carried across a server's model versions.

    Args:
        folder: the server's state folder (the advice is kept in ``folder/stop.json``).
        stop_set: the stop set's file or folder (read as ``jacal acquire`` reads a pool: ``.npy``,
            ``.npz``, ``.pt``, an image folder or a manifest), the same items at every version.
        criterion: a name in :data:`jacal.stopping.CRITERIA` (``None``: the saved state's, else
            jacal's default). ``budget`` is refused: it needs a label budget, not a stop set.
        input_shape: the model's ``(C, H, W)`` (images are resized to it).
        device: where the stop set is scored.
    """

    def __init__(self, folder: Union[str, Path], stop_set: Union[str, Path], *, criterion: Optional[str] = None,
                 input_shape: Sequence[int], device: Any = "cpu") -> None:
        self.folder = Path(folder)
        self.stop_set = Path(stop_set)
        self.criterion_name = criterion
        self.input_shape = tuple(int(s) for s in input_shape)
        self.device = device

    @property
    def path(self) -> Path:
        return self.folder / STOP_FILE

    def load(self) -> "StopTracker":
        """Check the settings, read the stop set and the saved state (if any).

        Raises:
            JacalError: an unknown or unusable criterion, a missing or unreadable stop set, items
                of another shape than the model's input, a damaged state file, or a state of
                another criterion or another stop set size.
        """
        from jacal import io as jio
        from jacal import stopping

        name = self.criterion_name
        if name is not None and name not in stopping.CRITERIA:
            raise JacalError(f"`stop_criterion` must be one of {list(stopping.CRITERIA)}, got {name!r}")
        if name == "budget":
            raise JacalError("`stop_criterion` budget needs a label budget, not a stop set: choose another criterion")
        if not self.stop_set.exists():
            raise JacalError(f"`stop_set` not found: {self.stop_set}")
        try:
            pool = jio.open_pool(self.stop_set, input_shape=self.input_shape)
            items = pool.materialize()
        except (JacalError, ValueError, OSError) as err:
            raise JacalError(f"`stop_set` {self.stop_set} cannot be read: {first_line(err, 300)}") from None
        if tuple(items.shape[1:]) != self.input_shape:
            raise JacalError(f"`stop_set` items have shape {tuple(items.shape[1:])}, the model takes "
                             f"{self.input_shape}")
        n = int((~nonfinite_rows(items)).sum()) if len(items) else 0
        if n == 0:
            raise JacalError(f"`stop_set` {self.stop_set} has no item with finite values")
        self.items_ = items
        self.history_: List[dict] = []
        if self.path.exists():
            crit, history = self._read(stopping)
            if name is not None and name != crit.name:
                raise JacalError(f"`stop_criterion` {name!r} differs from the criterion in {self.path} "
                                 f"({crit.name!r}); move the file away to start the advice over with another one")
            seen = crit.memory_.get("n")
            if seen is not None and seen != n:
                raise JacalError(f"`stop_set` {self.stop_set} has {n} usable items, the stop advice in {self.path} "
                                 f"watched {seen}: use the same stop set, or move the file away to start over")
            self.crit_, self.history_ = crit, history
        else:
            self.crit_ = stopping.criterion(name)
        self._status = self._summary()
        return self

    def _read(self, stopping: Any):
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise JacalError(f"{self.path} is damaged ({first_line(err, 200)}); move it away to start the stop "
                             "advice over") from None
        if not isinstance(data, dict) or data.get("schema") != STOP_SCHEMA or not isinstance(data.get("history"), list) \
                or not isinstance(data.get("criterion"), dict):
            raise JacalError(f"{self.path} is not a jacal serve stop state of schema {STOP_SCHEMA}; move it away "
                             "to start the stop advice over")
        state = data["criterion"]
        if state.get("criterion") not in stopping.CRITERIA:
            raise JacalError(f"{self.path} names no known criterion (expected one of {list(stopping.CRITERIA)})")
        try:
            crit = stopping.criterion(state["criterion"]).load_state_dict(state)
        except (ValueError, TypeError) as err:
            raise JacalError(f"{self.path}: {first_line(err, 300)}") from None
        history = [h for h in data["history"] if isinstance(h, dict) and isinstance(h.get("model_version"), str)]
        return crit, history

    def _save(self) -> None:
        payload = {"schema": STOP_SCHEMA, "criterion": self.crit_.state_dict(),
                   "stop_set": {"path": str(self.stop_set), "n": self.crit_.memory_.get("n")},
                   "history": self.history_[-MAX_HISTORY:]}
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path, "w", durable=True, encoding="utf-8") as f:
            json.dump(payload, f, indent=1)

    def advise(self, model: torch.nn.Module, version: str, *, labeled: Optional[int] = None) -> dict:
        """The advice for ``version`` (its ``model``): from the state when that version was already
        observed, else one new round of the criterion, saved before it is returned and logged in one
        line ("model jacal.3: keep labeling (settled-predictions, round 3): continue: ...").

        Raises:
            JacalError: the criterion refused the observation (e.g. the stop set's items gave no
                finite output); the state is left as it was.
        """
        done = [h for h in self.history_ if h["model_version"] == version]
        if done:
            return self.status()
        try:
            advice = self.crit_.update(model, self.items_, labeled=labeled, device=self.device)
        except ValueError as err:
            raise JacalError(f"stop advice for model {version}: {first_line(err, 300)}") from None
        d = advice.to_dict()
        self.history_.append({"model_version": version, "round": d["round"], "stop": d["stop"], "value": d["value"],
                              "reason": d["reason"], "labeled": d["labeled"]})
        self._save()
        self._status = self._summary()
        log.info("model %s: %s (%s, round %d): %s", version, "stop labeling" if advice.stop else "keep labeling",
                 advice.criterion, advice.round, advice.reason)
        return self.status()

    def _summary(self) -> dict:
        last = self.history_[-1] if self.history_ else {}
        return {"stop": bool(last.get("stop", False)), "reason": last.get("reason", "no model version observed yet"),
                "value": last.get("value"), "criterion": self.crit_.name, "model_version": last.get("model_version"),
                "round": last.get("round", 0), "labeled": last.get("labeled"),
                "stop_set": {"path": str(self.stop_set), "n": len(self.items_)},
                "history": [dict(h) for h in self.history_[-MAX_HISTORY:]]}

    def status(self) -> dict:
        """The last advice and one entry per observed version (a copy; never waits on a lock)."""
        s = self._status  # replaced whole by advise()
        return {**s, "stop_set": dict(s["stop_set"]), "history": [dict(h) for h in s["history"]]}

    def for_version(self, version: str) -> Optional[dict]:
        """The history entry of ``version`` (``None``: not observed)."""
        for h in reversed(self._status["history"]):
            if h["model_version"] == version:
                return dict(h)
        return None
