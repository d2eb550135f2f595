"""Request limits and access control, as pure ASGI middleware (they run before any route).

- `BodyLimitMiddleware`: a declared `Content-Length` over the limit is refused with 413
  before a byte of the body is read; a chunked body is counted as it streams and refused
  the moment it passes the limit.
- `decompress_body`: `Content-Encoding: gzip|deflate` request bodies (tritonclient's
  `request_compression_algorithm`) inflate in bounded steps, so a compression bomb stops at
  the body limit instead of filling memory.
- `ApiKeyMiddleware`: when an API key is set, every route but the health probes and the
  OpenAPI docs page needs `Authorization: Bearer KEY` or `X-API-Key: KEY`.
- `check_bind`: the server binds to loopback by default and refuses any other address
  without an API key.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from zoo.imageio import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from zoo.serving.errors import PayloadTooLarge, ServingError

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

API_KEY_ENV = "ZOO_API_KEY"


@dataclass
class Limits:
    """What one request may carry."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_image_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if min(self.max_body_bytes, self.max_image_pixels, self.max_image_bytes) <= 0:
            raise ValueError("limits must be positive")


async def send_json_error(send: Callable[[dict], Awaitable[None]], status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class BodyTooLarge(PayloadTooLarge):
    """Raised from `receive` when a streamed body passes the limit."""


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`. A body at most `drain_bytes` over the limit is read
    and dropped before answering, so that clients that send the whole body before reading
    (most do: no `Expect: 100-continue`) see the 413 instead of a reset connection; a larger
    one is answered at once and the connection closed."""

    def __init__(self, app: ASGIApp, max_bytes: int, drain_bytes: int | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes if drain_bytes is not None else max(max_bytes, 8 * 1024 * 1024)

    async def _drain(self, receive: Callable[[], Awaitable[dict]], already: int) -> None:
        seen = already
        while seen <= self.max_bytes + self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_json_error(send, 400, f"invalid Content-Length {declared!r}")
                return
            if size > self.max_bytes:
                if size <= self.max_bytes + self.drain_bytes:
                    await self._drain(receive, 0)
                await send_json_error(send, 413, f"request body of {size} bytes is over the {self.max_bytes}-byte limit", {"connection": "close"})
                return
        received = 0
        started = False
        finished = False

        async def limited_receive() -> dict:
            nonlocal received, finished
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if received > self.max_bytes:
                    if not finished:
                        await self._drain(receive, received)
                        finished = True
                    raise BodyTooLarge(f"request body is over the {self.max_bytes}-byte limit")
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as err:
            if not started:
                await send_json_error(send, 413, err.message, {"connection": "close"})


def decompress_body(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Inflate a gzip/deflate request body, refusing (413) output past `max_bytes`."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise ServingError(f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)", status=415)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as err:
        raise ServingError(f"corrupt {encoding} body: {err}", status=400) from err
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body is over the {max_bytes}-byte limit")
    return out


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_api_key(api_key: str | None) -> str | None:
    """The flag wins; otherwise $ZOO_API_KEY; an empty string means none."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return key or None


def check_bind(host: str, api_key: str | None) -> None:
    """Binding beyond loopback exposes the models to the network: require a key then."""
    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"binding to {host} makes the server reachable from other machines: set an API key "
            f"(--api-key KEY or ${API_KEY_ENV}), or bind to 127.0.0.1"
        )


# Paths any caller may reach: liveness/readiness probes (orchestrators send no keys) and the
# docs pages with their assets (Swagger UI asks for the key through its Authorize button).
PUBLIC_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/docs/assets/",)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str, exempt_prefixes: tuple[str, ...] = ()):
        self.app = app
        self.api_key = api_key.encode()
        self.exempt_prefixes = exempt_prefixes

    def _allowed(self, scope: dict) -> bool:
        path = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or any(path == p or path.startswith(p + "/") for p in self.exempt_prefixes):
            return True
        supplied = _header(scope, b"x-api-key")
        if supplied is None:
            auth = _header(scope, b"authorization") or ""
            scheme, _, token = auth.partition(" ")
            supplied = token.strip() if scheme.lower() == "bearer" else None
        return supplied is not None and hmac.compare_digest(supplied.encode(), self.api_key)

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] in ("http", "websocket") and not self._allowed(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_json_error(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'", {"www-authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


def api_key_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the key in the OpenAPI document so the docs page's Authorize button sends it."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["ApiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    schema["security"] = [{"ApiKey": []}]
    return schema
