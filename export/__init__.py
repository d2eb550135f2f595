"""export: every registered model out of PyTorch, checked, and run elsewhere.

    zoo export NAME --format onnx|onnx-fp16|onnx-int8|openvino|openvino-bf16|openvino-int8|tensorrt|triton --out DIR

- `onnx`: one `<graph>.onnx` per graph the card declares, each run through ONNX Runtime at
  other sizes than the export's and compared with PyTorch (fp32: 1e-4 abs or 1e-3 rel).
- `onnx-fp16`: the same graphs in fp16 with sensitive ops in fp32, 1e-2 plus the task metric.
- `onnx-int8`: static int8 (QDQ, network layers only) calibrated on the family's own data,
  judged by the task metric on held-out data (zoo.export.quantize); runs on `backend="onnxruntime"`.
- `openvino`, `openvino-bf16`, `openvino-int8`: OpenVINO IR, compiled in fp32, bf16 (where the CPU
  has it) or int8 through NNCF (zoo.export.openvino); runs on `backend="openvino"`.
- `tensorrt`: serialized engines built from the (fp16) ONNX; needs TensorRT and a GPU.
- `triton`: a Triton Inference Server model repository over the same files.

Runtime backends plug into the registry through the `zoo.backends` entry points:
`onnxruntime` (zoo.export.runtime), `openvino` (zoo.export.openvino), `tensorrt` (zoo.export.tensorrt), `torch-cuda` (zoo.export.cuda).
Every path is driven by the cards' `GraphSpec`s, so a new family needs no code here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.export.common import FP16_TOLERANCE, FP32_TOLERANCE, ExportError, ParityError, Tolerance, read_manifest

FORMATS = ("onnx", "onnx-fp16", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8", "tensorrt", "triton")
# The precision ladder on CPU: format -> (backend that loads it, precision)
LADDER = {
    "onnx": ("onnxruntime", "fp32"), "onnx-fp16": ("onnxruntime", "fp16"), "onnx-int8": ("onnxruntime", "int8"),
    "openvino": ("openvino", "fp32"), "openvino-bf16": ("openvino", "bf16"), "openvino-int8": ("openvino", "int8"),
}


def export_model(
    name: str,
    fmt: str,
    out: str | Path,
    variant: str | None = None,
    weights: str | Path | None = None,
    exporter: str = "auto",
    precision: str | None = None,
    triton_backend: str = "onnxruntime",
    instance_kind: str = "auto",
    max_queue_delay_us: int = 100,
) -> dict[str, Any]:
    """Build `name` on CPU (weights as `create_model` takes them), export it in `fmt` to `out`,
    and return the manifest (also written to `out/export.json`).

    precision ("fp32" or "fp16") applies to tensorrt (default fp16: engines from fp16 ONNX)
    and triton (default fp32); `onnx` is fp32 and `onnx-fp16` fp16 by name.
    Raises ParityError when an exported graph disagrees with PyTorch, TensorRTUnavailable
    (before any work) where TensorRT or a GPU is missing, KeyError for an unknown model."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if precision not in (None, "fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    fp16 = precision == "fp16" or (precision is None and fmt == "tensorrt")
    if fmt == "tensorrt" or (fmt == "triton" and triton_backend == "tensorrt"):
        from zoo.export.tensorrt import require_tensorrt

        require_tensorrt()
    from zoo.registry import create_model

    pipeline = create_model(name, variant, weights=weights, device="cpu")
    if fmt == "onnx":
        from zoo.export.onnx import export_onnx

        return export_onnx(pipeline, out, exporter=exporter, weights=weights)
    if fmt == "onnx-fp16":
        from zoo.export.fp16 import export_onnx_fp16

        return export_onnx_fp16(pipeline, out, exporter=exporter, weights=weights)
    if fmt == "onnx-int8":
        from zoo.export.quantize import export_onnx_int8

        return export_onnx_int8(pipeline, out, exporter=exporter, weights=weights)
    if fmt.startswith("openvino"):
        from zoo.export.openvino import export_openvino

        precision = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "int8"}[fmt]
        return export_openvino(pipeline, out, precision=precision, exporter=exporter, weights=weights)
    if fmt == "tensorrt":
        from zoo.export.tensorrt import export_tensorrt

        return export_tensorrt(pipeline, out, fp16=fp16, weights=weights, exporter=exporter)
    from zoo.export.triton import export_triton

    return export_triton(
        pipeline, out, backend=triton_backend, fp16=fp16, weights=weights, exporter=exporter,
        max_queue_delay_us=max_queue_delay_us, instance_kind=instance_kind,
    )


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """Human-readable lines for the CLI: one per graph and check."""
    lines = [f"{manifest['model']}/{manifest['variant']} -> {manifest['format']}"]
    for graph, entry in manifest["graphs"].items():
        head = f"  {graph}: {entry['file']} ({entry['exporter']}, opset {entry['opset']})"
        if entry.get("note"):
            head += f"  [{entry['note']}]"
        lines.append(head)
        for key in ("parity_fp32", "parity"):
            parity = entry.get(key)
            if not parity:
                continue
            for check in parity["checks"]:
                figures = ", ".join(
                    f"{o}: max abs {f['max_abs']:.2g}" if "max_abs" in f else f"{o}: {f.get('error')}"
                    for o, f in check.get("outputs", {}).items()
                ) or check.get("error", "")
                status = "ok" if check.get("passed") else "FAILED"
                lines.append(f"    {key} at {check['dims']}: {status} ({figures})")
        metric = entry.get("task_metric")
        if entry.get("quantization"):
            q = entry["quantization"]
            lines.append(f"    int8: {q.get('tool') if q.get('quantized') else q.get('reason', 'nothing quantised')}")
        if metric:
            if "figures" in metric:
                lines.append(f"    {metric['metric']} on {metric['held_out']['samples']} held-out inputs, tolerance {metric['tolerance']}: "
                             f"{'ok' if metric['passed'] else 'REFUSED'} ({_figures(metric['figures'])})")
            elif "reference" in metric:
                lines.append(f"    {metric['metric']}: {metric['reference']:.4f} (fp32) vs {metric['export']:.4f} (export)")
            else:
                lines.append(f"    {metric['metric']}: {'ok' if metric['passed'] else 'FAILED'}")
        if "tensorrt" in entry:
            lines.append(f"    engine: {entry['tensorrt']['plan']} ({entry['tensorrt']['tensorrt']})")
        if "triton" in entry:
            lines.append(f"    triton: {entry['triton']['config']} ({entry['triton']['platform']})")
    return lines


def _figures(figures: dict[str, Any]) -> str:
    parts = []
    for key, value in figures.items():
        if isinstance(value, dict):
            parts.append(f"{key} " + " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()))
        else:
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "; ".join(parts)


__all__ = [
    "FORMATS", "LADDER", "FP16_TOLERANCE", "FP32_TOLERANCE", "ExportError", "ParityError", "Tolerance",
    "export_model", "read_manifest", "summary_lines",
]
