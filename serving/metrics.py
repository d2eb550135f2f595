"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

`prometheus_client` is not a dependency: the three metric kinds the server needs (counter,
gauge, histogram) fit in this file. Names follow Triton's `nv_inference_*` family so that
dashboards built for Triton read ours:

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
"""

from __future__ import annotations

import math
import threading
from typing import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
DURATION_MS_BUCKETS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def _escape(value: str) -> str:
    """Label values escape backslash, double quote and newline (exposition format spec)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = [*zip(names, values), *extra]
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs) + "}"


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()):
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"metric {self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()):
        super().__init__(name, help_text, labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def touch(self, **labels: str) -> None:
        """Create the series at 0 so it shows before the first event."""
        key = self._key(labels)
        with self._lock:
            self._values.setdefault(key, 0.0)

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def total(self, **partial: str) -> float:
        """Sum over every series whose labels include `partial` (e.g. all failure reasons of a model)."""
        index = {n: i for i, n in enumerate(self.labelnames)}
        with self._lock:
            return sum(v for k, v in self._values.items() if all(k[index[n]] == str(want) for n, want in partial.items()))

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_format_value(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)


class Histogram(_Metric):
    """Cumulative buckets `le`, plus `_sum` and `_count` (exposition format)."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = (), buckets: Iterable[float] = DURATION_MS_BUCKETS):
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._series: dict[tuple[str, ...], list[float]] = {}  # per-bucket counts (not cumulative), then sum, count

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
                    break
            series[-2] += value
            series[-1] += 1

    def count(self, **labels: str) -> float:
        series = self._series.get(self._key(labels))
        return series[-1] if series else 0.0

    def render(self) -> list[str]:
        lines = []
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for key, series in items:
            running = 0.0
            for bound, n in zip(self.buckets, series):
                running += n
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, (('le', _format_value(bound)),))} {_format_value(running)}")
            lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, (('le', '+Inf'),))} {_format_value(series[-1])}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_format_value(series[-2])}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {_format_value(series[-1])}")
        return lines


class Registry:
    """An ordered set of metrics rendered together."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines += metric.header()
            lines += metric.render()
        return "\n".join(lines) + "\n"


class ServingMetrics:
    """The server's metrics; `model` is the v2 model name (a graph) or the REST model name."""

    VERSION = "1"

    def __init__(self) -> None:
        self.registry = Registry()
        labels = ("model", "version")
        add = self.registry.add
        self.request_success: Counter = add(Counter("nv_inference_request_success", "Number of successful inference requests, all batch sizes", labels))  # type: ignore[assignment]
        self.request_failure: Counter = add(Counter("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", (*labels, "reason")))  # type: ignore[assignment]
        self.inference_count: Counter = add(Counter("nv_inference_count", "Number of inferences performed (a batch of n counts n)", labels))  # type: ignore[assignment]
        self.exec_count: Counter = add(Counter("nv_inference_exec_count", "Number of model executions performed (a batch counts once)", labels))  # type: ignore[assignment]
        self.request_duration_us: Counter = add(Counter("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds", labels))  # type: ignore[assignment]
        self.queue_duration_us: Counter = add(Counter("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds", labels))  # type: ignore[assignment]
        self.compute_infer_duration_us: Counter = add(Counter("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds", labels))  # type: ignore[assignment]
        self.pending: Gauge = add(Gauge("nv_inference_pending_request_count", "Instantaneous number of pending requests awaiting execution", labels))  # type: ignore[assignment]
        self.batch_size: Histogram = add(Histogram("nv_inference_batch_size", "Rows per model execution", labels, BATCH_BUCKETS))  # type: ignore[assignment]
        self.queue_ms: Histogram = add(Histogram("nv_inference_queue_duration_ms_histogram", "Queue duration per request in milliseconds", labels))  # type: ignore[assignment]
        self.compute_ms: Histogram = add(Histogram("nv_inference_compute_infer_duration_ms_histogram", "Compute duration per execution in milliseconds", labels))  # type: ignore[assignment]

    def declare(self, model: str) -> None:
        """Show a model's counters at 0 from the start (Prometheus `rate()` needs the first sample)."""
        for counter in (self.request_success, self.inference_count, self.exec_count, self.request_duration_us, self.queue_duration_us, self.compute_infer_duration_us):
            counter.touch(model=model, version=self.VERSION)
        self.pending.touch(model=model, version=self.VERSION)

    def request_done(self, model: str, duration_s: float, failure_reason: str | None = None) -> None:
        labels = {"model": model, "version": self.VERSION}
        if failure_reason is None:
            self.request_success.inc(**labels)
        else:
            self.request_failure.inc(**labels, reason=failure_reason)
        self.request_duration_us.inc(duration_s * 1e6, **labels)

    def batch_done(self, model: str, rows: int, compute_s: float, queue_s: list[float]) -> None:
        labels = {"model": model, "version": self.VERSION}
        self.inference_count.inc(rows, **labels)
        self.exec_count.inc(**labels)
        self.batch_size.observe(rows, **labels)
        self.compute_infer_duration_us.inc(compute_s * 1e6, **labels)
        self.compute_ms.observe(compute_s * 1e3, **labels)
        for waited in queue_s:
            self.queue_duration_us.inc(waited * 1e6, **labels)
            self.queue_ms.observe(waited * 1e3, **labels)

    def render(self) -> str:
        return self.registry.render()


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
