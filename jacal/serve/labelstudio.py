"""The few Label Studio API calls ``jacal serve`` makes, with the standard library's HTTP client:
the project's export (what training reads), task images on the Label Studio host, and, after a
training, the project's model version and a prediction refresh.

Redirects are followed only on the same scheme, host and port: a redirect anywhere else is
refused, so the token never travels to another host (urllib would copy the ``Authorization``
header onto it).

Tokens: Label Studio 1.23 disables legacy tokens by default; a personal access token is a JWT
refresh token, exchanged at ``POST /api/token/refresh/`` for a short-lived bearer token (refreshed
when it expires). A legacy token (no dots) is sent as ``Authorization: Token KEY``.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, List, Optional
from urllib.parse import urlparse

from jacal._internal.validation import JacalError

__all__ = ["LabelStudioClient"]


def _origin(url: str) -> tuple:
    p = urlparse(url)
    return p.scheme, (p.hostname or "").lower(), p.port or {"http": 80, "https": 443}.get(p.scheme)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the origin (scheme, host, port) of the request it answers."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's hook
        if _origin(newurl) != _origin(req.full_url):
            raise JacalError(f"Label Studio redirected {req.get_method()} {urlparse(req.full_url).path} to another "
                             f"host ({_origin(newurl)[1]}:{_origin(newurl)[2]}); not followed, so the token stays "
                             "with Label Studio")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOriginRedirects())


class LabelStudioClient:
    """Calls to one Label Studio server.

    Args:
        url: e.g. ``http://127.0.0.1:8080``.
        token: a personal access token (JWT refresh token) or a legacy token.
        timeout: seconds per call.
    """

    def __init__(self, url: str, token: Optional[str], *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._access: Optional[str] = None
        self._access_at = 0.0
        self._lock = threading.Lock()

    def same_host(self, url: str) -> bool:
        return _origin(url) == _origin(self.url)

    def _auth(self) -> dict:
        if not self.token:
            return {}
        if self.token.count(".") != 2:  # a legacy token
            return {"Authorization": f"Token {self.token}"}
        with self._lock:
            if self._access is None or time.time() - self._access_at > 240:  # access tokens live ~5 minutes
                body = self._call("POST", "/api/token/refresh/", {"refresh": self.token}, auth=False)
                if not isinstance(body, dict) or "access" not in body:
                    raise JacalError(f"{self.url}/api/token/refresh/ did not return an access token")
                self._access, self._access_at = body["access"], time.time()
            return {"Authorization": f"Bearer {self._access}"}

    def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True, raw: bool = False,
              max_bytes: Optional[int] = None) -> Any:
        url = path if path.startswith("http") else self.url + path
        if not self.same_host(url):
            raise JacalError(f"refusing to send the Label Studio token to another host: {url}")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if auth:
            headers.update(self._auth())
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:  # the configured host only
                payload = resp.read() if max_bytes is None else resp.read(max_bytes + 1)
        except urllib.error.HTTPError as err:
            raise JacalError(f"Label Studio answered {err.code} to {method} {path.split('?')[0]}"
                             f"{' (check --api-key)' if err.code in (401, 403) else ''}") from None
        except (urllib.error.URLError, OSError) as err:
            raise JacalError(f"cannot reach Label Studio at {self.url}: {getattr(err, 'reason', err)}") from None
        if max_bytes is not None and len(payload) > max_bytes:
            raise JacalError(f"{path.split('?')[0]} on Label Studio is over the limit of {max_bytes} bytes")
        if raw:
            return payload
        try:
            return json.loads(payload) if payload else None
        except ValueError:
            raise JacalError(f"Label Studio's answer to {method} {path.split('?')[0]} is not JSON") from None

    def export(self, project: str) -> List[dict]:
        """Every task of ``project``, annotations included (the JSON export, queued tasks too)."""
        tasks = self._call("GET", f"/api/projects/{int(project)}/export?exportType=JSON&download_all_tasks=true")
        if not isinstance(tasks, list):
            raise JacalError(f"the export of project {project} is not a list of tasks")
        return tasks

    def fetch(self, url: str, *, max_bytes: Optional[int] = None) -> bytes:
        """The bytes at ``url`` (on this host), with the token; at most ``max_bytes`` of them."""
        return self._call("GET", url, raw=True, max_bytes=max_bytes)

    def set_model_version(self, project: str, version: str) -> None:
        """Make ``version`` the project's model version (the one its queue and pre-annotations use)."""
        self._call("PATCH", f"/api/projects/{int(project)}", {"model_version": version})

    def retrieve_predictions(self, project: str) -> None:
        """Ask Label Studio to fetch predictions of the current version for every task (its Data
        Manager action "Retrieve Predictions"); it calls ``/predict`` back."""
        self._call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={int(project)}",
                   {"selectedItems": {"all": True, "excluded": []}, "project": str(int(project))})
