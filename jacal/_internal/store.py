"""The sqlite stores of long-running commands: checked on open, versioned, locked, errors in one line.

``jacal replicate`` keeps ``results.sqlite`` and ``jacal loop`` keeps ``loop.sqlite`` in its
``--out`` folder. Both are opened here, so that every fault reads the same way:

* **Damaged or foreign files** are refused before anything is written to them: a file that is not
  SQLite, a database that fails sqlite's ``quick_check`` (a truncated copy), the other command's
  store, or a store whose schema version this jacal does not write. The message names the file and
  what to do; the file is left byte for byte as it was.
* **Versions**: each store records ``jacal_store`` (which command wrote it) and ``schema_version`` in
  its ``meta`` table. Stores written before versions were recorded are adopted when their tables
  have exactly the current columns (they are the same schema) and refused otherwise.
* **One run per folder**: :func:`run_lock` holds an exclusive ``flock`` on ``OUT/.jacal.lock`` for
  the run's lifetime. The kernel drops it when the process ends in any way, SIGKILL included, so a
  stale lock file never blocks the next run.
* **Write failures** (disk full, file-size limit, read-only folder): :func:`store_errors` turns
  sqlite's and the OS's exceptions into one :class:`JacalError` naming the file. sqlite rolls back
  the unfinished transaction, so the store keeps every committed row and ``--resume`` continues.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from jacal._internal.validation import JacalError

__all__ = ["SCHEMA_VERSION", "check_store", "open_store", "run_lock", "store_errors", "remove_stale_temporaries"]

SCHEMA_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"
_WHAT = {"replicate": "a `jacal replicate` store (results.sqlite)", "loop": "a `jacal loop` store (loop.sqlite)"}
# the tables that identify each store when its meta table does not say (stores written before versions)
_SIGNATURE_TABLES = {"replicate": {"models", "pairs", "points", "trajectories"}, "loop": {"rounds", "warm"}}
_ADVICE = "remove it or choose another `out`"


def _columns(con: sqlite3.Connection) -> Dict[str, Tuple[str, ...]]:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: tuple(r[1] for r in con.execute(f"PRAGMA table_info('{t}')")) for t in tables}


def _expected_columns(schema: str) -> Dict[str, Tuple[str, ...]]:
    mem = sqlite3.connect(":memory:")
    try:
        mem.executescript(schema)
        return _columns(mem)
    finally:
        mem.close()


def _meta(con: sqlite3.Connection, key: str):
    row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    try:
        return json.loads(row[0])
    except (TypeError, ValueError):
        return row[0]


def _check_existing(path: Path, con: sqlite3.Connection, kind: str, schema: str) -> bool:
    """Raise if the database at ``path`` is not a healthy store of ``kind``; True when it needs stamping."""
    try:
        status = [r[0] for r in con.execute("PRAGMA quick_check")]
        columns = _columns(con)
    except sqlite3.DatabaseError as err:
        raise JacalError(f"{path} is damaged ({err}); {_ADVICE}") from None
    if status != ["ok"]:
        detail = " ".join(" ".join(status).replace("*** in database main ***", "").split())
        raise JacalError(f"{path} is damaged (sqlite quick_check: {detail[:120]}); {_ADVICE}")
    pages, page_size = (con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    if not Path(f"{path}-wal").exists() and path.stat().st_size < pages * page_size:
        raise JacalError(f"{path} is damaged (cut short: {path.stat().st_size} of {pages * page_size} bytes); "
                         f"{_ADVICE}")
    if not columns:
        return True  # an empty database (e.g. a run killed as it created the file): a new store
    owner = _meta(con, "jacal_store") if "meta" in columns else None
    if owner is None:
        owner = next((k for k, t in _SIGNATURE_TABLES.items() if t <= set(columns)), None)
    if owner is None:
        raise JacalError(f"{path} is an SQLite database but not a jacal store; {_ADVICE}")
    if owner != kind:
        raise JacalError(f"{path} is {_WHAT.get(owner, repr(owner))}, not {_WHAT[kind]}; {_ADVICE}")
    version = _meta(con, "schema_version")
    if version is None:  # written before versions were recorded: adopt it only if it is the same schema
        if columns != _expected_columns(schema):
            raise JacalError(f"{path} was written by an older jacal (its tables differ from schema "
                             f"{SCHEMA_VERSION}); {_ADVICE}")
        return True
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise JacalError(f"{path} has store schema {version}, this jacal reads schema {SCHEMA_VERSION} "
                         f"({'upgrade jacal to resume it' if newer else 'it was written by an older jacal'}); "
                         f"{_ADVICE}")
    return False


def check_store(path, kind: str, schema: str) -> bool:
    """Check an existing store file with reads only; raise :class:`JacalError` if it cannot be resumed.

    Returns:
        True when the store still needs its ``jacal_store`` / ``schema_version`` recorded (an empty
        database, or a same-schema store written before versions were recorded).
    """
    path = Path(path)
    if path.is_dir():
        raise JacalError(f"{path} is a folder, expected a jacal store file; {_ADVICE}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as err:
        raise JacalError(f"cannot read {path}: {err.strerror or err}") from None
    if not head:
        return True  # an empty file (a run killed as it created the store): a new store
    if head != _SQLITE_MAGIC:
        raise JacalError(f"{path} is not an SQLite database (not a jacal store); {_ADVICE}")
    with store_errors(path):
        con = sqlite3.connect(str(path), timeout=30)
        try:
            return _check_existing(path, con, kind, schema)
        finally:
            con.close()


def open_store(path, kind: str, schema: str, *, stamp: Optional[bool] = None) -> sqlite3.Connection:
    """Open (or create) the store of command ``kind`` at ``path`` with the tables of ``schema``.

    An existing file is checked first (:func:`check_store`, reads only); any problem raises
    :class:`JacalError` and leaves the file untouched. A new (or pre-version, same-schema) store gets
    its ``jacal_store`` and ``schema_version`` recorded. ``stamp``: what :func:`check_store` already
    returned for this file under the run's :func:`run_lock` (True for a file that did not exist), so
    the check is not repeated; ``None`` checks now.
    """
    path = Path(path)
    if stamp is None:
        stamp = check_store(path, kind, schema) if path.exists() else True
    with store_errors(path):
        con = sqlite3.connect(str(path), timeout=30)
        try:
            with con:
                con.executescript(schema)
                if stamp:
                    con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                    [("jacal_store", json.dumps(kind)), ("schema_version", json.dumps(SCHEMA_VERSION))])
        except BaseException:
            con.close()
            raise
    return con


@contextlib.contextmanager
def store_errors(path) -> Iterator[None]:
    """Turn sqlite and OS write failures on the store ``path`` into one :class:`JacalError`."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        msg = str(err) or type(err).__name__
        if isinstance(err, sqlite3.OperationalError) and any(
                s in msg for s in ("full", "I/O", "readonly", "unable to open", "locked")):
            raise JacalError(f"cannot write {path}: {msg}; every finished unit of work is saved there: fix this "
                             f"(free space, permissions) and rerun with `resume=True`") from None
        raise JacalError(f"{path} is damaged ({msg}); {_ADVICE}") from None


@contextlib.contextmanager
def run_lock(out, command: str) -> Iterator[None]:
    """Hold ``OUT/.jacal.lock`` exclusively for the block; refuse at once if another run holds it.

    The lock is an advisory ``flock`` (``msvcrt.locking`` on Windows) on an open file, so it is
    released whenever this process ends, even by SIGKILL; the file itself may stay behind harmlessly.
    """
    lock_path = Path(out) / ".jacal.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise JacalError(f"cannot create {lock_path}: {err.strerror or err}") from None
    try:
        try:
            if os.name == "nt":  # pragma: no cover - exercised on Windows only
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError, ValueError, AttributeError, IndexError):
                holder = f" (pid {int(os.pread(fd, 32, 0).decode().split()[0])})"
            raise JacalError(f"another jacal run is using {out}{holder}; wait for it to finish or choose "
                             f"another `out`") from None
        with contextlib.suppress(OSError, AttributeError):  # the holder's pid, for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        remove_stale_temporaries(out)
        yield
    finally:
        os.close(fd)


def remove_stale_temporaries(out) -> int:
    """Delete the temporary files of atomic writes that a killed run left in ``out``; return how many.

    Only called while holding :func:`run_lock`, so no other run can be writing them.
    """
    n = 0
    for tmp in Path(out).glob(".*.tmp"):
        if tmp.is_file():
            with contextlib.suppress(OSError):
                tmp.unlink()
                n += 1
    return n


@contextlib.contextmanager
def resumable_store(out, command: str, filename: str, schema: str, resume: bool) -> Iterator[Tuple[Path, bool]]:
    """A run folder's result store, held for one run: ``(path, stamp)`` with ``stamp`` as
    :func:`check_store` returns it (True for a new store).

    The folder is locked (:func:`run_lock`); a damaged or foreign store is refused untouched, and an
    existing one without ``resume``, both before any work.
    """
    db = Path(out) / filename
    with run_lock(out, command):
        stamp = check_store(db, command, schema) if db.exists() else True
        if db.exists() and not resume:
            raise JacalError(f"{db} exists; pass `resume=True` to continue that run, or choose another `out`")
        yield db, stamp


class SqliteStore:
    """Base of jacal's result stores: one sqlite3 file opened (created, checked, stamped) by
    :func:`open_store` for ``COMMAND`` with ``SCHEMA``; a context manager that closes it."""

    COMMAND = ""
    SCHEMA = ""

    def __init__(self, path: Path, *, stamp: Optional[bool] = None) -> None:
        self.path = Path(path)
        self.conn = open_store(self.path, self.COMMAND, self.SCHEMA, stamp=stamp)  # stamp: see open_store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
