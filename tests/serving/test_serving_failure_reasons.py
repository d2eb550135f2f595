"""Metrics as Triton labels them: a bad request is OTHER (never REJECTED), and demo calls count too."""

from __future__ import annotations

import numpy as np
import pytest
from serving_support import FAKE, http, live, metric_sample, png_bytes

from zoo.demos.app import api_name, build_demo
from zoo.serving import create_app

gradio_client = pytest.importorskip("gradio_client")


def sample(text: str, name: str, **labels: str) -> float:
    return metric_sample(text, name, default=0.0, **labels)


@pytest.fixture
def app(fakes):
    return create_app([FAKE], random_weights=True, demo=lambda manager: build_demo(list(manager.entries), get_pipeline=manager.pipeline))


def test_bad_request_is_other_not_rejected(app):
    labels = {"model": FAKE, "version": "1"}
    with live(app) as server, http(server.url) as h:
        assert h.post(f"/models/{FAKE}/predict", content=b"not an image").status_code == 400
        assert h.post(f"/models/{FAKE}/predict?gain=nope", content=png_bytes(np.zeros((8, 8, 3), np.uint8))).status_code == 400
        text = h.get("/metrics").text
    assert sample(text, "nv_inference_request_failure", **labels, reason="OTHER") == 2
    assert sample(text, "nv_inference_request_failure", **labels, reason="REJECTED") == 0


def test_demo_calls_are_counted(app, tmp_path, monkeypatch):
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes(np.random.default_rng(1).integers(0, 255, (12, 12, 3), dtype=np.uint8)))
    labels = {"model": FAKE, "version": "1"}
    with live(app) as server, http(server.url) as h:
        client = gradio_client.Client(server.url + "/demo/", verbose=False)
        for _ in range(2):
            client.predict(gradio_client.handle_file(str(image)), None, 1.0, api_name="/" + api_name(FAKE))
        text = h.get("/metrics").text
        assert sample(text, "nv_inference_request_success", **labels) == 2
        assert sample(text, "nv_inference_request_duration_us", **labels) > 0
        pipeline = app.state.manager.entries[FAKE].pipeline

        def broken(*args, **kwargs):
            raise RuntimeError("graph exploded")

        monkeypatch.setattr(pipeline, "predict", broken)
        with pytest.raises(Exception):  # noqa: B017 - gradio_client's error type varies; the metrics below are the point
            client.predict(gradio_client.handle_file(str(image)), None, 1.0, api_name="/" + api_name(FAKE))
        text = h.get("/metrics").text
    assert sample(text, "nv_inference_request_success", **labels) == 2
    assert sample(text, "nv_inference_request_failure", **labels, reason="BACKEND") == 1
