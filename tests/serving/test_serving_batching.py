"""Dynamic batching: batches form, batched results equal unbatched ones, queues stay bounded,
timeouts answer 504, and the server keeps serving through all of it."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from serving_support import FAKE, FAKE_GRAPH, expected_outputs, http, live, metric_sample, png_bytes

from zoo.serving import BatchingConfig, create_app
from zoo.serving.batching import GraphBatcher, is_batchable
from zoo.serving.errors import ExecutionError, QueueFull, RequestTimeout


class Recorder:
    """A graph that doubles its input and records each batch it saw."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.fail = fail

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        self.batches.append(int(x.shape[0]))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("boom")
        return (x * 2,)


def make(run, **config) -> GraphBatcher:
    settings = {"max_batch_size": 4, "max_queue_delay_s": 0.05, "queue_size": 16, "timeout_s": 5.0, **config}
    return GraphBatcher("g", run, batchable=True, config=BatchingConfig(**settings))


def test_is_batchable():
    assert is_batchable([("batch", 3, 8, 8)], [("batch",), ("batch", 1)])
    assert not is_batchable([("batch", 3)], [(3,)])  # an output without the batch axis
    assert not is_batchable([(1, 3)], [(1,)])
    assert not is_batchable([("batch", 3)], [("n", 3)])


def test_requests_batch_and_results_match():
    run = Recorder()
    batcher = make(run)
    inputs = [torch.full((1, 2), float(i)) for i in range(6)] + [torch.full((2, 2), 10.0)]

    async def main():
        return await asyncio.gather(*(batcher.submit((x,)) for x in inputs))

    outputs = asyncio.run(main())
    for x, (y,) in zip(inputs, outputs):
        assert torch.equal(y, x * 2)  # every request gets its own rows back
    assert sum(run.batches) == 8 and max(run.batches) == 4 and len(run.batches) <= 3


def test_batching_off_and_shape_groups():
    run = Recorder()
    off = make(run, max_batch_size=1)

    async def main(batcher, xs):
        return await asyncio.gather(*(batcher.submit((x,)) for x in xs))

    asyncio.run(main(off, [torch.ones(1, 2)] * 3))
    assert run.batches == [1, 1, 1]
    run = Recorder()
    mixed = make(run)
    xs = [torch.ones(1, 2), torch.ones(1, 3), torch.ones(1, 2), torch.ones(1, 3)]
    outputs = asyncio.run(main(mixed, xs))
    assert sorted(run.batches) == [2, 2]  # rows of different shapes never share a batch
    assert [tuple(y.shape) for (y,) in outputs] == [(1, 2), (1, 3), (1, 2), (1, 3)]


def test_queue_full_timeout_and_failure():
    slow = Recorder(delay_s=0.3)
    batcher = make(slow, max_batch_size=1, queue_size=1)

    async def crowd():
        first = asyncio.ensure_future(batcher.submit((torch.ones(1, 1),)))
        await asyncio.sleep(0.05)  # first is running now
        second = asyncio.ensure_future(batcher.submit((torch.ones(1, 1),)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as full:
            await batcher.submit((torch.ones(1, 1),))
        assert full.value.status == 503 and full.value.headers["Retry-After"] == "1"
        await asyncio.gather(first, second)
        with pytest.raises(RequestTimeout) as late:
            await batcher.submit((torch.ones(1, 1),), timeout_s=0.05)
        assert late.value.status == 504
        await asyncio.sleep(0.4)
        # the queued request that timed out before running is dropped unrun
        queued = asyncio.ensure_future(batcher.submit((torch.ones(1, 1),)))
        await asyncio.sleep(0.05)
        with pytest.raises(RequestTimeout):
            await batcher.submit((torch.ones(1, 1),), timeout_s=0.05)
        await queued
        await asyncio.sleep(0.1)

    asyncio.run(crowd())
    # ran: first, second, the one that timed out while running, `queued`; the one that timed out queued never ran
    assert len(slow.batches) == 4

    failing = make(Recorder(fail=True))

    async def fail():
        return await asyncio.gather(*(failing.submit((torch.ones(1, 2),)) for _ in range(3)), return_exceptions=True)

    errors = asyncio.run(fail())
    assert all(isinstance(e, ExecutionError) and "boom" in e.message for e in errors)


def test_server_batches_v2_and_rest_alike(fakes):
    """Concurrent requests over HTTP share batches, and each answer equals the unbatched one."""
    app = create_app([FAKE], batching=BatchingConfig(max_batch_size=8, max_queue_delay_s=0.15, queue_size=64, timeout_s=10), random_weights=True)
    rng = np.random.default_rng(5)
    xs = [rng.random((1, 3, 8, 8), dtype=np.float32) for _ in range(6)]
    images = [rng.integers(0, 255, (16, 12, 3), dtype=np.uint8) for _ in range(4)]
    with live(app) as server:
        net = app.state.manager.entries[FAKE].pipeline.model.net
        barrier = threading.Barrier(len(xs))

        def v2(x):
            body = {"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": x.ravel().tolist()}]}
            with http(server.url) as h:
                barrier.wait()
                return h.post(f"/v2/models/{FAKE_GRAPH}/infer", json=body).json()

        with ThreadPoolExecutor(len(xs)) as pool:
            answers = list(pool.map(v2, xs))
        batched = list(net.batch_sizes)
        for x, answer in zip(xs, answers):
            score = {o["name"]: o for o in answer["outputs"]}["score"]["data"]
            assert score == pytest.approx(expected_outputs(x)[1].tolist(), abs=1e-6)
        assert max(batched) > 1, batched

        net.batch_sizes.clear()
        rest_barrier = threading.Barrier(len(images))

        def rest(image):
            with http(server.url) as h:
                rest_barrier.wait()
                return h.post(f"/models/{FAKE}/predict", content=png_bytes(image)).json()["result"]

        with ThreadPoolExecutor(len(images)) as pool:
            results = list(pool.map(rest, images))
        assert max(net.batch_sizes) > 1, net.batch_sizes
        unbatched = app.state.manager.entries[FAKE].pipeline
        for image, result in zip(images, results):
            alone = unbatched.predict(Image.fromarray(image))  # through the same batcher, alone
            assert result["score"] == pytest.approx(alone.score, abs=1e-6)
            assert result["map_mean"] == pytest.approx(float(alone.map.mean()), abs=1e-6)


def test_server_queue_full_and_timeout(fakes):
    """A slow graph (0.4 s a batch), one request may wait: the third concurrent request gets
    503 with Retry-After, a request with a short timeout gets 504, and all is well after."""
    app = create_app([f"{FAKE}:slow"], batching=BatchingConfig(max_batch_size=1, max_queue_delay_s=0, queue_size=1, timeout_s=5), random_weights=True)
    body = {"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.5] * 192}]}
    with live(app) as server:
        def post(delay, payload=body):
            time.sleep(delay)
            with http(server.url) as h:
                return h.post(f"/v2/models/{FAKE_GRAPH}/infer", json=payload)

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(post, d) for d in (0.0, 0.1, 0.2)]
            statuses = [f.result() for f in futures]
        assert [r.status_code for r in statuses] == [200, 200, 503]
        assert statuses[2].headers["Retry-After"] == "1" and "queue" in statuses[2].json()["error"]
        short = post(0, {**body, "parameters": {"timeout": 100_000}})  # 0.1 s, in microseconds as tritonclient sends it
        assert short.status_code == 504 and "timed out" in short.json()["error"]
        time.sleep(0.4)
        assert post(0).status_code == 200
        with http(server.url) as h:
            metrics = h.get("/metrics").text
    assert metric_sample(metrics, "nv_inference_request_failure", model=FAKE_GRAPH, version="1", reason="REJECTED") == 1
    assert metric_sample(metrics, "nv_inference_request_failure", model=FAKE_GRAPH, version="1", reason="CANCELED") == 1
