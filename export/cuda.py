"""The torch backend's CUDA fast path: fp16 autocast with CUDA graphs (or torch.compile).

EfficientAD's "millisecond-level latency" is a GPU claim; eager PyTorch at batch 1 spends
most of that time launching kernels. Capturing each graph's forward once per input shape as
a CUDA graph and replaying it removes the launch overhead; autocast runs convolutions and
matmuls in fp16 while keeping reductions and normalisations in fp32 (PyTorch's autocast
op lists), which is the same split the fp16 ONNX export makes.

`attach_torch_cuda(pipeline, mode="cudagraphs" | "compile" | "autocast")` sets runners like
any backend. A CUDA graph replays fixed buffers, so each new input signature (shapes and
dtypes) is captured on first use and kept (LRU, `max_graphs`); outputs are copied out of
the static buffers (and returned as fp32) so a later replay never overwrites a result the
caller still holds. Needs a CUDA GPU; on CPU it raises a clear error.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import torch

from zoo.export.common import ExportError

if TYPE_CHECKING:
    from zoo.pipeline import Pipeline

MODES = ("cudagraphs", "compile", "autocast")
Signature = tuple[tuple[tuple[int, ...], torch.dtype], ...]


def signature(inputs: tuple[torch.Tensor, ...]) -> Signature:
    return tuple((tuple(x.shape), x.dtype) for x in inputs)


class ShapeCache:
    """LRU of callables built per input signature (one CUDA graph per shape)."""

    def __init__(self, build: Callable[[tuple[torch.Tensor, ...]], Callable[..., tuple[torch.Tensor, ...]]], max_entries: int = 8):
        self.build = build
        self.max_entries = max_entries
        self.entries: OrderedDict[Hashable, Callable[..., tuple[torch.Tensor, ...]]] = OrderedDict()
        self.builds = 0

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = signature(inputs)
        runner = self.entries.get(key)
        if runner is None:
            runner = self.build(inputs)
            self.builds += 1
            self.entries[key] = runner
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        return runner(*inputs)


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _export_dtype(t: torch.Tensor) -> torch.Tensor:
    """Half outputs back to fp32 (pipelines and results expect it); always a fresh tensor."""
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t.clone()


class CudaGraphCapture:
    """Builds one replayable CUDA graph for one input signature."""

    def __init__(self, module: torch.nn.Module, device: torch.device, dtype: torch.dtype, warmup: int = 3):
        self.module = module
        self.device = device
        self.dtype = dtype
        self.warmup = warmup

    def __call__(self, inputs: tuple[torch.Tensor, ...]) -> Callable[..., tuple[torch.Tensor, ...]]:
        static_in = [x.to(self.device).clone() for x in inputs]
        # autocast's weight cache must be off during capture (cached casts would outlive the graph)
        autocast = lambda: torch.autocast("cuda", dtype=self.dtype, cache_enabled=False)  # noqa: E731
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode(), autocast():
            for _ in range(self.warmup):  # cuDNN/cuBLAS pick kernels and allocate workspaces here
                self.module(*static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Each shape gets its own memory pool: shared pools are only safe when graphs replay in
        # capture order, and shapes arrive in any order.
        with torch.inference_mode(), autocast(), torch.cuda.graph(graph):
            static_out = _as_tuple(self.module(*static_in))

        def replay(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            for buffer, x in zip(static_in, args):
                buffer.copy_(x, non_blocking=True)
            graph.replay()
            return tuple(_export_dtype(o) for o in static_out)

        return replay


class AutocastRunner:
    """fp16 autocast without capture (mode="autocast"), or around a torch.compile'd module."""

    def __init__(self, module: Callable[..., Any], device: torch.device, dtype: torch.dtype):
        self.module = module
        self.device = device
        self.dtype = dtype

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype):
            out = self.module(*(x.to(self.device) for x in inputs))
        return tuple(_export_dtype(o) for o in _as_tuple(out))


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise ExportError(
            "the CUDA fast path (fp16 + CUDA graphs / torch.compile) needs a CUDA GPU and a CUDA build of torch; "
            "torch.cuda.is_available() is False here. Use the plain torch backend or backend='onnxruntime' on CPU."
        )


def attach_torch_cuda(
    pipeline: Pipeline,
    device: str | torch.device = "cuda",
    mode: str = "cudagraphs",
    dtype: str = "float16",
    max_graphs: int = 8,
) -> None:
    """Run every graph on the GPU in fp16: captured CUDA graphs (default), torch.compile
    (mode="reduce-overhead", which also uses CUDA graphs), or plain autocast. A keyword it
    does not take (a typo, or export_dir meant for onnxruntime) is a TypeError, not ignored."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    require_cuda()
    device = torch.device(device)
    if device.type != "cuda":
        device = torch.device("cuda")
    half = getattr(torch, dtype)
    pipeline.to(device)
    pipeline.eval()
    for spec in pipeline.graph_specs():
        module = spec.module.eval()
        if mode == "cudagraphs":
            runner: Callable[..., tuple[torch.Tensor, ...]] = ShapeCache(CudaGraphCapture(module, device, half), max_graphs)
        elif mode == "compile":
            runner = AutocastRunner(torch.compile(module, mode="reduce-overhead", dynamic=False), device, half)
        else:
            runner = AutocastRunner(module, device, half)
        pipeline.set_runner(spec.name, runner)
