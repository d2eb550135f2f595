"""After a big request the server gives its freed heap back (malloc_trim) once it is idle."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from serving_support import FAKE, http, live

from zoo.serving import create_app
from zoo.serving.memory import MemoryReleaseMiddleware, release_memory, resident_bytes

MB = 1024 * 1024


def test_release_waits_for_idle_and_for_growth():
    rss = {"now": 1000 * MB}
    released: list[int] = []

    def release() -> bool:
        released.append(rss["now"])
        rss["now"] = 1010 * MB  # the trim gave most of it back
        return True

    gates = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def app(scope, receive, send):
        rss["now"] += 400 * MB  # each request grows the heap
        await gates[scope["path"]].wait()

    middleware = MemoryReleaseMiddleware(app, threshold_bytes=256 * MB, rss=lambda: rss["now"], release=release)

    async def scenario() -> None:
        a = asyncio.create_task(middleware({"type": "http", "path": "a"}, None, None))
        b = asyncio.create_task(middleware({"type": "http", "path": "b"}, None, None))
        await asyncio.sleep(0.01)
        gates["a"].set()
        await a
        await asyncio.sleep(0.05)
        assert released == []  # b still runs: not idle yet
        gates["b"].set()
        await b
        for _ in range(100):
            if released:
                break
            await asyncio.sleep(0.01)
        assert released == [1800 * MB] and middleware.baseline == 1000 * MB
        # a small request afterwards: grew less than the threshold, no second trim
        gates["a"] = asyncio.Event()
        gates["a"].set()
        rss["now"] -= 300 * MB  # this request grows it by 100 MB only
        await middleware({"type": "http", "path": "a"}, None, None)
        await asyncio.sleep(0.05)
        assert len(released) == 1

    asyncio.run(scenario())


def test_memory_freed_after_the_answer_is_released_while_idle(monkeypatch):
    """A 504 answers before its cancelled work lets go of its tensors: idle re-checks trim then."""
    import zoo.serving.memory
    monkeypatch.setattr(zoo.serving.memory, "SETTLE_S", (0.05, 0.1))
    state = {"rss": 1000 * MB, "live": 1000 * MB}
    released: list[int] = []

    def release() -> bool:
        released.append(state["rss"])
        state["rss"] = state["live"] + 10 * MB
        return True

    async def app(scope, receive, send):
        state["rss"] = state["live"] = 3000 * MB  # the work still holds its memory when answered

    middleware = MemoryReleaseMiddleware(app, threshold_bytes=256 * MB, rss=lambda: state["rss"], release=release)

    async def scenario() -> None:
        await middleware({"type": "http", "path": "/"}, None, None)
        await asyncio.sleep(0.03)
        assert released == [3000 * MB]  # trimmed at once, but the work still ran
        state["live"], state["rss"] = 1000 * MB, 2000 * MB  # it ends: freed, yet kept by malloc
        await asyncio.sleep(0.15)
        assert released == [3000 * MB, 2000 * MB] and state["rss"] == 1010 * MB

    asyncio.run(scenario())


def test_memory_really_in_use_stops_the_trims():
    state = {"rss": 1000 * MB}
    released: list[int] = []

    def release() -> bool:
        released.append(state["rss"])  # frees nothing: a cache holds it
        return True

    async def app(scope, receive, send):
        state["rss"] = 1500 * MB

    middleware = MemoryReleaseMiddleware(app, threshold_bytes=256 * MB, rss=lambda: state["rss"], release=release)

    async def scenario() -> None:
        for _ in range(5):
            await middleware({"type": "http", "path": "/"}, None, None)
            await asyncio.sleep(0.02)
        assert len(released) == 3 and middleware.baseline == 1500 * MB

    asyncio.run(scenario())


@pytest.mark.skipif(not sys.platform.startswith("linux") or not release_memory(), reason="needs glibc and /proc")
def test_server_returns_fragmented_heap_after_a_big_request(fakes):
    app = create_app([FAKE], random_weights=True)
    keep: list[bytes] = []

    @app.get("/big")
    def big() -> dict:
        # 600 MB in 100 kB pieces interleaved with small blocks that stay alive: glibc cannot
        # give those pages back by itself (they sit below live allocations), only malloc_trim can.
        # Twice the release threshold (256 MB): late in a long test run part of it reuses the
        # process's free heap, and the resident growth must still cross the threshold.
        pieces = []
        for _ in range(6000):
            pieces.append(bytearray(100_000))
            keep.append(b"x" * 600 + bytes(1))
        return {"pieces": len(pieces)}

    with live(app) as server, http(server.url) as h:
        h.get("/v2/health/live")
        before = resident_bytes()
        assert h.get("/big").status_code == 200
        deadline = time.time() + 5
        while time.time() < deadline and resident_bytes() - before > 100 * MB:
            time.sleep(0.05)
        assert resident_bytes() - before < 100 * MB, f"still {(resident_bytes() - before) / MB:.0f} MB above the idle size"


def test_batcher_lets_go_of_the_last_batch():
    """An idle batcher holds no request's tensors (a chunk that is a view pins its whole base)."""
    import gc
    import weakref

    import torch

    from zoo.serving.batching import BatchingConfig, GraphBatcher

    batcher = GraphBatcher("g", lambda x: (x * 2,), batchable=True, config=BatchingConfig(max_batch_size=4))

    async def scenario() -> weakref.ref:
        base = torch.ones(64, 3, 8, 8)
        chunk = base[:4]  # a view, as DocDiff's tile chunks are
        out = await batcher.submit((chunk,))
        assert torch.equal(out[0], chunk * 2)
        ref = weakref.ref(base)
        del base, chunk, out
        await asyncio.sleep(0.05)  # the worker is back to waiting for the next request
        gc.collect()
        alive = ref() is not None
        await batcher.aclose()
        return alive

    assert not asyncio.run(scenario())
