"""ONNX export of every graph a card declares, each checked against PyTorch with ONNX Runtime.

Export runs at the card's `opt` sizes with a batch of at least 2 (a batch-1 example lets the
exporter bake the batch into reshapes); dims the card lists in `GraphSpec.dims` become
dynamic, sizes it gives as ints stay fixed (the card's `note` says why, e.g. EfficientAD's
autoencoder). The parity check then runs ONNX Runtime and PyTorch on the same fresh inputs
at the export sizes and at other sizes (another batch, another H x W where dynamic) and
fails above tolerance with the figures in hand.

Exporters: `dynamo=True` (torch.export, opset 18) is tried first; `exporter="auto"` falls back
to the TorchScript exporter (`dynamo=False`, opset 17) when torch.export cannot capture a
graph or its result fails parity, and the manifest records which one made each file and why.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zoo.export.common import (
    FP32_TOLERANCE,
    MANIFEST_VERSION,
    ExportError,
    ParityError,
    Tolerance,
    check_dims,
    compare,
    example_dims,
    graph_module_fingerprint,
    tensor_entry,
    versions,
    write_manifest,
)
from zoo.export.runtime import make_session

if TYPE_CHECKING:
    from zoo.pipeline import GraphSpec, Pipeline

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}
# Above this many parameter bytes the weights go to a side file (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1_500_000_000


@contextlib.contextmanager
def _quiet() -> Any:
    """torch.onnx prints progress on stdout; `--json` promises stdout holds only the document."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def export_graph(spec: GraphSpec, path: str | Path, exporter: str = "dynamo", opset: int | None = None) -> dict[str, Any]:
    """Write one graph to `path` with one exporter; returns what the manifest records about it."""
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    path = Path(path)
    opset = opset or DEFAULT_OPSET[exporter]
    dims = example_dims(spec)
    inputs = spec.example_inputs(dims, seed=0)
    module = spec.module.eval()
    names_in = [t.name for t in spec.inputs]
    names_out = [t.name for t in spec.outputs]
    external = _param_bytes(module) > EXTERNAL_DATA_BYTES
    started = time.perf_counter()
    with _quiet(), torch.no_grad():
        if exporter == "dynamo":
            from torch.export import Dim

            # one Dim per name, shared by every input that uses it (Dim names must be identifiers)
            shared = {name: Dim(re.sub(r"\W", "_", name), min=low, max=high) for name, (low, _, high) in spec.dims.items()}
            dynamic_shapes = tuple({axis: shared[d] for axis, d in t.dynamic_axes.items()} or None for t in spec.inputs)
            torch.onnx.export(
                module, inputs, str(path), dynamo=True, opset_version=opset, input_names=names_in,
                output_names=names_out, dynamic_shapes=dynamic_shapes, external_data=external, verbose=False,
            )
        else:
            dynamic_axes = {t.name: t.dynamic_axes for t in (*spec.inputs, *spec.outputs) if t.dynamic_axes}
            torch.onnx.export(
                module, inputs, str(path), dynamo=False, opset_version=opset, input_names=names_in,
                output_names=names_out, dynamic_axes=dynamic_axes, do_constant_folding=True, verbose=False,
            )
    import onnx

    onnx.checker.check_model(str(path))
    return {
        "file": path.name,
        "exporter": f"torch.onnx.export(dynamo={exporter == 'dynamo'})",
        "dynamo": exporter == "dynamo",
        "opset": opset,
        "external_data": external,
        "example_dims": dims,
        "export_seconds": round(time.perf_counter() - started, 2),
    }


def reference_outputs(spec: GraphSpec, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """PyTorch's answer on CPU in fp32: what every exported graph is held to."""
    with torch.inference_mode():
        out = spec.module.eval()(*inputs)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().cpu().numpy() for o in out]


def check_parity(
    spec: GraphSpec,
    path: str | Path,
    tol: Tolerance = FP32_TOLERANCE,
    sizes: list[dict[str, int]] | None = None,
    seed: int = 1,
    threads: int | None = None,
    reference: Callable[[GraphSpec, tuple[torch.Tensor, ...]], list[np.ndarray]] = reference_outputs,
) -> dict[str, Any]:
    """Run the ONNX file and PyTorch on the same inputs at each size; figures per output.

    The inputs use a different seed from the export's example, so nothing constant-folded
    from the example can pass by accident.
    """
    session = make_session(path, "cpu", threads)
    session_in = [i.name for i in session.get_inputs()]
    types = {i.name: i.type for i in session.get_inputs()}
    checks = []
    for dims in sizes or check_dims(spec):
        inputs = spec.example_inputs(dims, seed=seed)
        feeds = {}
        for t, x in zip(spec.inputs, inputs):
            array = x.numpy()
            if types.get(t.name) == "tensor(float16)":
                array = array.astype(np.float16)
            feeds[t.name] = array
        if list(feeds) != session_in:
            raise ExportError(f"graph {spec.name!r}: ONNX inputs {session_in} differ from the card's {list(feeds)}")
        entry: dict[str, Any] = {"dims": dims, "outputs": {}}
        try:
            got = session.run([t.name for t in spec.outputs], feeds)
        except Exception as err:  # noqa: BLE001 - an ORT failure at new sizes is a parity failure
            entry.update(passed=False, error=f"onnxruntime failed: {str(err).splitlines()[0][:300]}")
            checks.append(entry)
            continue
        want = reference(spec, inputs)
        for t, r, g in zip(spec.outputs, want, got):
            figures = compare(r, np.asarray(g), tol)
            declared = list(t.concrete_shape(dims))
            if figures["passed"] and list(np.asarray(g).shape) != declared:
                figures.update(passed=False, error=f"shape {list(np.asarray(g).shape)} != the card's {declared}")
            entry["outputs"][t.name] = figures
        entry["passed"] = all(o["passed"] for o in entry["outputs"].values())
        checks.append(entry)
    return {"passed": all(c["passed"] for c in checks), "tolerance": tol.as_dict(), "checks": checks}


def io_entries(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs as the ONNX file declares them (symbolic dims by name)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def entry(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        return tensor_entry(value.name, shape, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name)

    return [entry(v) for v in model.graph.input], [entry(v) for v in model.graph.output]


def parity_message(graph: str, parity: dict[str, Any]) -> str:
    """A readable account of a failed check: sizes, outputs, figures against the tolerance."""
    tol = parity["tolerance"]
    lines = [f"graph {graph!r} disagrees with PyTorch (tolerance {tol['abs']:g} abs or {tol['rel']:g} rel):"]
    for check in parity["checks"]:
        if check.get("passed"):
            continue
        lines.append(f"  at {check['dims']}:")
        if "error" in check:
            lines.append(f"    {check['error']}")
        for name, fig in check.get("outputs", {}).items():
            if fig.get("passed"):
                continue
            if "error" in fig:
                lines.append(f"    {name}: {fig['error']}")
            else:
                lines.append(
                    f"    {name}: max abs {fig['max_abs']:.3g}, max rel {fig['max_rel']:.3g}, "
                    f"{fig['mismatched']}/{fig['elements']} elements outside; worst {fig.get('worst')}"
                )
    return "\n".join(lines)


def export_onnx_graph(
    spec: GraphSpec, out_dir: Path, exporter: str = "auto", opset: int | None = None, tol: Tolerance = FP32_TOLERANCE
) -> dict[str, Any]:
    """Export one graph and check it; with 'auto', fall back to TorchScript on failure.

    Returns the manifest entry (with `parity`); raises ExportError only when no exporter could
    write a file at all. A parity failure is recorded, not raised, so the caller can report
    every graph before failing."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    path = out_dir / f"{spec.name}.onnx"
    attempts: list[dict[str, str]] = []
    entry: dict[str, Any] | None = None
    for choice in order:
        _remove_onnx(path)
        try:
            entry = export_graph(spec, path, choice, opset)
        except Exception as err:  # noqa: BLE001 - recorded, and the next exporter tried
            attempts.append({"exporter": choice, "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"})
            log.warning("graph %s: %s export failed: %s", spec.name, choice, attempts[-1]["error"])
            entry = None
            continue
        entry["parity"] = check_parity(spec, path, tol)
        if entry["parity"]["passed"] or choice == order[-1]:
            break
        attempts.append({"exporter": choice, "error": "parity check failed: " + parity_message(spec.name, entry["parity"])})
    if entry is None:
        raise ExportError(f"graph {spec.name!r} could not be exported: " + "; ".join(f"{a['exporter']}: {a['error']}" for a in attempts))
    entry["inputs"], entry["outputs"] = io_entries(path)
    entry["dims"] = {k: list(v) for k, v in spec.dims.items()}
    entry["fixed"] = _fixed_sizes(spec)
    if spec.note:
        entry["note"] = spec.note
    if attempts:
        entry["fallback_from"] = attempts
    return entry


def _fixed_sizes(spec: GraphSpec) -> dict[str, list[int | str]]:
    """Each input's shape with the fixed sizes spelled out, for readers of export.json."""
    return {t.name: list(t.shape) for t in spec.inputs if any(isinstance(d, int) for d in t.shape[1:])}


def _remove_onnx(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".data")):
        candidate.unlink(missing_ok=True)


def prepare(pipeline: Pipeline) -> Pipeline:
    """Exports run on CPU in fp32 with the torch modules (never a backend's sessions)."""
    if not pipeline.graph_specs():
        raise ExportError(f"{pipeline.card.name if pipeline.card else pipeline}: the card declares no exportable graphs")
    if pipeline._runners:
        raise ExportError(f"export needs the torch backend; this pipeline runs on {pipeline.backend}")
    pipeline.to("cpu")
    pipeline.model.float()
    pipeline.eval()
    return pipeline


def base_manifest(pipeline: Pipeline, fmt: str, weights: Any) -> dict[str, Any]:
    card = pipeline.card
    return {
        "manifest_version": MANIFEST_VERSION,
        "model": card.name if card else type(pipeline).__name__,
        "variant": pipeline.variant,
        "task": card.task if card else "",
        "format": fmt,
        "weights": str(weights) if weights is not None else "default",
        "weights_sha256": graph_module_fingerprint(pipeline),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "graphs": {},
    }


def export_onnx(
    pipeline: Pipeline,
    out_dir: str | Path,
    exporter: str = "auto",
    opset: int | None = None,
    weights: Any = None,
    raise_on_failure: bool = True,
) -> dict[str, Any]:
    """`zoo export NAME --format onnx`: one `<graph>.onnx` per graph plus `export.json`.

    Raises ParityError (after writing export.json, so the figures can be read) when a graph
    disagrees with PyTorch above the fp32 tolerance."""
    pipeline = prepare(pipeline)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = base_manifest(pipeline, "onnx", weights)
    for spec in pipeline.graph_specs():
        manifest["graphs"][spec.name] = export_onnx_graph(spec, out_dir, exporter, opset)
    write_manifest(out_dir, manifest)
    if raise_on_failure:
        raise_if_failed(manifest)
    return manifest


def raise_if_failed(manifest: dict[str, Any], key: str = "parity") -> None:
    failed = {g: e[key] for g, e in manifest["graphs"].items() if key in e and not e[key]["passed"]}
    if failed:
        message = "\n".join(parity_message(g, p) for g, p in failed.items())
        raise ParityError(message, {"failed": sorted(failed), "manifest": manifest})
