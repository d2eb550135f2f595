"""Errors the server answers with, each carrying its HTTP status.

Every error response is `{"error": "..."}` (the Open Inference Protocol's shape, which the
`tritonclient` parser expects), whatever route raised it.

Every response carries an `X-Request-Id` header (`RequestIdMiddleware`: the client's own id
when it sends a well-formed one, else a fresh one). An internal error (500) answers with that
id and a generic message only; what went wrong, exception and traceback, goes to the server log
under the same id (`internal_error`), so nothing of the server's insides reaches the client.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # what we accept from a client (or proxy) and echo back


class ServingError(Exception):
    """An error with an HTTP status and optional headers (e.g. Retry-After)."""

    status: int = 500

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(ServingError):
    status = 400


class Unauthorized(ServingError):
    status = 401


class NotFound(ServingError):
    status = 404


class PayloadTooLarge(ServingError):
    status = 413


class ModelUnavailable(ServingError):
    """The model exists but is not ready (still loading, or it failed to load)."""

    status = 503


class QueueFull(ServingError):
    """A graph's bounded queue is full: the client should retry after a moment."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after_s)))})


class RequestTimeout(ServingError):
    """The request waited (queued or running) past its deadline."""

    status = 504


class ExecutionError(ServingError):
    """The graph (or pipeline) raised while running a batch."""

    status = 500


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_of(scope: MutableMapping[str, Any]) -> str | None:
    """The id `RequestIdMiddleware` gave this request (None outside it)."""
    return (scope.get("state") or {}).get("request_id")


def internal_error(request_id: str | None, logger: logging.Logger, what: str, err: BaseException) -> tuple[dict[str, str], dict[str, str]]:
    """Log `err` with its traceback under the request id; return the (body, headers) of the
    500 answer, which name the id and nothing else."""
    request_id = request_id or new_request_id()
    logger.error("request %s: %s: %s: %s", request_id, what, type(err).__name__, err, exc_info=err)
    body = {"error": f"internal server error (request id {request_id}); the server log has the details", "request_id": request_id}
    return body, {REQUEST_ID_HEADER: request_id}


class RequestIdMiddleware:
    """Gives every HTTP request an id (kept in `scope["state"]["request_id"]`) and every
    response an `X-Request-Id` header. Pure ASGI, so streamed responses pass untouched.

    An exception no handler took is answered here (500, the id only) and not raised further:
    Starlette's last-resort handler would re-raise it after answering, and the server then
    drops the client's keep-alive connection."""

    def __init__(self, app: Callable[..., Awaitable[None]], logger: logging.Logger | None = None):
        self.app = app
        self.log = logger or logging.getLogger(__name__)

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"x-request-id"), None)
        request_id = supplied if supplied is not None and _REQUEST_ID.fullmatch(supplied) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        started = False

        async def send_with_id(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                if not any(k.lower() == header[0] for k, _ in headers):
                    headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as err:
            if started:  # too late to answer: the server closes the connection
                raise
            body, headers = internal_error(request_id, self.log, f"unhandled error on {scope.get('method')} {scope.get('path')}", err)
            payload = json.dumps(body).encode()
            raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": 500, "headers": raw})
            await send({"type": "http.response.body", "body": payload})
