"""TensorRT: a serialized engine (`<graph>.plan`) built from the exported ONNX, and a backend.

Built with the TensorRT Python API: the ONNX parser fills a *strongly typed* network (every
tensor keeps the type the ONNX file gives it, so an fp16 engine comes from the fp16 ONNX of
`--format onnx-fp16`; TensorRT 11 drops the FP16 builder flag), one optimisation profile
per graph with (min, opt, max) shapes from the card's `GraphSpec.dims`, and a timing cache
kept beside the plans so rebuilds skip kernel timing. `<graph>.plan.json` records what the
engine was built from and for.

TensorRT cannot be installed from PyPI alone (its wheels fetch from NVIDIA's index) and needs
a CUDA GPU: where either is missing, `require_tensorrt` raises `TensorRTUnavailable` naming
what to install, before any work is done.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.export.common import ExportError, dims_from_inputs, example_dims, read_manifest, write_manifest

if TYPE_CHECKING:
    from zoo.pipeline import GraphSpec, Pipeline

TIMING_CACHE = "timing.cache"
DEFAULT_WORKSPACE = 4 << 30  # bytes of scratch memory the builder may use


class TensorRTUnavailable(ExportError):
    """TensorRT or a CUDA GPU is missing; the message says what to install."""


def require_tensorrt() -> Any:
    """Import TensorRT and check for a GPU; raise TensorRTUnavailable naming what is missing."""
    missing = []
    trt = None
    try:
        import tensorrt as trt  # noqa: F811 - lazily imported on purpose

        if not hasattr(trt, "Builder"):  # the PyPI stub or tensorrt-lean: no builder
            missing.append("the full `tensorrt` Python package with its builder (tensorrt-lean has none)")
            trt = None
    except ImportError:
        missing.append(
            "the `tensorrt` Python package (`pip install tensorrt --extra-index-url https://pypi.nvidia.com`, "
            "matching the machine's CUDA; the PyPI wheel alone only fetches it from NVIDIA's index)"
        )
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU with its driver (torch.cuda.is_available() is False)")
    if missing:
        raise TensorRTUnavailable(
            "TensorRT engines cannot be built or run here: missing " + " and ".join(missing)
            + ". The ONNX files (`zoo export NAME --format onnx` / `onnx-fp16`) run everywhere; build the engine "
            "on the GPU machine that will run it (plans are tied to the GPU model and TensorRT version)."
        )
    return trt


def profile_shapes(spec: GraphSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape per input from the card's dims; fixed sizes stay as declared."""
    low = {name: d[0] for name, d in spec.dims.items()}
    opt = example_dims(spec)
    high = {name: d[2] for name, d in spec.dims.items()}
    return {t.name: (t.concrete_shape(low), t.concrete_shape(opt), t.concrete_shape(high)) for t in spec.inputs}


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    spec: GraphSpec,
    timing_cache: str | Path | None = None,
    workspace: int = DEFAULT_WORKSPACE,
    trt: Any = None,
) -> dict[str, Any]:
    """Parse the ONNX into a strongly typed network, add the profile, build, write plan + JSON."""
    trt = trt or require_tensorrt()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    cache_path = Path(timing_cache) if timing_cache else plan_path.with_name(TIMING_CACHE)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    shapes = profile_shapes(spec)
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    plan_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    info = {
        "plan": plan_path.name,
        "onnx": onnx_path.name,
        "tensorrt": getattr(trt, "__version__", "unknown"),
        "strongly_typed": True,
        "profile": {name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in shapes.items()},
        "workspace_bytes": workspace,
        "timing_cache": cache_path.name,
        "build_seconds": round(time.perf_counter() - started, 2),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    plan_path.with_name(plan_path.name + ".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def export_tensorrt(
    pipeline: Pipeline, out_dir: str | Path, fp16: bool = True, weights: Any = None, exporter: str = "auto", **build: Any
) -> dict[str, Any]:
    """`zoo export NAME --format tensorrt`: the checked ONNX (fp16 unless fp16=False), then one
    plan per graph. Stops before exporting anything when TensorRT or a GPU is missing."""
    require_tensorrt()
    from zoo.export.fp16 import export_onnx_fp16
    from zoo.export.onnx import export_onnx

    out_dir = Path(out_dir)
    make = export_onnx_fp16 if fp16 else export_onnx
    manifest = make(pipeline, out_dir, exporter=exporter, weights=weights)
    for spec in pipeline.graph_specs():
        entry = manifest["graphs"][spec.name]
        entry["tensorrt"] = build_engine(out_dir / entry["file"], out_dir / f"{spec.name}.plan", spec, **build)
    manifest["format"] = "tensorrt"
    write_manifest(out_dir, manifest)
    return manifest


class TensorRTRunner:
    """One engine, called like the torch module: CUDA tensors in and out; batches above the
    profile's max are split."""

    def __init__(self, plan: str | Path, spec: GraphSpec, device: str | torch.device = "cuda", trt: Any = None):
        trt = trt or require_tensorrt()
        self.trt = trt
        self.spec = spec
        self.device = torch.device(device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise ExportError(f"{plan}: TensorRT could not load the engine (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.max_batch = spec.dims.get("batch", (1, 1, 1 << 30))[2]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batched = "batch" in self.spec.dims
        n = dims_from_inputs(self.spec, inputs).get("batch", 0) if batched else 0
        if batched and n > self.max_batch:
            parts = [self._run(tuple(x[i : i + self.max_batch] for x in inputs)) for i in range(0, n, self.max_batch)]
            return tuple(torch.cat(chunk) for chunk in zip(*parts))
        return self._run(inputs)

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        stream = torch.cuda.current_stream(self.device)
        keep = []
        for t, x in zip(self.spec.inputs, inputs):
            dtype = _torch_dtype(self.engine.get_tensor_dtype(t.name), self.trt)
            x = x.to(self.device, dtype=dtype).contiguous()
            keep.append(x)
            self.context.set_input_shape(t.name, tuple(x.shape))
            self.context.set_tensor_address(t.name, x.data_ptr())
        outputs = []
        for t in self.spec.outputs:
            shape = tuple(self.context.get_tensor_shape(t.name))
            out = torch.empty(shape, dtype=_torch_dtype(self.engine.get_tensor_dtype(t.name), self.trt), device=self.device)
            self.context.set_tensor_address(t.name, out.data_ptr())
            outputs.append(out)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run graph {self.spec.name!r}")
        return tuple(outputs)


def _torch_dtype(trt_dtype: Any, trt: Any) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int64: torch.int64,
             trt.int8: torch.int8, trt.bool: torch.bool}
    return table[trt_dtype]


def attach_tensorrt(
    pipeline: Pipeline, export_dir: str | Path | None = None, device: str | torch.device = "cuda", check_weights: bool = True, **_: Any
) -> None:
    """Entry point `zoo.backends: tensorrt`: run each graph from `export_dir/<graph>.plan`."""
    trt = require_tensorrt()
    if export_dir is None:
        raise ExportError("the tensorrt backend needs export_dir= (a folder written by `zoo export NAME --format tensorrt`)")
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    from zoo.export.runtime import check_manifest

    check_manifest(pipeline, manifest, export_dir, check_weights)  # same model, checked, same weights
    if torch.device(device).type != "cuda":
        device = "cuda"
    for spec in pipeline.graph_specs():
        entry = manifest["graphs"].get(spec.name, {})
        plan = export_dir / entry.get("tensorrt", {}).get("plan", f"{spec.name}.plan")
        if not plan.is_file():
            raise ExportError(f"{plan} missing: run `zoo export {manifest.get('model')} --format tensorrt --out {export_dir}`")
        pipeline.set_runner(spec.name, TensorRTRunner(plan, spec, device, trt))
