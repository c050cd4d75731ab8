"""The web layer of ``jacal serve``: Starlette routes that parse the body, call one
:class:`~jacal.serve.backend.MLBackend` method and answer its JSON. Nothing else lives here.

* a body that is not JSON, or a payload the protocol refuses: a 4xx ``{"error": "..."}`` (one line);
* anything unexpected inside a call: a 500 ``{"error": ...}`` for that request only; the server lives on;
* optional HTTP basic auth (Label Studio's ML backend settings: "Basic auth"), checked on every
  route but ``/health``;
* the routes are plain ``def`` functions: Starlette runs them in its thread pool, so concurrent
  requests score in parallel while the training worker runs beside them.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Any, Callable, Optional, Tuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jacal._validation import first_line
from jacal.serve.backend import MLBackend
from jacal.serve.protocol import ProtocolError

__all__ = ["create_app"]

log = logging.getLogger("jacal.serve")


def _authorized(request: Request, auth: Optional[Tuple[str, str]]) -> bool:
    if auth is None:
        return True
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user, auth[0]) and hmac.compare_digest(password, auth[1])


def create_app(backend: MLBackend, *, basic_auth: Optional[Tuple[str, str]] = None,
               max_body: int = 64 * 1024 * 1024) -> Starlette:
    """The Starlette app serving ``backend`` (already started).

    Args:
        backend: the ML backend.
        basic_auth: ``(user, password)`` required on every route but ``/health`` (``None``: open).
        max_body: largest request body in bytes (a larger one is a 413).
    """

    def route(call: Callable[[Any], Tuple[int, Any]], with_body: bool = True) -> Callable:
        async def endpoint(request: Request) -> JSONResponse:
            if with_body and not _authorized(request, basic_auth):
                return JSONResponse({"error": "authentication required (basic auth)"}, status_code=401,
                                    headers={"WWW-Authenticate": 'Basic realm="jacal"'})
            payload = None
            if with_body:
                raw = await request.body()
                if len(raw) > max_body:
                    return JSONResponse({"error": f"request body over {max_body} bytes"}, status_code=413)
                try:
                    payload = json.loads(raw) if raw.strip() else {}
                except (ValueError, UnicodeDecodeError) as err:
                    return JSONResponse({"error": f"the request body is not JSON ({first_line(err, 120)})"},
                                        status_code=400)
            from starlette.concurrency import run_in_threadpool

            try:
                status, body = await run_in_threadpool(call, payload) if with_body else await run_in_threadpool(call)
            except ProtocolError as err:
                return JSONResponse({"error": first_line(err, 500)}, status_code=err.status)
            except Exception as err:  # noqa: BLE001 - one request fails, the server lives on
                log.exception("error in %s", request.url.path)
                return JSONResponse({"error": f"internal error: {first_line(err, 300)}"}, status_code=500)
            return JSONResponse(body, status_code=status)
        return endpoint

    health = route(backend.health, with_body=False)
    routes = [Route("/", health, methods=["GET"]), Route("/health", health, methods=["GET"]),
              Route("/setup", route(backend.setup), methods=["POST"]),
              Route("/predict", route(backend.predict), methods=["POST"]),
              Route("/webhook", route(backend.webhook), methods=["POST"]),
              Route("/train", route(backend.train), methods=["POST"]),
              Route("/metrics", route(lambda _: (200, {})), methods=["GET"])]
    return Starlette(routes=routes)
