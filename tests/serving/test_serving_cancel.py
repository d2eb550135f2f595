"""A 504 cancels the work: a timed-out multi-step prediction stops at its next graph call."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
from serving_support import FAKE, http, live, png_bytes

from zoo.serving import BatchingConfig, create_app


def test_timed_out_prediction_stops_at_its_next_graph_call(fakes, monkeypatch):
    # the `slow` double sleeps 0.4 s in each graph call; the request may take 1 s
    app = create_app([f"{FAKE}:slow"], batching=BatchingConfig(max_batch_size=1, timeout_s=1.0), random_weights=True)
    with live(app) as server, http(server.url) as h:
        pipeline = app.state.manager.entries[FAKE].pipeline
        done: list[float] = []
        finished = threading.Event()

        def sampler(value, **options):  # ten graph calls in a row, as a diffusion sampler makes them
            try:
                for _ in range(10):
                    pipeline.run_graph(FAKE, torch.zeros(1, 3, 8, 8))
                    done.append(time.perf_counter())
            finally:
                finished.set()

        monkeypatch.setattr(pipeline, "predict", sampler)
        started = time.perf_counter()
        answer = h.post(f"/models/{FAKE}/predict", content=png_bytes(np.zeros((8, 8, 3), np.uint8)))
        assert answer.status_code == 504
        # without cancellation the loop runs all ten calls (4 s); with it, it ends during the third
        assert finished.wait(2.0), f"the prediction kept running after its 504 ({len(done)} graph calls so far)"
        assert len(done) <= 3 and time.perf_counter() - started < 3.0
        time.sleep(0.5)
        assert len(done) <= 3  # and nothing ran on afterwards
        # the server is free again: a quick request is answered at once
        monkeypatch.undo()
        assert h.post(f"/models/{FAKE}/predict", content=png_bytes(np.zeros((8, 8, 3), np.uint8))).status_code == 200


def test_queued_graph_call_of_a_cancelled_prediction_is_dropped():
    import asyncio

    from zoo.serving.batching import GraphBatcher
    from zoo.serving.errors import RequestTimeout

    ran: list[int] = []

    def graph(x: torch.Tensor) -> tuple[torch.Tensor]:
        ran.append(int(x[0, 0]))
        time.sleep(0.3)
        return (x,)

    batcher = GraphBatcher("g", graph, batchable=True, config=BatchingConfig(max_batch_size=1))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    batcher.bind(loop, thread.ident)
    try:
        first = threading.Thread(target=batcher.submit_threadsafe, args=((torch.zeros(1, 1),),))
        first.start()
        time.sleep(0.05)  # the first call runs; the second waits in the queue behind it
        cancel = threading.Event()
        errors: list[BaseException] = []

        def second() -> None:
            try:
                batcher.submit_threadsafe((torch.ones(1, 1),), cancel=cancel)
            except RequestTimeout as err:
                errors.append(err)

        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.05)
        cancel.set()
        waiter.join(1.0)
        first.join(2.0)
        time.sleep(0.4)
        assert errors and not waiter.is_alive()
        assert ran == [0]  # the cancelled call never ran
    finally:
        asyncio.run_coroutine_threadsafe(batcher.aclose(), loop).result(2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(2)
