"""Which graphs the suites measure, and the three ways to run one (eager, compiled, ONNX Runtime).

Everything comes from the registry's cards (`list_models`, `GraphSpec`), so a new family is
benchmarked without editing the suites. ONNX files are produced by `zoo.export.onnx.export_onnx`
(the same export `zoo export` runs, with its parity check) and run through
`zoo.export.runtime.OnnxRuntimeRunner`, the runner the onnxruntime backend attaches.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.bench.common import error_text, log

# Paper-size variants above this many parameters are skipped on CPU: fp32 weights plus an
# ONNX Runtime copy plus compiled kernels must fit beside the other jobs on a 24 GiB machine.
MAX_PARAMS_CPU = 300_000_000


@dataclass
class VariantCell:
    """One (model, variant) to measure, or the reason it is skipped."""

    model: str
    variant: str
    params: int
    skipped: str = ""


def quick_variant(card: Any) -> str:
    """The variant quick runs use: `micro` (every family has one), else the card's default."""
    return "micro" if "micro" in card.variants else card.default_variant


def variant_cells(quick: bool, max_params: int = MAX_PARAMS_CPU, models: list[str] | None = None) -> list[VariantCell]:
    """Every registered model's variants, smallest first; quick runs keep the micro ones only."""
    from zoo.registry import family_errors, list_models, parameter_counts

    for module, error in family_errors().items():
        log(f"warning: family {module} failed to import and is not benchmarked: {error}")
    cells: list[VariantCell] = []
    for card in list_models():
        if models and card.name not in models:
            continue
        names = [quick_variant(card)] if quick else list(card.variants)
        seen: dict[str, str] = {}  # network signature -> first variant with it (task variants share one)
        for variant in names:
            params = parameter_counts(card.name, variant)["total"]
            config = network_signature(card.name, variant)
            if config in seen:
                skipped = f"same network and sizes as variant {seen[config]!r} (measured there)"
            elif params > max_params:
                skipped = f"{params:,} parameters > {max_params:,} (does not fit beside the other jobs)"
            else:
                skipped = ""
            seen.setdefault(config, variant)
            cells.append(VariantCell(card.name, variant, params, skipped))
    return sorted(cells, key=lambda c: (c.params, c.model, c.variant))


def network_signature(model: str, variant: str) -> str:
    """Parameter names and shapes plus each graph's input sizes, built on the meta device: two
    variants with the same signature (a family's per-task weights) time the same."""
    from zoo.registry import build_pipeline

    with torch.device("meta"):
        pipeline = build_pipeline(model, variant)
    shapes = sorted((k, tuple(v.shape)) for k, v in pipeline.model.state_dict().items())
    graphs = [(g.name, [t.shape for t in g.inputs], sorted(g.dims.items())) for g in pipeline.graph_specs()]
    return repr((shapes, graphs))


def batch_sizes(spec: Any, wanted: tuple[int, ...]) -> list[int]:
    """`wanted` batch sizes clamped into the graph's batch range (one entry when it has no batch)."""
    if "batch" not in spec.dims:
        return [int(spec.inputs[0].shape[0])] if spec.inputs and isinstance(spec.inputs[0].shape[0], int) else [1]
    low, _, high = spec.dims["batch"]
    return sorted({min(max(b, low), high) for b in wanted})


def graph_inputs(spec: Any, batch: int, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example inputs at `batch` (other dims at the card's opt sizes), moved to `device`/`dtype`."""
    dims = {"batch": batch} if "batch" in spec.dims else {}
    out = []
    for tensor in spec.example_inputs(dims, seed=seed):
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out.append(tensor.to(device))
    return tuple(out)


def eager_runner(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[[], Any]:
    """The module called as the torch backend calls it (inference mode, no autograd)."""

    def call() -> Any:
        with torch.inference_mode():
            return module(*inputs)

    return call


def first_output(value: Any) -> torch.Tensor:
    """The first tensor of a graph's output (a tensor, or a tuple/list of them)."""
    return value[0] if isinstance(value, (tuple, list)) else value


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest |a - b| over the first outputs, in float32 on the CPU."""
    x = first_output(a).detach().float().cpu()
    y = first_output(b).detach().float().cpu()
    return float((x - y).abs().max()) if x.numel() else 0.0


@dataclass
class OnnxGraphs:
    """ONNX Runtime runners for a pipeline's graphs (`runners`), or why there are none (`error`)."""

    runners: dict[str, Callable[..., Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    tmp: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        self.runners.clear()
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None


def onnx_graphs(pipeline: Any, threads: int, export_dir: str | Path | None = None) -> OnnxGraphs:
    """Export every graph with `zoo.export.onnx.export_onnx` and open an ONNX Runtime session each.

    Graphs that fail export's parity check are left out (with their figures in `info`): a
    latency for a graph that computes something else would be meaningless."""
    try:
        from zoo.export.onnx import export_onnx
        from zoo.export.runtime import OnnxRuntimeRunner, make_session
    except ImportError as err:
        return OnnxGraphs(error=f"export package unavailable ({error_text(err)})")
    result = OnnxGraphs()
    if export_dir is None:
        result.tmp = tempfile.TemporaryDirectory(prefix="zoo-bench-onnx-")
        export_dir = result.tmp.name
    started = time.perf_counter()
    try:
        manifest = export_onnx(pipeline, export_dir, raise_on_failure=False)
    except Exception as err:  # noqa: BLE001 - a failed export is a recorded outcome of the benchmark
        result.close()
        result.error = f"export failed: {error_text(err)}"
        return result
    result.info["export_s"] = round(time.perf_counter() - started, 2)
    for spec in pipeline.graph_specs():
        entry = manifest["graphs"].get(spec.name, {})
        parity = entry.get("parity", {})
        result.info[spec.name] = {
            "exporter": entry.get("exporter"),
            "opset": entry.get("opset"),
            "parity_passed": parity.get("passed"),
            "parity_max_abs": _parity_max_abs(parity),
        }
        if not parity.get("passed"):
            continue
        session = make_session(Path(export_dir) / entry["file"], "cpu", threads)
        result.runners[spec.name] = OnnxRuntimeRunner(session, spec, "cpu")
    if not result.runners:
        result.error = "no graph passed export's parity check"
    return result


def _parity_max_abs(parity: dict[str, Any]) -> float | None:
    """The largest max_abs over the parity check's sizes and outputs, wherever export put it."""
    found: list[float] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "max_abs" and isinstance(item, (int, float)):
                    found.append(float(item))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(parity)
    return max(found) if found else None
