"""What every export format shares: tolerances, output comparison, check sizes, the manifest.

`export.json` (the manifest) sits beside the exported graphs and says, per graph, how it was
made (exporter, opset), what goes in and out (names, shapes with named dynamic dims) and how
close it came to PyTorch. Runtime backends read it to find their files and refuse exports
that failed their checks or came from other weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from zoo.pipeline import GraphSpec, Pipeline

MANIFEST = "export.json"
MANIFEST_VERSION = 1


class ExportError(ValueError):
    """An export could not be made or loaded (bad card, missing file, other weights).

    A ValueError, so callers that report bad arguments cleanly (the CLI) report these too."""


class ParityError(ExportError):
    """An exported graph disagrees with PyTorch above tolerance; `report` holds the figures."""

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report or {}


@dataclass(frozen=True)
class Tolerance:
    """An element passes when |got - ref| <= abs or |got - ref| <= rel * |ref|; an output passes
    when at most `mismatch_fraction` of its elements fail (0 for all but graphs whose GraphSpec
    declares hard thresholds inside, see `GraphSpec.fp16_mismatch_fraction`)."""

    abs: float
    rel: float
    mismatch_fraction: float = 0.0

    def as_dict(self) -> dict[str, float]:
        out = {"abs": self.abs, "rel": self.rel}
        if self.mismatch_fraction:
            out["mismatch_fraction"] = self.mismatch_fraction
        return out


FP32_TOLERANCE = Tolerance(abs=1e-4, rel=1e-3)
FP16_TOLERANCE = Tolerance(abs=1e-2, rel=1e-2)


def compare(ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> dict[str, Any]:
    """Elementwise comparison figures; integer and bool outputs must match exactly."""
    if ref.shape != got.shape:
        return {"passed": False, "error": f"shape {list(got.shape)} != reference {list(ref.shape)}"}
    if ref.size == 0:
        return {"passed": True, "max_abs": 0.0, "max_rel": 0.0, "mismatched": 0, "elements": 0, "ref_max_abs": 0.0, "rel_l2": 0.0}
    exact = not np.issubdtype(ref.dtype, np.floating)
    a = ref.astype(np.float64)
    b = got.astype(np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    same_nonfinite = (~np.isfinite(a)) & (a == b)  # +-inf in both at the same place is agreement
    diff = np.where(finite, np.abs(a - b), np.inf)
    diff = np.where(same_nonfinite, 0.0, diff)
    rel = diff / np.maximum(np.abs(a), 1e-12)
    ok = diff == 0 if exact else (diff <= tol.abs) | (diff <= tol.rel * np.abs(a))
    mismatched = int(ok.size - int(ok.sum()))
    worst = np.unravel_index(int(np.argmax(np.where(ok, -1.0, diff))), diff.shape) if mismatched else None
    out: dict[str, Any] = {
        "passed": mismatched <= int(tol.mismatch_fraction * ok.size),
        "max_abs": _num(diff.max()),
        "max_rel": _num(rel[np.abs(a) > 1e-6].max()) if (np.abs(a) > 1e-6).any() else 0.0,
        "mismatched": mismatched,
        "elements": int(ok.size),
        # scale-free figures: a check on tiny outputs (random weights) still means something
        "ref_max_abs": _num(np.abs(a[np.isfinite(a)]).max()) if np.isfinite(a).any() else 0.0,
        "rel_l2": _num(np.linalg.norm(np.where(finite, a - b, 0.0)) / max(float(np.linalg.norm(np.where(finite, a, 0.0))), 1e-30)),
    }
    if worst is not None:
        out["worst"] = {"index": [int(i) for i in worst], "reference": _num(a[worst]), "got": _num(b[worst])}
    return out


def _num(value: Any) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else str(value)


def example_dims(spec: GraphSpec) -> dict[str, int]:
    """Sizes the graph is exported at: each dim's `opt`, with a batch of at least 2 where allowed
    (a batch-1 example lets the exporter bake the batch into reshapes)."""
    dims = {name: opt for name, (_, opt, _) in spec.dims.items()}
    if "batch" in spec.dims:
        low, opt, high = spec.dims["batch"]
        dims["batch"] = min(max(opt, 2), high)
    return dims


def check_dims(spec: GraphSpec) -> list[dict[str, int]]:
    """Sizes the parity check runs at: the export sizes, then each dynamic dim moved off them.

    The batch goes to export batch + 1 where the range allows (an odd batch, unlike the usual
    1 that broadcasting can hide), other dims to their declared min (or max when min is the
    export size), which the card promises are valid sizes (TensorRT profiles use them too).
    """
    base = example_dims(spec)
    other = dict(base)
    for name, (low, _, high) in spec.dims.items():
        current = base[name]
        if name == "batch" and current + 1 <= high:
            other[name] = current + 1
        elif low != current:
            other[name] = low
        elif high != current:
            other[name] = high
    return [base] if other == base else [base, other]


def dims_from_inputs(spec: GraphSpec, tensors: tuple[Any, ...]) -> dict[str, int]:
    """The named dims' sizes as read off actual inputs (for output allocation, batch splitting)."""
    found: dict[str, int] = {}
    for tensor_spec, tensor in zip(spec.inputs, tensors):
        for axis, name in tensor_spec.dynamic_axes.items():
            found.setdefault(name, int(tensor.shape[axis]))
    return found


def tensor_entry(name: str, shape: Any, dtype: str) -> dict[str, Any]:
    return {"name": name, "shape": [d if isinstance(d, (int, str)) else str(d) for d in shape], "dtype": dtype}


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): ties an export to its weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def graph_module_fingerprint(pipeline: Pipeline) -> str:
    """Fingerprint of every graph module's weights together (what the exported files hold)."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    for spec in pipeline.graph_specs():
        if id(spec.module) in seen:
            continue
        seen.add(id(spec.module))
        digest.update(spec.name.encode())
        digest.update(weights_fingerprint(spec.module).encode())
    return digest.hexdigest()


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
    return path


def raise_if_refused(manifest: dict[str, Any], fmt: str, out_dir: Path) -> None:
    """A lower-precision export whose parity or task metric failed: ParityError naming the graphs and
    their figures (the manifest, written before, keeps them all)."""
    failed = [g for g, e in manifest["graphs"].items() if not e["parity"]["passed"]]
    if failed:
        details = "; ".join(f"{g}: {manifest['graphs'][g].get('task_metric') or manifest['graphs'][g]['parity']}" for g in failed)
        raise ParityError(f"{fmt} refused for graphs {failed} (figures in {out_dir / 'export.json'}): {details[:2000]}",
                          {"failed": failed, "manifest": manifest})


def read_manifest(export_dir: str | Path) -> dict[str, Any]:
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{path} not found: run `zoo export NAME --format onnx --out {export_dir}` first")
    manifest = json.loads(path.read_text())
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ExportError(f"{path}: manifest version {manifest.get('manifest_version')} is not {MANIFEST_VERSION}; re-export")
    return manifest


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Tolerance):
        return asdict(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def versions() -> dict[str, str]:
    """Versions of the tools that made an export, recorded in the manifest."""
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
