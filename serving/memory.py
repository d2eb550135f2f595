"""Give memory back to the system once a big request is over.

A large image (a 6000x6000 upload, a page cut into thousands of tiles) makes the server
allocate hundreds of MB in pieces that glibc's malloc keeps after they are freed: in the
heaps of the worker threads' arenas, below allocations that are still alive, where its
automatic trimming never looks. Measured on `zoo serve` (efficientad, vidt, oneformer), one
6000x6000 request each: 1.18 GB idle, then 1.44, 1.81 and 1.94 GB, held for good;
`malloc_trim(0)` (30-70 ms) took the process back to 1.21-1.31 GB.

`MemoryReleaseMiddleware` counts the HTTP requests in flight; when the last one has been
answered, and again `SETTLE_S` seconds later while the server stays idle (work a 504 cancelled
frees its memory only when its last graph call returns), it looks whether the resident set has
grown more than `threshold_bytes` since the last release and, if so, calls `malloc_trim(0)` in
a worker thread (never on the event loop). Busy servers trim only in their idle moments, and a
server whose memory is really in use (a cache: `FRUITLESS_TRIES` trims in a row freed little)
is not trimmed again until it grows by the threshold once more. Where glibc is missing (macOS, musl) or /proc is absent it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD_BYTES = 256 * 1024 * 1024
SETTLE_S = (1.0, 3.0, 10.0)  # idle re-checks after the last answer
FRUITLESS_TRIES = 3  # trims in a row that free little before the grown size counts as in use


def resident_bytes() -> int | None:
    """This process's resident set size (Linux /proc), or None where unknown."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@functools.lru_cache(maxsize=1)
def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_memory() -> bool:
    """glibc's malloc_trim(0): free heap pages go back to the system. False where unavailable."""
    trim = _load_malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class MemoryReleaseMiddleware:
    """Pure ASGI: after the last request in flight is answered, release memory if the process
    grew by more than `threshold_bytes` since the last release (see the module docstring)."""

    def __init__(self, app: Callable[..., Awaitable[None]], threshold_bytes: int = DEFAULT_THRESHOLD_BYTES,
                 rss: Callable[[], int | None] = resident_bytes, release: Callable[[], bool] = release_memory):
        self.app = app
        self.threshold_bytes = threshold_bytes
        self.rss = rss
        self.release = release
        self.inflight = 0
        self.baseline: int | None = None
        self.releases = 0
        self._lock = threading.Lock()
        self._releasing = False
        self._fruitless = 0
        self._timers: list[asyncio.TimerHandle] = []

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._lock:
            if self.baseline is None:
                self.baseline = self.rss()
            self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.inflight -= 1
            loop = asyncio.get_running_loop()
            self._check(loop)
            for timer in self._timers:  # one set of re-checks, after the latest answer
                timer.cancel()
            self._timers = [loop.call_later(delay, self._check, loop) for delay in SETTLE_S]

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.inflight == 0 and not self._releasing and self._grown():
            self._releasing = True
            try:
                loop.run_in_executor(None, self._release)
            except RuntimeError:  # the server is shutting down
                self._releasing = False

    def _grown(self) -> bool:
        now = self.rss()
        return now is not None and self.baseline is not None and now - self.baseline > self.threshold_bytes

    def _release(self) -> None:
        try:
            before = self.rss()
            if self.release():
                self.releases += 1
            after = self.rss()
            if before is None or after is None or self.baseline is None:
                return
            if before - after >= self.threshold_bytes // 4:  # it gave memory back: keep measuring from the idle size
                self.baseline, self._fruitless = min(self.baseline, after), 0
                log.info("released memory after a large request: resident %d -> %d MB", before >> 20, after >> 20)
            else:  # little to give back: work still running (a cancelled one), or memory really in use
                self._fruitless += 1
                if self._fruitless >= FRUITLESS_TRIES:  # a cache: grow from here, stop trying
                    self.baseline, self._fruitless = after, 0
        except Exception:  # never let housekeeping fail a server
            log.exception("releasing memory failed")
        finally:
            self._releasing = False
