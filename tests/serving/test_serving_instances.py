"""Instances (Triton's instance_group count): several batches of one graph run at once, each on
its share of the cores; `zoo serve --instances N` (default from the core count) sets them."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from serving_support import FAKE
from typer.testing import CliRunner

from zoo.cli import app
from zoo.serving import BatchingConfig
from zoo.serving.batching import GraphBatcher, default_instances, threads_per_instance


class Slow:
    """A graph that sleeps (releasing the GIL, as a runtime's kernels do) and counts overlap."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.running = 0
        self.most = 0
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.batches.append(int(x.shape[0]))
        time.sleep(self.delay_s)
        with self.lock:
            self.running -= 1
        return (x + 1,)


def run_requests(instances: int, n: int, batchable: bool, max_batch_size: int = 1, delay_s: float = 0.15) -> tuple[Slow, float, list]:
    graph = Slow(delay_s)
    config = BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_s=0.0, queue_size=64, timeout_s=10.0, instances=instances)
    batcher = GraphBatcher("g", graph, batchable=batchable, config=config)

    async def main():
        started = time.perf_counter()
        outs = await asyncio.gather(*(batcher.submit((torch.full((1, 2), float(i)),)) for i in range(n)))
        await batcher.aclose()
        return time.perf_counter() - started, outs

    elapsed, outs = asyncio.run(main())
    return graph, elapsed, outs


def test_instances_run_batches_at_once():
    one, t1, _ = run_requests(1, 4, batchable=False)
    two, t2, outs = run_requests(2, 4, batchable=False)
    assert one.most == 1 and two.most == 2
    assert t2 < 0.75 * t1  # 2 at a time: about half the wall time (4 x 0.15 s sleeps)
    assert [float(o[0][0, 0]) for o in outs] == [i + 1.0 for i in range(4)]  # each request its own answer


def test_instances_still_batch_under_load():
    graph, _, outs = run_requests(2, 12, batchable=True, max_batch_size=4)
    assert graph.most <= 2 and max(graph.batches) > 1  # busy instances let the queue form batches
    assert sum(graph.batches) == 12
    assert [float(o[0][0, 0]) for o in outs] == [i + 1.0 for i in range(12)]


def test_free_instances_share_the_queue():
    # four requests, two idle instances: two batches of two at once (one batch of four left a core idle)
    graph, elapsed, outs = run_requests(2, 4, batchable=True, max_batch_size=8)
    assert sorted(graph.batches) == [2, 2] and graph.most == 2
    assert [float(o[0][0, 0]) for o in outs] == [i + 1.0 for i in range(4)]
    one, _, _ = run_requests(1, 4, batchable=True, max_batch_size=8)
    assert one.batches == [4]  # a single instance still takes the whole queue


def test_instances_validated_and_defaults():
    with pytest.raises(ValueError, match="instances"):
        BatchingConfig(instances=0)
    assert BatchingConfig().instances == 1  # the library default; `zoo serve` picks from the cores
    assert 1 <= default_instances("cpu") <= 4 and default_instances("cuda:0") == 1
    assert threads_per_instance(1) >= threads_per_instance(2) >= 1


def test_serve_instances_option(fakes, monkeypatch):
    import uvicorn

    captured = {}
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kw: captured.update(app=asgi, threads=torch.get_num_threads()))
    monkeypatch.delenv("ZOO_API_KEY", raising=False)
    before = torch.get_num_threads()
    result = CliRunner().invoke(app, ["serve", "--models", FAKE, "--random-weights", "--no-demo", "--instances", "3"])
    assert result.exit_code == 0, result.output
    assert "3 instance(s) per graph" in result.output
    assert captured["app"].state.manager.batching.instances == 3
    assert captured["threads"] == min(before, threads_per_instance(3))  # each instance its share while serving
    assert torch.get_num_threads() == before  # restored afterwards
    result = CliRunner().invoke(app, ["serve", "--models", FAKE, "--random-weights", "--no-demo"])
    assert captured["app"].state.manager.batching.instances == default_instances("cpu")


def test_openvino_backend_served_with_instances(fakes, tmp_path):
    """`zoo serve --backend openvino --instances 2`: the batcher calls OpenVINO, answers match torch."""
    import numpy as np
    import tritonclient.http as triton
    from serving_support import FAKE_GRAPH, expected_outputs, live

    from zoo.export.openvino import OpenVinoRunner, export_openvino
    from zoo.registry import create_model
    from zoo.serving import create_app

    export_openvino(create_model(FAKE, weights="random"), tmp_path / FAKE, exporter="torchscript")
    app = create_app([FAKE], backend="openvino", export_dir=tmp_path, random_weights=True,
                     batching=BatchingConfig(max_batch_size=4, instances=2))
    with live(app) as server:
        endpoint = app.state.manager.endpoints[FAKE_GRAPH]
        assert isinstance(endpoint.direct, OpenVinoRunner) and endpoint.batcher.instances == 2
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        assert client.get_model_metadata(FAKE_GRAPH)["platform"] == "openvino"
        x = np.random.default_rng(2).random((2, 3, 8, 8), dtype=np.float32)
        tensor = triton.InferInput("image", [2, 3, 8, 8], "FP32")
        tensor.set_data_from_numpy(x)
        np.testing.assert_allclose(client.infer(FAKE_GRAPH, [tensor]).as_numpy("anomaly_map"), expected_outputs(x)[0], atol=1e-5)
