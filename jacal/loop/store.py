"""``loop.sqlite``: the loop's store, one committed transaction per finished round.

Tables: ``meta`` (the store's kind and schema version, the experiment's signature ``config`` and
the ``pointwise_check`` of the first model), ``rounds`` (one row per (strategy, seed, round) with
the labeled set the round ends with, as a JSON list of training-set indices) and ``warm`` (the
last weights of each (strategy, seed) when ``warm_start``). A round, its labeled set and its warm
weights are committed together, so a killed run leaves only whole rounds and ``resume`` continues
each (strategy, seed) after its last one. Opening checks the file first (damaged, foreign or
other-version stores are refused untouched; see :mod:`jacal._internal.store`).
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

import numpy as np

from jacal._internal.store import SqliteStore
from jacal._internal.validation import JacalError

__all__ = ["LoopStore", "SCHEMA", "ROUND_COLUMNS"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    strategy TEXT NOT NULL, seed INTEGER NOT NULL, round INTEGER NOT NULL, n_labeled INTEGER NOT NULL,
    test_accuracy REAL, test_loss REAL, acquisition_time_s REAL, train_epochs INTEGER, labeled TEXT NOT NULL,
    PRIMARY KEY (strategy, seed, round));
CREATE TABLE IF NOT EXISTS warm (strategy TEXT NOT NULL, seed INTEGER NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (strategy, seed));
CREATE TABLE IF NOT EXISTS round_metrics (strategy TEXT NOT NULL, seed INTEGER NOT NULL, round INTEGER NOT NULL,
    metrics TEXT NOT NULL, PRIMARY KEY (strategy, seed, round));
"""

# the columns of a round as the summary, curves.csv and the figures read it (``labeled`` stays in the store)
ROUND_COLUMNS = ("strategy", "seed", "round", "n_labeled", "test_accuracy", "test_loss", "acquisition_time_s",
                 "train_epochs")


class LoopStore(SqliteStore):
    """A thin wrapper over one ``loop.sqlite`` file; every SQL statement of the loop is here."""

    COMMAND = "loop"
    SCHEMA = SCHEMA

    # meta -------------------------------------------------------------------------------
    def claim(self, signature: str) -> None:
        """Record the experiment's ``signature``; refuse a store that holds a different experiment."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()
        if row and row[0] != signature:
            raise JacalError(f"{self.path} holds a different experiment (options, or a team's own data, differ); choose another `out`")
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('config', ?)", (signature,))

    def has_pointwise_check(self) -> bool:
        return self.conn.execute("SELECT value FROM meta WHERE key='pointwise_check'").fetchone() is not None

    def pointwise_check(self) -> dict:
        """The stored per-point check of the first model, ``{}`` when there is none yet."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='pointwise_check'").fetchone()
        return json.loads(row[0]) if row else {}

    # writes -----------------------------------------------------------------------------
    def commit_round(self, row: tuple, blob: Optional[bytes], check: Optional[dict],
                     metrics: Optional[dict] = None) -> None:
        """The round ``row`` (:data:`ROUND_COLUMNS` + ``labeled``), the labeled set it ends with, its warm
        weights, the per-point check and the round's scenario metrics when given: all of them or none."""
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            if metrics is not None:
                self.conn.execute("INSERT OR REPLACE INTO round_metrics VALUES (?, ?, ?, ?)",
                                  (row[0], row[1], row[2], json.dumps(metrics)))
            if blob is not None:
                self.conn.execute("INSERT OR REPLACE INTO warm VALUES (?, ?, ?)", (row[0], row[1], blob))
            if check is not None:
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('pointwise_check', ?)", (json.dumps(check),))

    # reads ------------------------------------------------------------------------------
    def last_rounds(self) -> Dict[Tuple[str, int], int]:
        """(strategy, seed) → the last committed round."""
        return {(s, sd): r for s, sd, r in
                self.conn.execute("SELECT strategy, seed, MAX(round) FROM rounds GROUP BY 1, 2")}

    def labeled(self, strategy: str, seed: int, rnd: int) -> np.ndarray:
        """The training-set indices labeled at the end of round ``rnd``."""
        row = self.conn.execute("SELECT labeled FROM rounds WHERE strategy=? AND seed=? AND round=?",
                                (strategy, seed, rnd)).fetchone()
        return np.array(json.loads(row[0]), dtype=np.int64)

    def warm_state(self, strategy: str, seed: int) -> bytes:
        return self.conn.execute("SELECT state FROM warm WHERE strategy=? AND seed=?", (strategy, seed)).fetchone()[0]

    def metrics(self) -> Dict[Tuple[str, int, int], dict]:
        """(strategy, seed, round) → the round's scenario metrics (wasted share, balanced accuracy, ...)."""
        return {(s, sd, r): json.loads(m) for s, sd, r, m in
                self.conn.execute("SELECT strategy, seed, round, metrics FROM round_metrics")}

    def rounds(self) -> List[tuple]:
        """Every round as a :data:`ROUND_COLUMNS` tuple, ordered by strategy, seed, round."""
        return self.conn.execute(f"SELECT {', '.join(ROUND_COLUMNS)} FROM rounds ORDER BY strategy, seed, round").fetchall()
