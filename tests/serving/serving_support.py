"""Test doubles for the serving and demo tests: tiny registered models and a live server.

`fake-anomaly` has two graphs: "fake-anomaly" (image (B,3,8,8) -> map = 2 * channel mean,
score = map max: every output row depends on its own input row only, so batched and
unbatched results must agree exactly) and "pool" (image (B,3,H,W) with dynamic H, W ->
per-channel means). Its `slow` variant sleeps in the graph, to fill queues and hit
timeouts. `fake-broken`'s factory raises: a model that fails to load.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

FAKE = "fake-anomaly"
FAKE_GRAPH = f"{FAKE}.{FAKE}"  # its graph named like the model: the bare name is the pipeline-level v2 model
BROKEN = "fake-broken"
SIZE = 8
MAX_BODY = 2_000_000  # the shared test server's limits
MAX_PIXELS = 200_000


@dataclass
class FakeConfig:
    image_size: int = SIZE
    delay_s: float = 0.0


class FakeNet(nn.Module):
    def __init__(self, config: FakeConfig):
        super().__init__()
        self.config = config
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.batch_sizes: list[int] = []  # every batch the graph ran, to see batching happen

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.batch_sizes.append(int(image.shape[0]))
        if self.config.delay_s:
            time.sleep(self.config.delay_s)
        anomaly_map = image.mean(dim=1, keepdim=True) * self.scale
        return anomaly_map, anomaly_map.amax(dim=(1, 2, 3))


class PoolNet(nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.mean(dim=(2, 3))


class FakeModel(nn.Module):
    def __init__(self, config: FakeConfig):
        super().__init__()
        self.net = FakeNet(config)
        self.pool = PoolNet()


def expected_outputs(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What graph "fake-anomaly" computes, by hand: (B,3,S,S) -> (B,1,S,S), (B,)."""
    anomaly_map = image.mean(axis=1, keepdims=True) * 2.0
    return anomaly_map.astype(np.float32), anomaly_map.max(axis=(1, 2, 3)).astype(np.float32)


def register_fakes() -> None:
    from zoo import registry
    from zoo.imageio import load_image, to_tensor
    from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
    from zoo.results import AnomalyResult

    registry._load_families()

    class FakePipeline(Pipeline):
        model: FakeModel

        def graph_specs(self) -> list[GraphSpec]:
            s = self.config.image_size
            return [
                GraphSpec(FAKE, self.model.net, (TensorSpec("image", ("batch", 3, s, s)),),
                          (TensorSpec("anomaly_map", ("batch", 1, s, s)), TensorSpec("score", ("batch",))), dims={"batch": (1, 2, 16)}),
                GraphSpec("pool", self.model.pool, (TensorSpec("image", ("batch", 3, "height", "width")),),
                          (TensorSpec("pooled", ("batch", 3)),), dims={"batch": (1, 2, 16), "height": (4, 8, 64), "width": (4, 8, 64)}),
            ]

        def _predict(self, items: list[Any], threshold: float | None = None, gain: float = 1.0, **_: Any) -> list[AnomalyResult]:
            images = [load_image(item) for item in items]
            batch = torch.stack([to_tensor(im, self.config.image_size) for im in images])
            maps, scores = self.run_graph(FAKE, batch)
            out = []
            for m, s, im in zip(maps, scores, images):
                full = F.interpolate(m[None].float(), size=(im.height, im.width), mode="nearest")[0, 0] * gain
                out.append(AnomalyResult(float(s) * gain, full.numpy(), threshold=threshold))
            return out

    def card(name: str, graphs: tuple[str, ...]) -> Any:
        return registry.ModelCard(
            name=name, task="anomaly-detection", title="A serving test double", year=2026, arxiv="0000.00000", repo="-",
            license="MIT", summary="2 x channel mean as the anomaly map",
            variants={"micro": registry.VariantSpec(FakeConfig()), "slow": registry.VariantSpec(FakeConfig(delay_s=0.4))},
            result_type="AnomalyResult",
            options=(registry.OptionSpec("threshold", "float", None, "mask threshold", minimum=0.0),
                     registry.OptionSpec("gain", "float", 1.0, "scales map and score", minimum=0.0, maximum=10.0)),
            graphs=graphs, examples=("skimage:coins",), family_module=__name__,
        )

    def broken_factory(config: FakeConfig) -> Pipeline:
        raise RuntimeError("weights are corrupt (on purpose)")

    if FAKE not in registry._REGISTRY:
        registry.register_model(card(FAKE, (FAKE, "pool")))(lambda config: FakePipeline(FakeModel(config), config))
    if BROKEN not in registry._REGISTRY:
        registry.register_model(card(BROKEN, (BROKEN,)))(broken_factory)


def unregister_fakes() -> None:
    from zoo import registry

    for name in (FAKE, BROKEN):
        registry._REGISTRY.pop(name, None)


@pytest.fixture(scope="module")
def fakes() -> Iterator[None]:
    """The test-double models, registered for one test module at a time."""
    register_fakes()
    try:
        yield
    finally:
        unregister_fakes()


def real_model_names() -> list[str]:
    """Every registered model but the doubles (registry-driven tests)."""
    from zoo import registry

    registry._load_families()
    return sorted(n for n in registry._REGISTRY if not n.startswith("fake-") and not n.startswith("toy-"))


class LiveServer:
    """uvicorn on 127.0.0.1 in a background thread, on a port the OS picked."""

    def __init__(self, app: Any, wait_ready: bool = True):
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.wait_ready = wait_ready

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        while self.wait_ready and self.app.state.manager.loading:
            if time.time() > deadline:
                raise RuntimeError("models did not load")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@contextlib.contextmanager
def live(app: Any) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


def png_bytes(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def http(url: str, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, **kwargs)


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample `name{labels} value` of a Prometheus text exposition: (labels, value), labels in any order."""
    import re

    found = []
    for match in re.finditer(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", text, re.M):
        labels = {k: re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], v)
                  for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[1] or "")}
        found.append((labels, float(match[2])))
    return found


def metric_sample(text: str, name: str, default: float | None = None, **labels: str) -> float:
    """One sample's value, found by its exact label set in any order (`le` compared as a number);
    `default` when it is missing, else an AssertionError."""
    def key(pairs: dict[str, str]) -> dict[str, object]:
        return {k: float(v) if k == "le" else v for k, v in pairs.items()}

    for found, value in metric_samples(text, name):
        if key(found) == key(labels):
            return value
    if default is not None:
        return default
    raise AssertionError(f"{name}{labels} missing from the metrics")
