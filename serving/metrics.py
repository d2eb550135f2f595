"""Prometheus metrics through `prometheus_client`, named as Triton names them.

Names follow Triton's `nv_inference_*` family so that dashboards built for Triton read ours:

- `nv_inference_request_success` / `nv_inference_request_failure` (with a `reason` label:
  REJECTED, CANCELED, BACKEND, OTHER, as Triton labels them; see `failure_reason`): requests
  per model, from v2, REST and the demo alike.
- `nv_inference_count` (inferences, i.e. batch rows) and `nv_inference_exec_count` (batch
  executions): their ratio is the mean batch size.
- `nv_inference_request_duration_us`, `nv_inference_queue_duration_us`,
  `nv_inference_compute_infer_duration_us`: cumulative microseconds, as Triton reports them.
- `nv_inference_pending_request_count`: requests waiting in a graph's queue now.
- `nv_inference_batch_size`, `nv_inference_queue_duration_ms_histogram`,
  `nv_inference_compute_infer_duration_ms_histogram`: histograms for the distributions
  (Triton's histogram family has the `_ms` suffix).

Every series carries the labels `model` (the v2 model name, i.e. a graph, or the REST model
name) and `version`. `prometheus_client` keeps the values (thread-safe), the buckets and the text
exposition (format 0.0.4, labels in alphabetical order as Triton's prometheus-cpp writes them).
Two things differ from its defaults, to read as Triton: counters carry no `_total` suffix
(prometheus_client appends one to every counter, the OpenMetrics convention), and the
`_created` timestamp series (an OpenMetrics addition) are left out.
"""

from __future__ import annotations

import re

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
DURATION_MS_BUCKETS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Series:
    """A `prometheus_client` metric called with its labels as keywords: `inc(2, model="m", version="1")`."""

    def __init__(self, metric: prometheus_client.Counter | prometheus_client.Gauge | prometheus_client.Histogram,
                 labelnames: tuple[str, ...], sample_name: str) -> None:
        self.metric = metric
        self.labelnames = labelnames
        self._sample_name = sample_name  # the sample value() reads: a counter's `_total`, a histogram's `_count`

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.metric.labels(**labels).inc(amount)  # type: ignore[union-attr]  # counters and gauges

    def set(self, value: float, **labels: str) -> None:
        self.metric.labels(**labels).set(value)  # type: ignore[union-attr]  # gauges

    def observe(self, value: float, **labels: str) -> None:
        self.metric.labels(**labels).observe(value)  # type: ignore[union-attr]  # histograms

    def touch(self, **labels: str) -> None:
        """Create the series at 0 so it shows before the first event."""
        self.metric.labels(**labels)

    def total(self, **partial: str) -> float:
        """Sum over every series whose labels include `partial` (e.g. all failure reasons of a model)."""
        return sum(sample.value for family in self.metric.collect() for sample in family.samples
                   if sample.name == self._sample_name and all(sample.labels.get(k) == str(v) for k, v in partial.items()))

    def value(self, **labels: str) -> float:
        """The current value (a histogram: its count of observations); 0 for a series not created yet."""
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self._sample_name} takes labels {self.labelnames}, got {sorted(labels)}")
        return self.total(**labels)

    count = value  # a histogram's number of observations


class ServingMetrics:
    """The server's metrics; `model` is the v2 model name (a graph) or the REST model name."""

    VERSION = "1"

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model", "version")
        self._counters: list[str] = []

        def counter(name: str, help_text: str, labelnames: tuple[str, ...] = labels) -> Series:
            self._counters.append(name)
            return Series(prometheus_client.Counter(name, help_text, labelnames, registry=self.registry), labelnames, name + "_total")

        def gauge(name: str, help_text: str) -> Series:
            return Series(prometheus_client.Gauge(name, help_text, labels, registry=self.registry), labels, name)

        def histogram(name: str, help_text: str, buckets: tuple[float, ...] = DURATION_MS_BUCKETS) -> Series:
            return Series(prometheus_client.Histogram(name, help_text, labels, registry=self.registry, buckets=buckets), labels, name + "_count")

        self.request_success = counter("nv_inference_request_success", "Number of successful inference requests, all batch sizes")
        self.request_failure = counter("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", (*labels, "reason"))
        self.inference_count = counter("nv_inference_count", "Number of inferences performed (a batch of n counts n)")
        self.exec_count = counter("nv_inference_exec_count", "Number of model executions performed (a batch counts once)")
        self.request_duration_us = counter("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds")
        self.queue_duration_us = counter("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds")
        self.compute_infer_duration_us = counter("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds")
        self.pending = gauge("nv_inference_pending_request_count", "Instantaneous number of pending requests awaiting execution")
        self.batch_size = histogram("nv_inference_batch_size", "Rows per model execution", BATCH_BUCKETS)
        self.queue_ms = histogram("nv_inference_queue_duration_ms_histogram", "Queue duration per request in milliseconds")
        self.compute_ms = histogram("nv_inference_compute_infer_duration_ms_histogram", "Compute duration per execution in milliseconds")
        names = "|".join(map(re.escape, self._counters))
        self._counter_total = re.compile(rf"^((?:# (?:HELP|TYPE) )?(?:{names}))_total(?=[ {{])", re.M)
        self._created = re.compile(r"^(?:# (?:HELP|TYPE) )?\w+_created[ {].*\n", re.M)

    def declare(self, model: str) -> None:
        """Show a model's counters at 0 from the start (Prometheus `rate()` needs the first sample)."""
        for counter in (self.request_success, self.inference_count, self.exec_count, self.request_duration_us, self.queue_duration_us, self.compute_infer_duration_us):
            counter.touch(model=model, version=self.VERSION)
        self.pending.touch(model=model, version=self.VERSION)

    def request_done(self, model: str, duration_s: float, failure_reason: str | None = None) -> None:
        if failure_reason is None:
            self.request_success.inc(model=model, version=self.VERSION)
        else:
            self.request_failure.inc(model=model, version=self.VERSION, reason=failure_reason)
        self.request_duration_us.inc(duration_s * 1e6, model=model, version=self.VERSION)

    def batch_done(self, model: str, rows: int, compute_s: float, queue_s: list[float]) -> None:
        labels = {"model": model, "version": self.VERSION}
        self.inference_count.inc(rows, **labels)
        self.exec_count.inc(model=model, version=self.VERSION)
        self.batch_size.observe(rows, **labels)
        self.compute_infer_duration_us.inc(compute_s * 1e6, **labels)
        self.compute_ms.observe(compute_s * 1e3, **labels)
        for waited in queue_s:
            self.queue_duration_us.inc(waited * 1e6, **labels)
            self.queue_ms.observe(waited * 1e3, **labels)

    def render(self) -> str:
        """The text exposition (CONTENT_TYPE): prometheus_client's, with Triton's counter names."""
        text = prometheus_client.generate_latest(self.registry).decode("utf-8")
        return self._counter_total.sub(r"\1", self._created.sub("", text))


def failure_reason(status: int) -> str:
    """Triton's `reason` label from our HTTP status.

    Triton's metrics guide ("Failure Count Categories") defines REJECTED as failures from a
    request timeout in the scheduler (its core also rejects requests past `max_queue_size`),
    CANCELED as requests cancelled in the core, BACKEND as failures while the model executes,
    and OTHER as everything else. So: 503 (queue full, or the model not ready to take
    requests) is REJECTED; 504 (deadline passed; the server cancels the work) CANCELED; 500
    (the graph or pipeline raised) BACKEND; a bad request (400, 404, 413, 415, ...) is the
    client's error, never REJECTED: OTHER."""
    if status == 503:
        return "REJECTED"
    if status == 504:
        return "CANCELED"
    if status == 500:
        return "BACKEND"
    return "OTHER"
