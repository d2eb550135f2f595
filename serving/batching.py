"""Dynamic batching per graph, after Triton's dynamic batcher.

Requests for one graph wait in a bounded queue. A worker task takes the oldest request and
gathers later ones whose non-batch shapes and dtypes match, until the batch holds
`max_batch_size` rows or the oldest request has waited `max_queue_delay_s`; then it runs the
concatenated batch once in a worker thread and hands each request its own rows back.
Requests that do not match wait for a later batch, in arrival order. While a batch runs, new
requests queue up, so under load batches fill without any delay at all.

Limits: a full queue raises `QueueFull` (HTTP 503 with Retry-After); a request that is not
answered within its timeout raises `RequestTimeout` (HTTP 504) and, if it was still queued,
is dropped from the queue unrun.

A graph is batchable when every input and output has the same named leading dimension
(e.g. "batch"); otherwise each request runs alone (Triton's `max_batch_size: 0`).

Instances (Triton's `instance_group { count: N }`): up to `instances` batches of one graph run at
once, each in its own worker thread over the same runner (ONNX Runtime and OpenVINO sessions and
torch modules in inference mode take concurrent calls); the server gives each instance its share
of the cores (`threads_per_instance`). A free instance takes its share of the queue as it stands
(the queued rows split evenly over the free instances: four requests and two idle instances run as
two batches of two at once, not one batch of four beside an idle core, which lost to no batching
on a 2-core CPU); while every instance is busy requests queue up, so batches still form under load.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from zoo.serving.errors import ExecutionError, QueueFull, RequestTimeout, ServingError
from zoo.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

GraphFn = Callable[..., Sequence[torch.Tensor]]
CANCEL_POLL_S = 0.05  # how often a worker thread waiting on a graph call looks at its cancel flag


@dataclass
class BatchingConfig:
    """Server-wide batching settings (each graph gets its own queue with these)."""

    max_batch_size: int = 8  # rows per execution; 1 turns batching off
    max_queue_delay_s: float = 0.0  # how long the oldest request may wait for company (0, as Triton: batches form from what queued during the last run)
    queue_size: int = 64  # requests (not rows) waiting per graph; more -> 503
    timeout_s: float = 30.0  # per request, queue plus compute; -> 504
    instances: int = 1  # batches of one graph that may run at once (Triton's instance_group count); `zoo serve` defaults to the cores

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError("instances must be >= 1")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_queue_delay_s < 0:
            raise ValueError("max_queue_delay_s must be >= 0")
        if self.queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")


@dataclass
class _Pending:
    inputs: tuple[torch.Tensor, ...]
    rows: int
    key: tuple  # what must match to share a batch: per-input shape without the batch dim, dtype
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


MAX_DEFAULT_INSTANCES = 4


def default_instances(device: str = "cpu") -> int:
    """`zoo serve`'s default instance count: one per core on a CPU, up to 4 (beyond that each
    instance keeps several threads, cores // instances); 1 on a GPU (one device, one stream)."""
    if not str(device).startswith("cpu"):
        return 1
    from zoo.export.runtime import available_cpus

    return max(1, min(available_cpus(), MAX_DEFAULT_INSTANCES))


def threads_per_instance(instances: int) -> int:
    """Each instance's share of the cores this process may use (intra-op threads of its runner)."""
    from zoo.export.runtime import available_cpus

    return max(1, available_cpus() // max(1, instances))


def is_batchable(input_shapes: Sequence[Sequence[int | str]], output_shapes: Sequence[Sequence[int | str]]) -> bool:
    """True when all inputs and outputs lead with the same named (dynamic) dimension."""
    shapes = [*input_shapes, *output_shapes]
    if not shapes or any(len(s) == 0 for s in shapes):
        return False
    first = shapes[0][0]
    return isinstance(first, str) and all(s[0] == first for s in shapes)


class GraphBatcher:
    """One graph's queue and worker. `run(*tensors) -> tensors` executes in a private thread."""

    def __init__(
        self,
        name: str,
        run: GraphFn,
        *,
        batchable: bool,
        config: BatchingConfig,
        metrics: ServingMetrics | None = None,
        max_batch_size: int | None = None,
    ):
        self.name = name
        self.run = run
        self.batchable = batchable
        self.config = config
        # the graph may cap rows below the server setting (its `dims["batch"]` maximum)
        self.max_batch_size = min(config.max_batch_size, max_batch_size or config.max_batch_size) if batchable else 1
        self.metrics = metrics
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        # One thread per instance: an instance executes one batch at a time, as a Triton instance does.
        self.instances = config.instances
        self._executor = ThreadPoolExecutor(max_workers=self.instances, thread_name_prefix=f"zoo-batch-{name}")
        self._slots: asyncio.Semaphore | None = None  # free instances, on the serving loop
        self._running: set[asyncio.Task] = set()
        self._closed = False

    # -- submitting ----------------------------------------------------------------------
    async def submit(self, inputs: Sequence[torch.Tensor], timeout_s: float | None = None) -> tuple[torch.Tensor, ...]:
        """Queue one request (its inputs share a leading batch dim when batchable); await its outputs."""
        if self._closed:
            raise ServingError(f"graph {self.name!r} is shutting down", status=503)
        self._ensure_worker()
        if len(self._queue) >= self.config.queue_size:
            raise QueueFull(f"the queue of {self.name!r} is full ({self.config.queue_size} requests waiting); retry later")
        inputs = tuple(inputs)
        rows = int(inputs[0].shape[0]) if self.batchable and inputs and inputs[0].dim() > 0 else 1
        key = tuple((tuple(t.shape[1:]) if self.batchable else tuple(t.shape), t.dtype, t.device) for t in inputs)
        assert self.loop is not None
        pending = _Pending(inputs, rows, key, self.loop.create_future())
        self._queue.append(pending)
        self._set_pending_gauge()
        assert self._wakeup is not None
        self._wakeup.set()
        timeout_s = self.config.timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(pending.future, timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"request to {self.name!r} timed out after {timeout_s:g} s") from None
        finally:
            if not pending.future.done():
                pending.future.cancel()

    def submit_threadsafe(self, inputs: Sequence[torch.Tensor], timeout_s: float | None = None,
                          cancel: threading.Event | None = None) -> tuple[torch.Tensor, ...] | None:
        """From a worker thread (a pipeline's `run_graph`): queue and block for the outputs.
        Once `cancel` is set the wait ends with RequestTimeout and the request, if still
        queued, is dropped unrun.

        Returns None when no serving loop runs (or when called on the loop's own thread, where
        blocking would deadlock): the caller then runs the graph directly."""
        loop = self.loop
        if loop is None or not loop.is_running() or loop.is_closed() or threading.get_ident() == self._loop_thread:
            return None
        future = asyncio.run_coroutine_threadsafe(self.submit(inputs, timeout_s), loop)
        if cancel is None:
            return future.result()
        while True:
            try:
                return future.result(timeout=CANCEL_POLL_S)
            except concurrent.futures.TimeoutError:
                if cancel.is_set():
                    future.cancel()  # cancels `submit`, whose pending request the worker then skips
                    raise RequestTimeout(f"request to {self.name!r} cancelled: its prediction timed out") from None

    def bind(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        """Name the serving loop (from any thread) so that `submit_threadsafe` can reach it;
        the worker task starts there with the first request."""
        if self.loop is None:
            self.loop = loop
            self._loop_thread = loop_thread

    # -- the worker ----------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop or self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._restart(loop)

    def _restart(self, loop: asyncio.AbstractEventLoop) -> None:
        # A new loop (a test client restarted the app): requests queued on the old one can never be answered.
        for pending in self._queue:
            if not pending.future.done() and pending.future.get_loop() is not loop:
                pending.future.get_loop().call_soon_threadsafe(_fail_future, pending.future, ServingError("server restarted", status=503))
        self._queue = collections.deque(p for p in self._queue if p.future.get_loop() is loop)
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.instances)
        self._worker = loop.create_task(self._work(), name=f"zoo-batcher-{self.name}")

    async def _work(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        while True:
            # The batch lives in `_next_batch`'s frame only: idling holds no request's tensors (they may
            # be views that pin a whole request: DocDiff's chunks keep every tile of a page alive, 744 MB at 6000x6000).
            await self._slots.acquire()  # a free instance first: meanwhile requests queue up and batch
            started = False
            try:
                started = await self._next_batch()
            finally:
                if not started:
                    self._slots.release()

    async def _next_batch(self) -> bool:
        """Wait for requests, take a batch and start it on the instance held; True once started."""
        assert self._wakeup is not None
        while True:
            first = batch = None  # noqa: F841
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self._queue[0]
            if first.future.done():  # timed out while queued
                self._queue.popleft()
                self._set_pending_gauge()
                continue
            try:
                if self.max_batch_size > 1 and first.rows < self.max_batch_size:
                    await self._gather(first)
                batch = self._take()
                self._set_pending_gauge()
                if batch:
                    if self.instances == 1:  # run it here: the worker waits, as before instances
                        try:
                            await self._execute(batch)
                        except asyncio.CancelledError:
                            raise
                        except Exception:
                            log.exception("batcher %s: unexpected error", self.name)
                        finally:
                            self._release()
                        return True
                    task = asyncio.get_running_loop().create_task(self._execute(batch))
                    self._running.add(task)
                    task.add_done_callback(self._finished)
                    return True
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stall the queue for good
                log.exception("batcher %s: unexpected error", self.name)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._release()
        if not task.cancelled() and task.exception() is not None:
            log.error("batcher %s: a batch failed unexpectedly", self.name, exc_info=task.exception())

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.release()

    async def _gather(self, first: _Pending) -> None:
        """Wait until the batch is full or the oldest request's delay has run out."""
        assert self._wakeup is not None
        deadline = first.enqueued + self.config.max_queue_delay_s
        while not first.future.done():
            rows = sum(p.rows for p in self._queue if p.key == first.key and not p.future.done())
            remaining = deadline - time.perf_counter()
            if rows >= self.max_batch_size or remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _share(self) -> int:
        """Rows this batch may take: the queue's live rows split over the free instances (this one
        included), at most `max_batch_size`."""
        free = max(1, self.instances - len(self._running))
        if free == 1:
            return self.max_batch_size
        live = sum(p.rows for p in self._queue if not p.future.done())
        return max(1, min(self.max_batch_size, -(-live // free)))

    def _take(self) -> list[_Pending]:
        """Pop the oldest live request and the matching ones after it that still fit its share."""
        batch: list[_Pending] = []
        rest: collections.deque[_Pending] = collections.deque()
        rows = 0
        limit = self._share()
        for pending in self._queue:
            if pending.future.done():
                continue
            fits = not batch or (pending.key == batch[0].key and rows + pending.rows <= limit)
            if fits and (not batch or self.max_batch_size > 1):
                batch.append(pending)
                rows += pending.rows
            else:
                rest.append(pending)
        self._queue = rest
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        assert self.loop is not None
        started = time.perf_counter()
        queue_s = [started - p.enqueued for p in batch]
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = tuple(torch.cat([p.inputs[i] for p in batch], dim=0) for i in range(len(batch[0].inputs)))
        try:
            outputs = await self.loop.run_in_executor(self._executor, self._run, inputs)
        except Exception as err:  # the graph failed: every request in the batch gets the error
            log.exception("graph %s failed on a batch of %d requests", self.name, len(batch))
            error = err if isinstance(err, ServingError) else ExecutionError(f"graph {self.name!r} failed: {type(err).__name__}: {err}")
            for pending in batch:
                _fail_future(pending.future, error)
            return
        compute_s = time.perf_counter() - started
        rows = sum(p.rows for p in batch)
        if self.metrics is not None:
            self.metrics.batch_done(self.name, rows, compute_s, queue_s)
        if len(batch) == 1:
            _resolve(batch[0].future, tuple(outputs))
            return
        sizes = [p.rows for p in batch]
        try:
            pieces = [torch.split(out, sizes, dim=0) for out in outputs]
        except RuntimeError as err:
            for pending in batch:
                _fail_future(pending.future, ExecutionError(f"graph {self.name!r} returned outputs that do not split by batch: {err}"))
            return
        for index, pending in enumerate(batch):
            _resolve(pending.future, tuple(piece[index] for piece in pieces))

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(self.run(*inputs))

    def _set_pending_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.pending.set(len(self._queue), model=self.name, version=self.metrics.VERSION)

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def aclose(self) -> None:
        """Stop the worker and fail whatever still waits."""
        self._closed = True
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        for task in list(self._running):
            task.cancel()
        for pending in self._queue:
            _fail_future(pending.future, ServingError("server shutting down", status=503))
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _resolve(future: asyncio.Future, value: tuple[torch.Tensor, ...]) -> None:
    if not future.done():
        future.set_result(value)


def _fail_future(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
