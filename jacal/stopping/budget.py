"""The label budget as a stopping criterion: stop once a given number of items is labeled."""
from __future__ import annotations

from jacal._internal.validation import check_positive_int
from jacal.stopping.base import Criterion


class Budget(Criterion):
    """Stop once ``labels`` items are labeled."""

    name = "budget"
    params = {"labels": None}

    def _check_config(self):
        b = self.config["labels"]
        if b is not None:
            check_positive_int("labels", b)

    def _decide(self, obs, labeled):
        b = self.config["labels"]
        if b is None:
            raise ValueError("criterion 'budget' needs `labels` (the label budget): criterion('budget', labels=N).")
        if labeled is None:
            raise ValueError("criterion 'budget' needs `labeled` (the labels so far) at each update.")
        stop = labeled >= b
        reason = f"{'stop' if stop else 'continue'}: {labeled} labels {'≥' if stop else '<'} budget {b}"
        return stop, float(labeled), reason, {}
