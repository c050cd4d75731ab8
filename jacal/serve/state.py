"""What ``jacal serve`` keeps between restarts: the model versions it trained and its training jobs,
in one folder, every file written atomically and durably (temporary name, ``fsync``, rename,
``fsync`` of the folder), so a killed server, or a lost power supply, restarts on its last finished
version and never on half of a file.

Layout of the state folder::

    state.json          {"base_version", "versions": [{"version", "file", "created", ...}], "jobs": [...]}
    models/<version>.pt the checkpoint of each trained version
    lock                held (``flock``) by the one server using the folder; holds its pid

Opening the folder (:meth:`ServeState.load`) takes the lock (a second server is refused), checks
every field of ``state.json`` (a damaged file is refused in one line naming it), and removes the
temporary files a killed write left behind. Jobs a stop or a crash left unfinished (``queued``,
``running``, ``interrupted``) are listed by :meth:`ServeState.unfinished_jobs` for a re-run.
"""
from __future__ import annotations

import json
import os
import posixpath
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from jacal._internal.io import atomic_open
from jacal._internal.validation import JacalError, first_line

__all__ = ["ServeState", "STATE_SCHEMA", "UNFINISHED"]

STATE_SCHEMA = 1
MAX_JOBS_KEPT = 50
#: job statuses a restart re-runs: waiting (``queued``), cut by a crash (``running``) or by a stop
UNFINISHED = ("queued", "running", "interrupted")


def _check(data: Any, folder: Path) -> Optional[str]:
    """What is wrong with the state ``data`` of the state folder ``folder`` (``None``: nothing)."""
    if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
        return f"not a jacal serve state of schema {STATE_SCHEMA}"
    versions, jobs = data.get("versions", []), data.get("jobs", [])
    if not isinstance(versions, list):
        return f"'versions' must be a list, got {type(versions).__name__}"
    if not isinstance(jobs, list):
        return f"'jobs' must be a list, got {type(jobs).__name__}"
    for n, v in enumerate(versions):
        if not isinstance(v, dict):
            return f"versions[{n}] must be an object, got {type(v).__name__}"
        if not isinstance(v.get("version"), str) or not isinstance(v.get("file"), str):
            return f"versions[{n}] needs 'version' and 'file' as text"
        rel = posixpath.normpath(v["file"])
        if rel.startswith(("/", "../")) or rel == ".." or not rel.startswith("models/"):
            return f"versions[{n}] names {v['file']!r}, outside its models/ folder"
        if not (folder / rel).is_file():
            return f"versions[{n}] names {v['file']}, which is missing"
    for n, j in enumerate(jobs):
        if not isinstance(j, dict) or not isinstance(j.get("id"), str) or not isinstance(j.get("status"), str):
            return f"jobs[{n}] must be an object with an 'id' and a 'status'"
    return None


class ServeState:
    """The state folder of a server (see the module).

    Args:
        folder: where to keep it (created when missing).
        base_model: the checkpoint the server started from (version ``base_version``).
        base_version: the first version's tag; trained versions are ``f"{base_version}.{n}"``.
    """

    def __init__(self, folder: Union[str, Path], base_model: Union[str, Path], base_version: str) -> None:
        self.folder = Path(folder)
        self.base_model = Path(base_model)
        self.base_version = base_version
        self._lock = threading.Lock()
        self.data: Dict[str, Any] = {"schema": STATE_SCHEMA, "base_version": base_version,
                                     "base_model": str(base_model), "versions": [], "jobs": []}

    def load(self) -> "ServeState":
        """Take the folder's lock, clean what a killed write left, and read ``state.json`` when
        present (a restart resumes from its last version).

        Raises:
            JacalError: another server holds the folder; a damaged file, another schema, or a
                version whose checkpoint is missing (one line naming the file).
        """
        self._lock_folder()
        try:
            self._remove_orphans()
            path = self.folder / "state.json"
            if not path.exists():
                return self
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as err:
                raise JacalError(f"{path} is damaged ({first_line(err)}); remove it or choose another "
                                 "--state-dir") from None
            problem = _check(data, self.folder)
            if problem:
                raise JacalError(f"{path}: {problem}; repair or remove it, or choose another --state-dir")
            if data.get("base_version") != self.base_version:
                raise JacalError(f"{path} continues model version {data.get('base_version')!r}, not "
                                 f"{self.base_version!r}; pass the same --model-version or another --state-dir")
            data.setdefault("versions", [])
            data.setdefault("jobs", [])
            self.data = data
        except BaseException:
            self.close()
            raise
        return self

    def _lock_folder(self) -> None:
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise JacalError(f"cannot use --state-dir {self.folder}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise JacalError(f"state folder {self.folder} is in use by another jacal serve"
                             f"{f' (pid {owner})' if owner.isdigit() else ''}; stop it or choose another "
                             "--state-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        """Release the folder's lock (another server may then use it)."""
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _remove_orphans(self) -> None:
        """Temporary files of atomic writes cut by a kill (``.NAME.XXXX.tmp``); the lock is held, so
        no write of this folder is in flight."""
        for where in (self.folder, self.folder / "models"):
            if where.is_dir():
                for p in where.glob(".*.tmp"):
                    try:
                        p.unlink()
                    except OSError:
                        pass

    def unfinished_jobs(self) -> List[dict]:
        """Jobs a stop or a crash left queued, running or interrupted (oldest first)."""
        return [dict(j) for j in self.data["jobs"] if j.get("status") in UNFINISHED]

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.folder / "state.json", "w", durable=True, encoding="utf-8") as f:
            json.dump(self.data, f, indent=1)

    @property
    def versions(self) -> List[dict]:
        return list(self.data["versions"])

    @property
    def current_version(self) -> str:
        """The version predictions are made with: the last trained, else the base."""
        return self.data["versions"][-1]["version"] if self.data["versions"] else self.base_version

    @property
    def current_model(self) -> Path:
        """The checkpoint of :attr:`current_version`."""
        return self.folder / self.data["versions"][-1]["file"] if self.data["versions"] else self.base_model

    def next_version(self) -> str:
        return f"{self.base_version}.{len(self.data['versions']) + 1}"

    def new_model_path(self, version: str) -> Path:
        (self.folder / "models").mkdir(parents=True, exist_ok=True)
        return self.folder / "models" / f"{version}.pt"

    def add_version(self, version: str, model_file: Path, **info: Any) -> None:
        """Record a trained version (its checkpoint already written, atomically, at ``model_file``;
        it is made durable here before ``state.json`` names it)."""
        fd = os.open(model_file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(model_file.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self.data["versions"].append({"version": version, "file": model_file.relative_to(self.folder).as_posix(),
                                          "created": time.time(), **info})
            self._save()

    def record_job(self, job: dict) -> None:
        """Add or update a job (by its ``id``), keeping the last :data:`MAX_JOBS_KEPT`."""
        with self._lock:
            jobs = [j for j in self.data["jobs"] if j.get("id") != job.get("id")] + [dict(job)]
            self.data["jobs"] = jobs[-MAX_JOBS_KEPT:]
            self._save()

    def last_job(self) -> Optional[dict]:
        jobs = self.data["jobs"]  # replaced whole by record_job: read without the lock (/health never waits)
        return dict(jobs[-1]) if jobs else None
