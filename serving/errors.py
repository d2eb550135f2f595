"""Errors the server answers with, each carrying its HTTP status.

Every error response is `{"error": "..."}` (the Open Inference Protocol's shape, which the
`tritonclient` parser expects), whatever route raised it.
"""

from __future__ import annotations


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
