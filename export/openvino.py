"""OpenVINO backend: the pipeline's graphs as OpenVINO compiled models on the CPU.

    zoo export NAME --format openvino|openvino-bf16|openvino-int8 --out DIR
    create_model(NAME, backend="openvino", export_dir=DIR)

The IR (`<graph>.xml` + `.bin`) is converted from the fp32 ONNX file that `--format onnx`
writes (checked against PyTorch first), weights kept in fp32 (`compress_to_fp16=False`).
Precisions, as the manifest's `inference_precision` says per graph:

- `f32`: the IR as converted, compiled with `INFERENCE_PRECISION_HINT=f32` (OpenVINO's CPU
  plugin would otherwise pick bf16 by itself on CPUs that have it); parity at fp32's 1e-4 / 1e-3.
- `bf16`: the same IR compiled with `INFERENCE_PRECISION_HINT=bf16`; only where the CPU reports
  BF16 in `OPTIMIZATION_CAPABILITIES` (AVX-512 BF16 or AMX), refused otherwise.
- `int8`: post-training static quantisation with NNCF on the family's own data
  (zoo.export.quantize), network layers only (convolutions and matmuls); the rest (a graph's map
  post-processing: resize, subtract, square, mean, pad) stays fp32, so its outputs are not
  clipped at the calibration range.

Lower precisions are judged by the family's task metric against fp32 PyTorch on held-out data
(zoo.export.quantize.judge) and refused beyond the declared tolerance. Threads: the process's
CPUs (`zoo.export.runtime.available_cpus`), one stream, latency hint: a request is one call.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zoo.export.common import FP32_TOLERANCE, ExportError, raise_if_refused, write_manifest
from zoo.export.runtime import available_cpus, exported_graphs

if TYPE_CHECKING:
    import openvino as ov

    from zoo.pipeline import GraphSpec, Pipeline

PRECISIONS = ("f32", "bf16", "int8")
# ONNX-converted IR op types that hold the network's weights: what int8 quantises.
NETWORK_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul")


class OpenVinoUnavailable(ExportError):
    """openvino is not installed, or the CPU lacks what a precision needs."""


def require_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as err:  # a base dependency; a clear message where an install dropped it
        raise OpenVinoUnavailable(f"the openvino backend needs the `openvino` package (pip install openvino): {err}") from None
    return ov


_CORE: Any = None
_CORE_LOCK = threading.Lock()


def core() -> ov.Core:
    """One process-wide OpenVINO Core (it owns the plugins and their thread pools)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = require_openvino().Core()
        return _CORE


def cpu_capabilities() -> list[str]:
    """What the CPU plugin reports (e.g. FP32, BF16, INT8, FP16, BIN, EXPORT_IMPORT)."""
    return [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def bf16_unsupported_reason() -> str | None:
    """None where the CPU computes bf16 natively; otherwise why bf16 is skipped."""
    caps = cpu_capabilities()
    if "BF16" in caps:
        return None
    return f"this CPU does not report BF16 to OpenVINO (capabilities: {', '.join(caps)}); bf16 needs AVX-512 BF16 or AMX"


def compile_config(precision: str = "f32", threads: int | None = None, streams: int = 1) -> dict[str, str]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {
        "INFERENCE_NUM_THREADS": str(threads or available_cpus()),
        # int8 IR: the quantised layers run int8 whatever the hint; the rest stays f32
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": str(streams),
    }


def compile_model(path: str | Path | Any, precision: str = "f32", threads: int | None = None, streams: int = 1) -> ov.CompiledModel:
    """An IR file (.xml), an ONNX file, or an in-memory ov.Model compiled for the CPU."""
    if precision == "bf16":
        reason = bf16_unsupported_reason()
        if reason:
            raise OpenVinoUnavailable(reason)
    model = str(path) if isinstance(path, (str, Path)) else path
    return core().compile_model(model, "CPU", compile_config(precision, threads, streams))


def convert_onnx(onnx_path: str | Path, xml_path: str | Path) -> Any:
    """ONNX -> OpenVINO IR (fp32 weights); returns the ov.Model."""
    ov = require_openvino()
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return model


class OpenVinoRunner:
    """One graph as an OpenVINO compiled model, called like the torch module: tensors in, tensors out.

    One infer request per calling thread (a request is not reentrant; a compiled model serves
    several at once), outputs copied out of the request's buffers before they are reused."""

    def __init__(self, compiled: ov.CompiledModel, spec: GraphSpec, device: str | torch.device = "cpu", precision: str = "f32"):
        self.compiled = compiled
        self.spec = spec
        self.device = torch.device(device)
        self.precision = precision
        expected_in = [t.name for t in spec.inputs]
        expected_out = [t.name for t in spec.outputs]
        # A port may carry several tensor names (an input feeding an Add straight away is also named after
        # it), so each card name must be among its port's names, in order; inputs are fed by position.
        found_in = [set(p.get_names()) for p in compiled.inputs]
        found_out = [set(p.get_names()) for p in compiled.outputs]
        if len(found_in) != len(expected_in) or len(found_out) != len(expected_out) or any(
                name not in names for name, names in zip(expected_in + expected_out, found_in + found_out)):
            raise ExportError(
                f"graph {spec.name!r}: OpenVINO inputs {[sorted(n) for n in found_in]} / outputs {[sorted(n) for n in found_out]} "
                f"do not match the card's {expected_in} / {expected_out}; re-export"
            )
        self.input_names = expected_in
        self.output_names = expected_out
        self.input_types = [np.int64 if t.dtype.startswith("int") else np.float32 for t in spec.inputs]
        self._local = threading.local()

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run_numpy(self, *arrays: np.ndarray) -> list[np.ndarray]:
        request = self._request()
        request.infer({i: np.ascontiguousarray(a, dtype=t) for i, (a, t) in enumerate(zip(arrays, self.input_types))})
        return [np.array(request.get_output_tensor(i).data, copy=True) for i in range(len(self.output_names))]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"graph {self.spec.name!r} takes {len(self.input_names)} inputs, got {len(inputs)}")
        outputs = self.run_numpy(*(x.detach().to("cpu").numpy() for x in inputs))
        return tuple(torch.from_numpy(o).to(self.device) for o in outputs)


def attach_openvino(
    pipeline: Pipeline,
    export_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    check_weights: bool = True,
    precision: str | None = None,
    **_: Any,
) -> None:
    """Entry point `zoo.backends: openvino`: replace each graph with an OpenVINO compiled model.

    export_dir: a folder written by `zoo export NAME --format openvino|openvino-bf16|openvino-int8`
    (an `--format onnx` folder works too: OpenVINO reads ONNX). precision: override the manifest's
    inference precision ("f32" or "bf16"; e.g. bf16 over an fp32 IR)."""
    if export_dir is None:
        raise ExportError("the openvino backend needs export_dir= (a folder written by `zoo export NAME --format openvino --out DIR`)")
    if torch.device(device).type != "cpu":
        raise ExportError(f"the openvino backend runs on the CPU; device {device!r} is not supported")
    for spec, entry, path in exported_graphs(pipeline, Path(export_dir), check_weights, file_key="ir"):
        chosen = precision or entry.get("inference_precision", "f32")
        compiled = compile_model(path, chosen, threads)
        pipeline.set_runner(spec.name, OpenVinoRunner(compiled, spec, device, chosen))


# -- export ----------------------------------------------------------------------------------
def export_openvino(
    pipeline: Pipeline,
    out_dir: str | Path,
    precision: str = "f32",
    exporter: str = "auto",
    weights: Any = None,
    raise_on_failure: bool = True,
    calibration_size: int | None = None,
) -> dict[str, Any]:
    """`zoo export NAME --format openvino[-bf16|-int8]`: `<graph>.xml/.bin` per graph plus `export.json`.

    Per graph the manifest holds `parity_fp32` (the ONNX the IR came from against PyTorch),
    `parity` (the IR through OpenVINO at this precision against fp32 PyTorch) and, below fp32,
    `task_metric` (metric, tolerance, fp32 and export figures on held-out data) and, for int8,
    `quantization` (tool, calibration data, what was kept in fp32)."""
    from zoo.export.onnx import base_manifest, export_onnx_graph, prepare
    from zoo.export.quantize import LOW_PRECISION_TOLERANCE, check_runner_parity, judge, ladder_refusal

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    require_openvino()
    fmt = {"f32": "openvino", "bf16": "openvino-bf16", "int8": "openvino-int8"}[precision]
    pipeline = prepare(pipeline)
    refusal = ladder_refusal(pipeline, precision)
    if precision == "bf16" and refusal is None:
        refusal = bf16_unsupported_reason()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = base_manifest(pipeline, fmt, weights)
    manifest["versions"]["openvino"] = require_openvino().__version__
    if refusal is not None:
        manifest["refused"] = refusal
        write_manifest(out_dir, manifest)
        raise OpenVinoUnavailable(f"{fmt} for {manifest['model']}: {refusal}")
    scratch = Path(tempfile.mkdtemp(prefix=".fp32-", dir=out_dir))
    calibration = None
    try:
        for spec in pipeline.graph_specs():
            entry = export_onnx_graph(spec, scratch, exporter)
            entry["parity_fp32"] = entry.pop("parity")
            if not entry["parity_fp32"]["passed"]:
                entry["parity"] = {"passed": False, "checks": [{"passed": False, "dims": {}, "error": "the fp32 ONNX export already failed"}]}
                manifest["graphs"][spec.name] = entry
                continue
            xml = out_dir / f"{spec.name}.xml"
            model = convert_onnx(scratch / entry["file"], xml)
            if precision == "int8":
                from zoo.export.quantize import calibration_inputs, nncf_quantize

                if calibration is None:
                    calibration = calibration_inputs(pipeline, size=calibration_size)
                model, entry["quantization"] = nncf_quantize(model, spec, calibration)
                require_openvino().save_model(model, str(xml), compress_to_fp16=False)
            entry.update(file=xml.name, ir=xml.name, weights_file=xml.with_suffix(".bin").name, inference_precision=precision,
                         runtime="openvino")
            try:
                compiled = compile_model(xml, precision)
            except RuntimeError as err:  # OpenVINO cannot compile what it wrote (seen: ViDT's NNCF int8 IR, a Transpose's shape inference)
                message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())[:600]
                entry["parity"] = {"passed": False, "checks": [{"passed": False, "dims": {}, "error": f"OpenVINO could not compile the {precision} IR: {message}"}]}
                manifest["graphs"][spec.name] = entry
                continue
            runner = OpenVinoRunner(compiled, spec, "cpu", precision)
            tol = FP32_TOLERANCE if precision == "f32" else LOW_PRECISION_TOLERANCE[precision]
            entry["parity"] = check_runner_parity(spec, runner.run_numpy, tol, elementwise=precision == "f32")
            if precision != "f32":
                entry["task_metric"] = judge(pipeline, spec, runner.run_numpy, precision, calibration)
                entry["parity"]["passed"] = entry["parity"]["passed"] and entry["task_metric"]["passed"]
            manifest["graphs"][spec.name] = entry
    except Exception:
        write_manifest(out_dir, manifest)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_manifest(out_dir, manifest)
    if raise_on_failure:
        raise_if_refused(manifest, fmt, out_dir)
    return manifest
