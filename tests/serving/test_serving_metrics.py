"""Prometheus /metrics: the text format by hand, and the server's counts after known traffic."""

from __future__ import annotations

import re

import numpy as np
from serving_support import BROKEN, FAKE, FAKE_GRAPH, http, live, png_bytes

from serving import BatchingConfig, create_app
from serving.metrics import Counter, Histogram, Registry, ServingMetrics, failure_reason


def test_text_format_by_hand():
    registry = Registry()
    counter = registry.add(Counter("c_total", "a counter", ("model",)))
    histogram = registry.add(Histogram("h", "a histogram", ("model",), buckets=(1, 4)))
    counter.inc(2, model='a"b\\c\nd')
    counter.inc(model='a"b\\c\nd')
    for value in (0.5, 1, 3, 9):
        histogram.observe(value, model="m")
    assert registry.render() == (
        "# HELP c_total a counter\n# TYPE c_total counter\n"
        'c_total{model="a\\"b\\\\c\\nd"} 3\n'
        "# HELP h a histogram\n# TYPE h histogram\n"
        'h_bucket{model="m",le="1"} 2\nh_bucket{model="m",le="4"} 3\nh_bucket{model="m",le="+Inf"} 4\n'
        'h_sum{model="m"} 13.5\nh_count{model="m"} 4\n'
    )


def test_failure_reasons():
    assert [failure_reason(s) for s in (400, 404, 413, 503, 504, 500, 302)] == ["OTHER", "OTHER", "OTHER", "REJECTED", "CANCELED", "BACKEND", "OTHER"]
    metrics = ServingMetrics()
    metrics.batch_done("g", rows=3, compute_s=0.002, queue_s=[0.001, 0.003])
    assert metrics.inference_count.value(model="g", version="1") == 3
    assert metrics.queue_duration_us.value(model="g", version="1") == 4000


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    assert match, f"{name}{{{wanted}}} missing"
    return float(match.group(1))


def test_server_metrics_count_traffic(fakes):
    app = create_app([FAKE, BROKEN], batching=BatchingConfig(max_batch_size=4, max_queue_delay_s=0.0), random_weights=True)
    image = np.random.default_rng(0).integers(0, 255, (10, 10, 3), dtype=np.uint8)
    good = {"inputs": [{"name": "image", "shape": [3, 3, 8, 8], "datatype": "FP32", "data": [0.1] * 576}]}
    bad = {"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "INT64", "data": [0] * 192}]}
    with live(app) as server, http(server.url) as h:
        before = h.get("/metrics")
        assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert sample(before.text, "nv_inference_request_success", model=FAKE_GRAPH, version="1") == 0
        for _ in range(2):
            assert h.post(f"/v2/models/{FAKE_GRAPH}/infer", json=good).status_code == 200
        assert h.post(f"/v2/models/{FAKE_GRAPH}/infer", json=bad).status_code == 400
        assert h.post(f"/models/{FAKE}/predict", content=png_bytes(image)).status_code == 200
        assert h.post(f"/v2/models/{BROKEN}/infer", json=good).status_code == 503
        text = h.get("/metrics").text
    labels = {"model": FAKE_GRAPH, "version": "1"}  # the graph's batcher counts every row it ran, REST ones too
    assert sample(text, "nv_inference_request_success", **labels) == 2  # two v2 graph requests
    assert sample(text, "nv_inference_request_success", model=FAKE, version="1") == 1  # one REST request (the model's own label)
    assert sample(text, "nv_inference_request_failure", **labels, reason="OTHER") == 1  # the bad request: not a rejection
    assert sample(text, "nv_inference_request_failure", model=BROKEN, version="1", reason="REJECTED") == 1
    assert sample(text, "nv_inference_count", **labels) == 7  # rows: 3 + 3 + 1
    assert sample(text, "nv_inference_exec_count", **labels) == 3  # executed one after another: no batching
    assert sample(text, "nv_inference_batch_size_count", **labels) == 3
    assert sample(text, "nv_inference_batch_size_bucket", **labels, le="2") == 1  # the REST request's single row
    assert sample(text, "nv_inference_batch_size_sum", **labels) == 7
    assert sample(text, "nv_inference_queue_duration_ms_histogram_count", **labels) == 3
    assert sample(text, "nv_inference_compute_infer_duration_us", **labels) > 0
    assert sample(text, "nv_inference_request_duration_us", **labels) > sample(text, "nv_inference_compute_infer_duration_us", **labels)
    assert sample(text, "nv_inference_pending_request_count", **labels) == 0
