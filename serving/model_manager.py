"""The models one server serves: loading, readiness, and each graph's batcher.

Driven by the registry: every registered model (or the ones named) is loaded through
`create_model` with its bundled demo weights, one at a time, each in its own try block, so a
model that fails to load is reported on its own ready endpoint while the others serve.

Each loaded model is an Open Inference Protocol model under its own name (the pipeline:
typed inputs in, result out; `zoo.serving.oip_pipeline`), and each of its graphs one more,
named after the graph (`v2_model_name`), with its own `GraphBatcher`. The batcher is also
installed as the pipeline's runner for that graph, so REST and pipeline-level v2
predictions (preprocess -> graph -> postprocess in a worker thread) batch together with
graph-level v2 requests for the same graph.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.registry import parse_model_list
from zoo.serving.batching import BatchingConfig, GraphBatcher, is_batchable
from zoo.serving.errors import ExecutionError, ModelUnavailable, NotFound, QueueFull, ServingError
from zoo.serving.metrics import ServingMetrics, failure_reason

if TYPE_CHECKING:
    from zoo.pipeline import GraphSpec, Pipeline
    from zoo.registry import ModelCard

log = logging.getLogger(__name__)

LOADING, READY, FAILED, UNLOADED = "loading", "ready", "failed", "unloaded"


def v2_model_name(model: str, graph: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """The Open Inference Protocol name of a graph: the graph's own name, as in the Triton
    model repository `zoo export --format triton` writes (so one client script works against
    both servers); `model.graph` where that name is `taken`: it names a served model (the
    model's own name belongs to its pipeline-level v2 model, so EfficientAD's graph
    "efficientad" is "efficientad.efficientad"), or another served model has a graph of
    that name. `model.graph` is accepted for every graph as an alias."""
    return f"{model}.{graph}" if graph in taken else graph


# The cancel flag of the prediction this worker thread runs (ModelManager.predict sets it).
_running = threading.local()


def _raise_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        from zoo.serving.errors import RequestTimeout

        raise RequestTimeout("prediction cancelled: its request timed out or went away")


class BatchedRunner:
    """A pipeline graph runner that queues its call on the graph's batcher (from a worker
    thread) and falls back to the direct call where no serving loop runs.

    Every graph call of a prediction passes here, so this is where a timed-out prediction
    stops: a multi-step pipeline (DocDiff's sampler over tiles) raises at its next graph call
    instead of running to the end for nobody, and a call still queued is dropped unrun."""

    def __init__(self, batcher: GraphBatcher, direct: Any):
        self.batcher = batcher
        self.direct = direct

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cancel = getattr(_running, "cancel", None)
        _raise_if_cancelled(cancel)
        out = self.batcher.submit_threadsafe(inputs, cancel=cancel)
        return out if out is not None else tuple(self.direct(*inputs))


class TorchGraphRunner:
    """The graph's module run as `Pipeline.run_graph` runs it when no backend replaced it."""

    def __init__(self, pipeline: Pipeline, spec: GraphSpec):
        self.module = spec.module
        self.device = pipeline.device

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            out = self.module(*(x.to(self.device) for x in inputs))
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


@dataclass
class GraphEndpoint:
    """One graph served as one v2 model."""

    name: str  # v2 model name
    model: str  # registry name of the model it belongs to
    graph: str
    spec: GraphSpec | None = None
    batcher: GraphBatcher | None = None
    max_batch_size: int = 0  # Triton's meaning: 0 = no batch dimension
    batch_dim: str | None = None
    direct: Any = None  # the runner the batcher calls (backend session or torch module)


@dataclass
class ModelEntry:
    name: str
    variant: str | None
    card: ModelCard
    status: str = LOADING
    error: str | None = None
    pipeline: Pipeline | None = None
    graphs: list[str] = field(default_factory=list)  # v2 names
    load_seconds: float | None = None
    inflight: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "variant": self.pipeline.variant if self.pipeline is not None else (self.variant or self.card.default_variant),
            "task": self.card.task,
            "result_type": self.card.result_type,
            "status": self.status,
            "error": self.error,
            "backend": self.pipeline.backend if self.pipeline is not None else None,
            "graphs": list(self.graphs),
            "inputs": [i.to_json() for i in self.card.inputs],
            "options": [o.to_json() for o in self.card.options],
            "load_seconds": self.load_seconds,
        }


class ModelManager:
    """Loads models, owns their graph batchers, answers lookups and readiness."""

    def __init__(
        self,
        models: str | Sequence[str] | Mapping[str, Pipeline] | None = None,
        *,
        backend: str = "torch",
        device: str = "cpu",
        export_dir: str | Path | None = None,
        batching: BatchingConfig | None = None,
        metrics: ServingMetrics | None = None,
        predict_threads: int | None = None,
        random_weights: bool = False,
        lazy: bool | None = None,
    ):
        """lazy: load generative models (cards whose result is a `Generation`) on their first
        request instead of at start-up; None (default) does so when more than one model is
        served, so `zoo serve` starts fast and holds only what is used."""
        from zoo.registry import get_card

        self.backend = backend
        self.device = device
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.random_weights = random_weights  # True: weights="random" for every model (never implied)
        self.batching = batching or BatchingConfig()
        self.metrics = metrics or ServingMetrics()
        self.entries: dict[str, ModelEntry] = {}
        self.endpoints: dict[str, GraphEndpoint] = {}
        self._preloaded: dict[str, Pipeline] = {}
        self._lazy_loads: dict[str, threading.Thread] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._loading = True
        self._lock = threading.Lock()
        # REST predictions run pre/postprocessing here; enough threads to fill a batch.
        threads = predict_threads or max(8, 2 * self.batching.max_batch_size)
        self.predict_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="zoo-predict")

        if isinstance(models, Mapping):
            specs = []
            for name, pipeline in models.items():
                if pipeline.card is None:
                    raise ValueError(f"pipeline {name!r} has no card: build it with zoo.create_model")
                self._preloaded[name] = pipeline
                specs.append((name, pipeline.variant or None))
        else:
            specs = parse_model_list(models)
        if not specs:
            raise ValueError("no models to serve (none registered, or --models named none)")
        cards = {}
        for name, variant in specs:
            try:
                card = get_card(name)
            except KeyError as err:
                raise ValueError(str(err.args[0])) from None
            if variant is not None and variant not in card.variants:
                raise ValueError(f"model {name!r} has no variant {variant!r}; variants: {', '.join(card.variants)}")
            cards[name] = (card, variant)
        # Bare graph names that two served models share, or that name a served model (its pipeline's v2 name), get prefixed.
        counts: dict[str, int] = {}
        for card, _ in cards.values():
            for graph in set(card.graphs):
                counts[graph] = counts.get(graph, 0) + 1
        self.taken = frozenset(g for g, n in counts.items() if n > 1) | frozenset(
            g for card, _ in cards.values() for g in card.graphs if g in cards
        )
        self.aliases: dict[str, str] = {}  # "model.graph" -> v2 name
        if lazy is None:
            lazy = len(cards) > 1
        for name, (card, variant) in cards.items():
            entry = ModelEntry(name, variant, card)
            if lazy and card.result_type == "Generation" and name not in self._preloaded:
                entry.status = UNLOADED
            for graph in card.graphs:
                v2 = v2_model_name(name, graph, self.taken)
                entry.graphs.append(v2)
                self.endpoints[v2] = GraphEndpoint(v2, name, graph)
                self.aliases[f"{name}.{graph}"] = v2
            self.entries[name] = entry
        for name in self.entries:
            self.metrics.declare(name)
        for v2 in self.endpoints:
            self.metrics.declare(v2)

    # -- loading -------------------------------------------------------------------------
    def load_all(self) -> None:
        """Load every model in turn (blocking); a failure marks that model failed and moves on."""
        try:
            for entry in self.entries.values():
                if entry.status != UNLOADED:
                    self.load(entry)
        finally:
            self._loading = False

    def _ensure_loading(self, entry: ModelEntry) -> threading.Thread | None:
        """Start loading a lazily served model on its first request (in a thread, so the event
        loop keeps serving); returns the loading thread while one runs."""
        with self._lock:
            if entry.status == UNLOADED:
                entry.status = LOADING
                thread = threading.Thread(target=self.load, args=(entry,), name=f"zoo-load-{entry.name}", daemon=True)
                self._lazy_loads[entry.name] = thread
                thread.start()
            return self._lazy_loads.get(entry.name)

    def load(self, entry: ModelEntry) -> None:
        started = time.perf_counter()
        try:
            pipeline = self._preloaded.get(entry.name) or self._create(entry)
            self._attach(entry, pipeline)
        except Exception as err:  # any failure stays with this model
            log.exception("model %s failed to load", entry.name)
            entry.status, entry.error, entry.pipeline = FAILED, f"{type(err).__name__}: {err}", None
            return
        entry.load_seconds = round(time.perf_counter() - started, 3)
        entry.status = READY
        log.info("model %s ready (%s, %.2f s)", entry.name, entry.pipeline.backend if entry.pipeline else "?", entry.load_seconds)

    def _create(self, entry: ModelEntry) -> Pipeline:
        from zoo.registry import create_model

        options: dict[str, Any] = {}
        if self.export_dir is not None:
            # one folder per model (DIR/NAME, as `zoo export NAME --out DIR/NAME` writes), or DIR itself
            per_model = self.export_dir / entry.name
            options["export_dir"] = per_model if per_model.is_dir() else self.export_dir
        if self.batching.instances > 1 and self.backend in ("onnxruntime", "openvino"):
            from zoo.serving.batching import threads_per_instance

            options["threads"] = threads_per_instance(self.batching.instances)  # instances share the cores, as Triton's CPU instances do
        weights = "random" if self.random_weights else None
        return create_model(entry.name, entry.variant, weights=weights, backend=self.backend, device=self.device, **options)

    def _attach(self, entry: ModelEntry, pipeline: Pipeline) -> None:
        """Put a batcher in front of each graph of the loaded pipeline."""
        specs = {spec.name: spec for spec in pipeline.graph_specs()}
        names = []
        for graph, spec in specs.items():
            v2 = v2_model_name(entry.name, graph, self.taken)
            self.aliases[f"{entry.name}.{graph}"] = v2
            endpoint = self.endpoints.get(v2) or GraphEndpoint(v2, entry.name, graph)
            self.endpoints[v2] = endpoint
            names.append(v2)
            shapes_in = [t.shape for t in spec.inputs]
            shapes_out = [t.shape for t in spec.outputs]
            batchable = is_batchable(shapes_in, shapes_out)
            batch_dim = str(shapes_in[0][0]) if batchable else None
            graph_max = spec.dims[batch_dim][2] if batchable and batch_dim in spec.dims else self.batching.max_batch_size
            # Runners a backend installed (ONNX Runtime sessions) stay the ones that compute;
            # reading the pipeline's table is the only way to get at them before wrapping.
            direct = pipeline._runners.get(graph) or TorchGraphRunner(pipeline, spec)
            batcher = GraphBatcher(v2, direct, batchable=batchable, config=self.batching, metrics=self.metrics, max_batch_size=graph_max)
            if self.loop is not None and self._loop_thread is not None:
                batcher.bind(self.loop, self._loop_thread)
            endpoint.spec, endpoint.batcher, endpoint.direct, endpoint.batch_dim = spec, batcher, direct, batch_dim
            endpoint.max_batch_size = batcher.max_batch_size if batchable else 0
            pipeline.set_runner(graph, BatchedRunner(batcher, direct))
        for stale in set(entry.graphs) - set(names):  # the card listed a graph the pipeline lacks
            self.endpoints.pop(stale, None)
        entry.graphs = names
        entry.pipeline = pipeline

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Remember the serving loop (call from its thread) so worker threads can reach the batchers."""
        loop = loop or asyncio.get_running_loop()
        if self.loop is loop:
            return
        self.loop, self._loop_thread = loop, threading.get_ident()
        for endpoint in list(self.endpoints.values()):
            if endpoint.batcher is not None:
                endpoint.batcher.loop = None
                endpoint.batcher.bind(loop, self._loop_thread)

    # -- lookups -------------------------------------------------------------------------
    @property
    def loading(self) -> bool:
        return self._loading

    @property
    def ready(self) -> bool:
        """Server readiness: loading finished and at least one model serves."""
        return not self._loading and any(e.status in (READY, UNLOADED) for e in self.entries.values())

    def entry(self, name: str) -> ModelEntry:
        if name not in self.entries:
            served = ", ".join(sorted(self.entries)) or "none"
            raise NotFound(f"unknown model {name!r}; this server serves: {served}")
        return self.entries[name]

    def ready_entry(self, name: str, wait: bool = False) -> ModelEntry:
        """The entry if it serves; a lazily served model starts loading (503 with Retry-After
        until it is ready, or, with `wait`, this thread waits for it)."""
        entry = self.entry(name)
        thread = self._ensure_loading(entry)
        if wait and thread is not None:
            thread.join()
        _raise_unless_ready(entry)
        return entry

    def endpoint(self, v2_name: str) -> GraphEndpoint:
        """A graph's v2 model by name or `model.graph` alias (a served model's own name is its
        pipeline-level v2 model: look that up in `entries`)."""
        endpoint = self.endpoints.get(v2_name) or self.endpoints.get(self.aliases.get(v2_name, ""))
        if endpoint is None:
            if v2_name in self.taken:
                owners = sorted(f"{e.name}.{v2_name}" for e in self.entries.values() if v2_name in e.card.graphs)
                raise NotFound(f"model {v2_name!r} is ambiguous here: use {' or '.join(owners)}")
            served = ", ".join(sorted({*self.entries, *self.endpoints})) or "none"
            raise NotFound(f"unknown model {v2_name!r}; v2 models served: {served}")
        return endpoint

    def ready_endpoint(self, v2_name: str) -> GraphEndpoint:
        endpoint = self.endpoint(v2_name)
        entry = self.entries[endpoint.model]
        self._ensure_loading(entry)
        _raise_unless_ready(entry)
        return endpoint

    def model_status(self, name: str) -> tuple[bool, str | None]:
        """(ready, reason) for a v2 model (or its alias) or a registry model name."""
        if name in self.entries:
            entry = self.entries[name]
        else:
            entry = self.entries[self.endpoint(name).model]
        if entry.status == READY:
            return True, None
        if entry.status == UNLOADED:
            return False, f"model {entry.name!r} is not loaded yet: it loads on its first request"
        if entry.status == LOADING:
            return False, f"model {entry.name!r} is still loading"
        return False, f"model {entry.name!r} failed to load: {entry.error}"

    # -- running -------------------------------------------------------------------------
    async def infer(self, endpoint: GraphEndpoint, inputs: Sequence[torch.Tensor], timeout_s: float | None = None) -> tuple[torch.Tensor, ...]:
        self.bind_loop()
        assert endpoint.batcher is not None
        return await endpoint.batcher.submit(inputs, timeout_s)

    async def predict(self, entry: ModelEntry, value: Any, options: dict[str, Any], timeout_s: float | None = None) -> Any:
        """pipeline.predict(value, **options) in a worker thread, its graphs batched, within the timeout."""
        from zoo.imageio import ImageDecodeError
        from zoo.serving.errors import BadRequest, RequestTimeout

        self.bind_loop()
        limit = self.batching.queue_size + self.batching.max_batch_size
        with self._lock:
            if entry.inflight >= limit:
                raise QueueFull(f"model {entry.name!r} has {entry.inflight} requests in flight (limit {limit}); retry later")
            entry.inflight += 1
        timeout_s = self.batching.timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        cancel = threading.Event()  # set when we stop waiting (timeout, client gone): the work stops too

        def work() -> Any:
            _running.cancel = cancel
            try:
                return entry.pipeline.predict(value, **options)
            finally:
                _running.cancel = None

        try:
            future = loop.run_in_executor(self.predict_pool, work)
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"prediction with {entry.name!r} timed out after {timeout_s:g} s") from None
        except ServingError:
            raise
        except (ImageDecodeError, ValueError) as err:
            raise BadRequest(f"{entry.name}: {err}") from err
        except Exception as err:
            log.exception("model %s failed on a prediction", entry.name)
            raise ExecutionError(f"{entry.name} failed: {type(err).__name__}: {err}") from err
        finally:
            cancel.set()
            with self._lock:
                entry.inflight -= 1

    def pipeline(self, name: str) -> Pipeline:
        """For the demo: the loaded pipeline (its predictions counted in the metrics under the
        model's name, as REST ones are), or an error that says why there is none."""
        entry = self.ready_entry(name, wait=True)
        assert entry.pipeline is not None
        return CountedPipeline(entry.pipeline, name, self.metrics)  # type: ignore[return-value]

    async def aclose(self) -> None:
        for endpoint in self.endpoints.values():
            if endpoint.batcher is not None:
                await endpoint.batcher.aclose()
        for entry in self.entries.values():
            if entry.pipeline is None:
                continue
            for v2 in entry.graphs:
                endpoint = self.endpoints.get(v2)
                if endpoint is not None and endpoint.direct is not None:
                    # give the pipeline back as it came: the backend's runner, or plain torch
                    original = None if isinstance(endpoint.direct, TorchGraphRunner) else endpoint.direct
                    entry.pipeline.set_runner(endpoint.graph, original)
        self.predict_pool.shutdown(wait=False, cancel_futures=True)


class CountedPipeline:
    """A served pipeline whose `predict` calls count as requests in the metrics (the demo calls
    the pipeline directly, not through a route); every other attribute is the pipeline's own."""

    def __init__(self, pipeline: Pipeline, name: str, metrics: ServingMetrics):
        self._pipeline, self._name, self._metrics = pipeline, name, metrics

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = self._pipeline.predict(*args, **kwargs)
        except Exception as err:
            # a bad input (ValueError, ImageDecodeError) is the caller's: 400's reason; a raising graph 500's
            status = err.status if isinstance(err, ServingError) else 400 if isinstance(err, ValueError) else 500
            self._metrics.request_done(self._name, time.perf_counter() - started, failure_reason(status))
            raise
        self._metrics.request_done(self._name, time.perf_counter() - started)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)


def _raise_unless_ready(entry: ModelEntry) -> None:
    if entry.status == LOADING:
        raise ModelUnavailable(f"model {entry.name!r} is still loading (generative models load on their first request)",
                               headers={"Retry-After": "1"})
    if entry.status == FAILED:
        raise ModelUnavailable(f"model {entry.name!r} failed to load: {entry.error}")
