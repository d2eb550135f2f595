"""Prometheus /metrics: prometheus_client's text format with Triton's names, and the server's counts after known traffic."""

from __future__ import annotations

import numpy as np
from serving_support import BROKEN, FAKE, FAKE_GRAPH, http, live, metric_sample, metric_samples, png_bytes

from zoo.serving import BatchingConfig, create_app
from zoo.serving.metrics import CONTENT_TYPE, ServingMetrics, failure_reason


def test_text_format_is_tritons():
    """Counters without prometheus_client's `_total` suffix, no `_created` series, escaped label
    values, cumulative histogram buckets with `_sum` and `_count`."""
    metrics = ServingMetrics()
    model = 'a"b\\c\nd'
    metrics.request_done(model, 0.5)
    metrics.request_done(model, 0.25, failure_reason="BACKEND")
    metrics.batch_done("m", rows=3, compute_s=0.004, queue_s=[0.0005, 0.009])
    text = metrics.render()
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert "_total" not in text and "_created" not in text
    assert "# TYPE nv_inference_request_success counter\n" in text
    assert "# TYPE nv_inference_pending_request_count gauge\n" in text
    assert "# TYPE nv_inference_batch_size histogram\n" in text
    assert 'nv_inference_request_success{model="a\\"b\\\\c\\nd",version="1"} 1.0\n' in text  # escaped: \" \\ \n
    assert metric_sample(text, "nv_inference_request_failure", model=model, version="1", reason="BACKEND") == 1
    assert metric_sample(text, "nv_inference_request_duration_us", model=model, version="1") == 750_000
    buckets = {labels["le"]: value for labels, value in metric_samples(text, "nv_inference_queue_duration_ms_histogram_bucket")}
    assert buckets["0.5"] == 1 and buckets["5.0"] == 1 and buckets["10.0"] == 2 and buckets["+Inf"] == 2  # cumulative
    assert metric_sample(text, "nv_inference_queue_duration_ms_histogram_sum", model="m", version="1") == 9.5
    assert metric_sample(text, "nv_inference_queue_duration_ms_histogram_count", model="m", version="1") == 2
    assert metrics.batch_size.value(model="m", version="1") == 1  # a histogram's value(): its count


def test_declare_shows_zero_series():
    metrics = ServingMetrics()
    metrics.declare("g")
    text = metrics.render()
    assert metric_sample(text, "nv_inference_request_success", model="g", version="1") == 0
    assert metric_sample(text, "nv_inference_pending_request_count", model="g", version="1") == 0
    metrics.pending.set(3, model="g", version="1")
    assert metrics.pending.value(model="g", version="1") == 3


def test_series_totals_and_counts():
    """What the v2 statistics extension reads (serving/oip.py `_stats`)."""
    metrics = ServingMetrics()
    for reason in ("OTHER", "OTHER", "BACKEND"):
        metrics.request_done("g", 0.001, failure_reason=reason)
    metrics.request_done("h", 0.001, failure_reason="REJECTED")
    assert metrics.request_failure.total(model="g") == 3 and metrics.request_failure.total() == 4
    assert metrics.request_failure.value(model="g", version="1", reason="OTHER") == 2
    metrics.batch_done("g", rows=2, compute_s=0.001, queue_s=[0.001, 0.002])
    assert metrics.queue_ms.count(model="g", version="1") == 2
    try:
        metrics.request_success.value(model="g")
    except ValueError as err:
        assert "version" in str(err)
    else:
        raise AssertionError("a partial label set must be refused by value()")


def test_failure_reasons():
    assert [failure_reason(s) for s in (400, 404, 413, 503, 504, 500, 302)] == ["OTHER", "OTHER", "OTHER", "REJECTED", "CANCELED", "BACKEND", "OTHER"]
    metrics = ServingMetrics()
    metrics.batch_done("g", rows=3, compute_s=0.002, queue_s=[0.001, 0.003])
    assert metrics.inference_count.value(model="g", version="1") == 3
    assert metrics.queue_duration_us.value(model="g", version="1") == 4000


def sample(text: str, name: str, **labels: str) -> float:
    return metric_sample(text, name, **labels)


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
        stats = h.get(f"/v2/models/{FAKE_GRAPH}/stats").json()["model_stats"][0]  # Triton's statistics, from the same counters
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
    assert stats["inference_count"] == 7 and stats["execution_count"] == 3
    assert stats["inference_stats"]["success"]["count"] == 2 and stats["inference_stats"]["fail"]["count"] == 1
    assert stats["inference_stats"]["queue"]["count"] == 3
