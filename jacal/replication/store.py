"""``results.sqlite``: the replication's result store, written group by group in transactions.

Tables: ``meta`` (the run's signature), ``models`` (one row per trained model), ``pairs`` (C3),
``points`` (per-point scores of a documented test subset, C4) and ``trajectories`` (per-ellipse
measurements of the C2 experiment's models: ‖J‖ per point, exact and sampled transitions per step,
the ellipse's length). A group's rows are committed together, so a killed run leaves only whole
groups, and ``--resume`` retrains exactly the groups that are missing. Opening checks the file
first (damaged, foreign or other-version stores are refused untouched; see :mod:`jacal._internal.store`).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from jacal._internal.store import SqliteStore

__all__ = ["ResultStore", "MODEL_COLUMNS", "TRAJECTORY_COLUMNS", "SCHEMA", "stored_sweep_version"]

MODEL_COLUMNS = (
    "model_id", "dataset", "group_key", "config", "seed", "width", "depth", "activation", "optimizer", "lr",
    "batch_size", "steps", "weight_variance", "augment", "random_labels", "train_accuracy", "test_accuracy",
    "train_loss", "test_loss", "gap", "mean_jacobian", "transitions", "n_params", "n_neurons", "wall_time_s",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, group_key TEXT NOT NULL, config TEXT NOT NULL,
    seed INTEGER, width INTEGER, depth INTEGER, activation TEXT, optimizer TEXT, lr REAL, batch_size INTEGER,
    steps INTEGER, weight_variance REAL, augment INTEGER, random_labels INTEGER, train_accuracy REAL,
    test_accuracy REAL, train_loss REAL, test_loss REAL, gap REAL, mean_jacobian REAL, transitions REAL,
    n_params INTEGER, n_neurons INTEGER, wall_time_s REAL);
CREATE TABLE IF NOT EXISTS pairs (pair_id TEXT PRIMARY KEY, dataset TEXT, factor TEXT, base_id TEXT, variant_id TEXT);
CREATE TABLE IF NOT EXISTS points (
    model_id TEXT NOT NULL, point_index INTEGER NOT NULL, jacobian_norm REAL, loss REAL, correct INTEGER,
    PRIMARY KEY (model_id, point_index));
CREATE TABLE IF NOT EXISTS trajectories (
    model_id TEXT NOT NULL, kind TEXT NOT NULL, construction TEXT NOT NULL, traj_index INTEGER NOT NULL,
    jacobian TEXT NOT NULL, transitions TEXT NOT NULL, sampled TEXT NOT NULL, length REAL NOT NULL,
    anchors TEXT NOT NULL, PRIMARY KEY (model_id, kind, construction, traj_index));
"""
TRAJECTORY_COLUMNS = ("model_id", "kind", "construction", "traj_index", "jacobian", "transitions", "sampled", "length",
                      "anchors")
_JSON_COLUMNS = ("jacobian", "transitions", "sampled", "anchors")


def stored_sweep_version(path: Path) -> Optional[int]:
    """The sweep version recorded in an existing ``results.sqlite`` (read-only; None when none is recorded).

    Called before the store is opened for writing, so a store of another sweep version is refused
    untouched (opening it would add this version's tables to it)."""
    try:
        con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'signature'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    if row is None:
        return None
    try:
        return json.loads(row[0]).get("version")
    except (ValueError, AttributeError):
        return None


class ResultStore(SqliteStore):
    """A thin wrapper over one sqlite3 file."""

    COMMAND = "replicate"
    SCHEMA = SCHEMA

    # meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Optional[Any]:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    # writes -----------------------------------------------------------------------------
    def write_pairs(self, pairs: Iterable[Dict[str, Any]]) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO pairs VALUES (:pair_id, :dataset, :factor, :base_id, :variant_id)",
                                  list(pairs))

    def write_group(self, models: Sequence[Dict[str, Any]], points: Sequence[tuple], trajectories: Sequence[tuple]) -> None:
        """Commit one trained group: all rows or none."""
        cols = ", ".join(MODEL_COLUMNS)
        marks = ", ".join(f":{c}" for c in MODEL_COLUMNS)
        with self.conn:
            self.conn.executemany(f"INSERT OR REPLACE INTO models ({cols}) VALUES ({marks})", models)
            self.conn.executemany("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?)", points)
            self.conn.executemany("INSERT OR REPLACE INTO trajectories VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", trajectories)

    # reads ------------------------------------------------------------------------------
    def done_ids(self) -> set:
        return {r[0] for r in self.conn.execute("SELECT model_id FROM models")}

    def models(self) -> List[Dict[str, Any]]:
        cur = self.conn.execute(f"SELECT {', '.join(MODEL_COLUMNS)} FROM models ORDER BY model_id")
        return [dict(zip(MODEL_COLUMNS, r)) for r in cur]

    def pairs(self) -> List[Dict[str, Any]]:
        cur = self.conn.execute("SELECT pair_id, dataset, factor, base_id, variant_id FROM pairs ORDER BY pair_id")
        return [dict(zip(("pair_id", "dataset", "factor", "base_id", "variant_id"), r)) for r in cur]

    def points(self) -> List[tuple]:
        return self.conn.execute(
            "SELECT model_id, point_index, jacobian_norm, loss, correct FROM points ORDER BY model_id, point_index").fetchall()

    def trajectories(self) -> List[Dict[str, Any]]:
        cur = self.conn.execute(f"SELECT {', '.join(TRAJECTORY_COLUMNS)} FROM trajectories "
                                "ORDER BY model_id, kind, construction, traj_index")
        return [{c: (json.loads(v) if c in _JSON_COLUMNS else v) for c, v in zip(TRAJECTORY_COLUMNS, r)} for r in cur]
