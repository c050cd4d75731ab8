"""What ``jacal serve`` keeps between restarts: the model versions it trained and its training jobs,
in one folder, every file written atomically (temporary name, then rename), so a killed server
restarts on its last finished version and never on half of a file.

Layout of the state folder::

    state.json          {"base_version", "versions": [{"version", "file", "created", ...}], "jobs": [...]}
    models/<version>.pt the checkpoint of each trained version
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from jacal._io import atomic_open
from jacal._validation import JacalError

__all__ = ["ServeState", "STATE_SCHEMA"]

STATE_SCHEMA = 1
MAX_JOBS_KEPT = 50


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
        """Read ``state.json`` when present (a restart resumes from its last version).

        Raises:
            JacalError: a damaged file, another schema, or a version whose checkpoint is missing.
        """
        path = self.folder / "state.json"
        if not path.exists():
            return self
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise JacalError(f"{path} is damaged ({err}); remove it or choose another --state-dir") from None
        if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
            raise JacalError(f"{path} is not a jacal serve state of schema {STATE_SCHEMA}; choose another --state-dir")
        if data.get("base_version") != self.base_version:
            raise JacalError(f"{path} continues model version {data.get('base_version')!r}, not {self.base_version!r}; "
                             "pass the same --model-version or another --state-dir")
        for v in data.get("versions", []):
            if not (self.folder / v["file"]).is_file():
                raise JacalError(f"{path} names {v['file']}, which is missing; remove the state folder to start over")
        data.setdefault("jobs", [])
        self.data = data
        return self

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.folder / "state.json", "w", encoding="utf-8") as f:
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
        """Record a trained version (its checkpoint already written, atomically, at ``model_file``)."""
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
        return dict(self.data["jobs"][-1]) if self.data["jobs"] else None
