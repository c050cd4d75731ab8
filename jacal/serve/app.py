"""The web layer of ``jacal serve``: Starlette routes that parse the body, call one
:class:`~jacal.serve.backend.MLBackend` method and answer its JSON. Nothing else lives here.

* a body that is not JSON (or nested too deeply to parse), or a payload the protocol refuses: a 4xx
  ``{"error": "..."}`` (one line), logged with its reason;
* a body over ``max_body`` bytes: a 413, from its ``Content-Length`` before any of it is read, or
  once a streamed (chunked) body passes the limit;
* anything unexpected inside a call: a 500 ``{"error": ...}`` for that request only; the server lives on;
* optional HTTP basic auth (Label Studio's ML backend settings: "Basic auth"), checked on every
  route, ``/health`` included (Label Studio sends it there too, so a wrong password shows at
  connection time as a 401 that says so);
* ``/health`` answers on the event loop without waiting for any lock or worker thread; the other
  routes are plain functions run in Starlette's thread pool, so concurrent requests score in
  parallel while the training worker runs beside them.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Any, Callable, Optional, Tuple

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jacal._internal.validation import first_line
from jacal.serve.backend import MLBackend
from jacal.serve.protocol import ProtocolError

__all__ = ["create_app"]

log = logging.getLogger("jacal.serve")


def _auth_problem(request: Request, auth: Optional[Tuple[str, str]]) -> Optional[str]:
    """Why the request is not authorized (``None``: it is). Never echoes what was sent."""
    if auth is None:
        return None
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return "authentication required (basic auth)"
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return "the basic auth header is malformed"
    ok_user = hmac.compare_digest(user.encode(), auth[0].encode())
    ok_pass = hmac.compare_digest(password.encode(), auth[1].encode())
    return None if ok_user and ok_pass else "wrong user or password (basic auth): check the ML backend's settings"


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, max_body: int) -> bytes:
    """The body, refused (:class:`_TooLarge`) from its ``Content-Length`` or as soon as a streamed
    body passes ``max_body`` bytes: never more than ``max_body`` bytes are held."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_body:
        raise _TooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise _TooLarge()
    return bytes(body)


def create_app(backend: MLBackend, *, basic_auth: Optional[Tuple[str, str]] = None,
               max_body: int = 32 * 1024 * 1024) -> Starlette:
    """The Starlette app serving ``backend`` (already started).

    Args:
        backend: the ML backend.
        basic_auth: ``(user, password)`` required on every route (``None``: open).
        max_body: largest request body in bytes (a larger one is a 413, read no further).
    """

    def answer(request: Request, status: int, body: Any, **kwargs: Any) -> JSONResponse:
        if status >= 400:
            log.info("%s %s -> %d: %s", request.method, request.url.path, status, body.get("error", "")[:300])
        return JSONResponse(body, status_code=status, **kwargs)

    def route(call: Callable[..., Tuple[int, Any]], *, with_body: bool = True, inline: bool = False,
              pass_auth: bool = False) -> Callable:
        async def endpoint(request: Request) -> JSONResponse:
            problem = _auth_problem(request, basic_auth)
            if problem:
                return answer(request, 401, {"error": problem}, headers={"WWW-Authenticate": 'Basic realm="jacal"'})
            args: list = []
            if with_body:
                try:
                    raw = await _read_body(request, max_body)
                except _TooLarge:
                    return answer(request, 413, {"error": f"request body over {max_body} bytes"},
                                  headers={"Connection": "close"})
                except ClientDisconnect:
                    return answer(request, 400, {"error": "the client went away before sending its whole body"})
                try:
                    args.append(json.loads(raw) if raw.strip() else {})
                except RecursionError:
                    return answer(request, 400, {"error": "the request body is JSON nested too deeply"})
                except (ValueError, UnicodeDecodeError) as err:
                    return answer(request, 400, {"error": f"the request body is not JSON ({first_line(err, 120)})"})
            kwargs = {"authenticated": basic_auth is not None} if pass_auth else {}
            try:
                status, body = call(*args, **kwargs) if inline else await run_in_threadpool(call, *args, **kwargs)
            except ProtocolError as err:
                return answer(request, err.status, {"error": first_line(err, 500)})
            except RecursionError:
                return answer(request, 400, {"error": "the request body is JSON nested too deeply"})
            except Exception as err:  # noqa: BLE001 - one request fails, the server lives on
                log.exception("error in %s", request.url.path)
                return answer(request, 500, {"error": f"internal error: {first_line(err, 300)}"})
            return answer(request, status, body)
        return endpoint

    health = route(backend.health, with_body=False, inline=True)  # cheap and lock-free: on the event loop
    routes = [Route("/", health, methods=["GET"]), Route("/health", health, methods=["GET"]),
              Route("/setup", route(backend.setup, pass_auth=True), methods=["POST"]),
              Route("/predict", route(backend.predict), methods=["POST"]),
              Route("/webhook", route(backend.webhook), methods=["POST"]),
              Route("/train", route(backend.train), methods=["POST"]),
              Route("/metrics", route(lambda: (200, {}), with_body=False, inline=True), methods=["GET"])]
    return Starlette(routes=routes)
