"""What a simulated active-learning experiment is: :class:`LoopConfig`, the presets, and the checks
and the seeded splits that hold before anything runs.

Per seed, the training set is cut once (seeded by the seed alone, so every strategy at a seed and
every later run that adds strategies or seeds see the same cut): ``val_size`` items for early
stopping (never labeled, never in the pool), the pool (the rest, or its first ``pool_size``), and
the first ``initial`` pool items as the starting labeled set.

With ``source`` (:class:`~jacal.loop.source.LabeledSource`), the items are a team's own: the labeled
items of its export, less a fixed test split (:mod:`jacal.loop.source`), are the training set that
is cut per seed the same way.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from jacal._internal.validation import check_choice, check_positive_int
from jacal.acquisition.coldstart import COLD_START_METHODS
from jacal.acquisition.strategies import get_strategy
from jacal.scenarios import SCENARIOS
from jacal.data import Splits
from jacal.loop.source import LabeledSource

__all__ = ["LoopConfig", "LOOP_PRESETS", "validate", "seed_splits", "signature", "OPTIMIZER", "LR", "BATCH_SIZE"]

# the training recipe of every round (see jacal.loop.runner): jacal.train's optimizer, learning rate, batch size
OPTIMIZER = "adam"
LR = 1e-3
BATCH_SIZE = 32


@dataclass(frozen=True)
class LoopConfig:
    """A simulated active-learning experiment (see :mod:`jacal.loop.runner` for the protocol).

    ``source``: a team's own pool and annotation export instead of ``dataset`` (and ``scenario``
    stays ``"clean"``: the export's "none of these" answers are the open set); ``n_test`` then is
    the size of the test split cut from the labeled items.
    """

    dataset: str = "digits"
    strategies: Tuple[str, ...] = ("jacobian", "jacobian-kmeans", "jacobian-topk", "margin", "entropy",
                                   "least-confidence", "bald", "coreset", "badge", "random")
    initial: int = 20
    k: int = 10
    rounds: int = 8
    seeds: int = 3
    model: str = "mlp"
    width: int = 128
    depth: int = 2
    dropout: float = 0.25
    max_epochs: int = 100
    patience: int = 10
    val_size: int = 200
    n_test: Optional[int] = None
    pool_size: Optional[int] = None
    warm_start: bool = False
    thresholds: Tuple[float, ...] = (0.8, 0.9, 0.95)
    scenario: str = "clean"
    scenario_params: Tuple[Tuple[str, float], ...] = ()
    cold_start: str = "typiclust"
    source: Optional[LabeledSource] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def data_name(self) -> str:
        """What the items are, for titles: the dataset, or the export files of a team's own data."""
        if self.source is None:
            return self.dataset
        return "own labels (" + ", ".join(Path(p).name for p in self.source.labels) + ")"


LOOP_PRESETS: Dict[str, LoopConfig] = {
    "smoke": LoopConfig(seeds=5),
    # Gal et al. 2017 / BatchBALD: MNIST, 20 initial labels, +10 per round (to 320 here), a pool of
    # 20,000 training images so a run fits a 2-core CPU
    "mnist-gal": LoopConfig(dataset="mnist", initial=20, k=10, rounds=30, seeds=5, val_size=1000, n_test=10000,
                            max_epochs=200, patience=20, width=256, depth=2, dropout=0.5, pool_size=20000),
    # a larger-batch protocol: +100 per round
    "mnist-batch100": LoopConfig(dataset="mnist", initial=100, k=100, rounds=10, seeds=5, val_size=1000,
                                 n_test=10000, max_epochs=200, patience=20, width=256, depth=2, dropout=0.5,
                                 pool_size=20000),
}


def validate(cfg: LoopConfig) -> None:
    """Raise ``ValueError`` (one line, naming the option) for a config that cannot run."""
    for name in ("k", "seeds", "max_epochs", "patience", "val_size"):
        check_positive_int(name, getattr(cfg, name))
    if isinstance(cfg.initial, bool) or not isinstance(cfg.initial, int) or cfg.initial < 0:
        raise ValueError(f"Expected `initial` to be a non-negative int (0: a cold start), got {cfg.initial!r}.")
    if cfg.scenario not in SCENARIOS:
        raise ValueError(f"Expected `scenario` to be one of {sorted(SCENARIOS)}, got {cfg.scenario!r}.")
    check_choice("cold_start", cfg.cold_start, COLD_START_METHODS)
    if isinstance(cfg.rounds, bool) or not isinstance(cfg.rounds, int) or cfg.rounds < 0:
        raise ValueError(f"Expected `rounds` to be a non-negative int, got {cfg.rounds!r}.")
    if cfg.pool_size is not None:
        check_positive_int("pool_size", cfg.pool_size)
    if cfg.n_test is not None:
        check_positive_int("n_test", cfg.n_test)
    if cfg.source is not None:
        if not cfg.source.labels:
            raise ValueError("Expected `labels` to name at least one annotation export of the `pool` items.")
        if cfg.scenario != "clean":
            raise ValueError(f"Expected `scenario` 'clean' with `labels` (a team's own pool is the scenario; its "
                             f"'none of these' answers are the open set), got {cfg.scenario!r}.")
    if not cfg.strategies:
        raise ValueError("Expected at least one strategy.")
    for s in cfg.strategies:
        get_strategy(s)  # a one-line error for an unknown name
    check_choice("model", cfg.model, ("mlp", "cnn"))
    if "bald" in cfg.strategies and cfg.model == "mlp" and cfg.dropout <= 0:
        raise ValueError("strategy 'bald' needs dropout: set dropout > 0.")


def signature(cfg: LoopConfig, data_digest: Optional[str] = None) -> str:
    """The experiment's identity in a store: every option but the strategies and the seed count (a
    later run may add strategies or seeds: each seed's split and labeled start depend on the seed
    alone, so pairing stays valid). A team's own data (``source``) enters as the ``data_digest`` of
    its items and labels, not as file paths: a resume from another folder or after a move is the
    same experiment, a changed export is not. Runs on built-in datasets keep the signature they had
    before ``source`` existed, so their stores resume."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in ("strategies", "seeds", "source")}
    if cfg.source is not None:
        d["data_digest"] = data_digest
    return json.dumps(d, sort_keys=True)


def seed_splits(data: Splits, cfg: LoopConfig, seed: int, labelable: Optional[np.ndarray] = None,
                group: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(validation indices, pool indices, initial labeled indices) into the training set, for a seed.

    ``labelable (N,)``: the items with a class (a scenario's); the validation split is drawn from those
    only (a team validates on labeled data), the pool and the first labeled set from all the rest.
    ``group (N,)``: items with one group are copies of one item (a scenario's); they enter the pool
    together, so a capped pool still holds every copy.
    """
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(data.x_train))
    if cfg.val_size + cfg.initial + cfg.k * cfg.rounds > len(order):
        raise ValueError(f"the training set ({len(order)}) is too small for val_size + initial + k·rounds "
                         f"({cfg.val_size} + {cfg.initial} + {cfg.k}·{cfg.rounds}).")
    grouped = group is not None and len(np.unique(group)) < len(group)
    if grouped:  # the same random order, with each group's copies moved together (groups in random order)
        rank = np.empty(int(group.max()) + 1)
        rank[rng.permutation(np.unique(group))] = np.arange(len(np.unique(group)))
        order = order[np.argsort(rank[group[order]], kind="stable")]
    if grouped or (labelable is not None and not labelable.all()):
        ok = labelable[order] if labelable is not None else np.ones(len(order), dtype=bool)
        val_pos = np.flatnonzero(ok)[:cfg.val_size]
        val = np.sort(order[val_pos])
        rest = np.ones(len(order), dtype=bool)
        rest[val_pos] = False
        pool = order[rest]
        if not grouped:
            pool = rng.permutation(pool)  # a fresh order: the first positions are not the leftovers of val
        if cfg.pool_size is not None:
            pool = pool[:cfg.pool_size]
        if grouped:
            pool = rng.permutation(pool)  # the first labeled set: a random draw, not one group's copies
        return val, np.sort(pool), np.sort(pool[:cfg.initial])
    val = np.sort(order[:cfg.val_size])
    pool = order[cfg.val_size:]
    if cfg.pool_size is not None:
        pool = pool[:cfg.pool_size]
    initial = np.sort(pool[:cfg.initial])
    return val, np.sort(pool), initial
