"""ONNX Runtime backend: the pipeline's graphs run as ONNX Runtime sessions.

`create_model(name, backend="onnxruntime", export_dir=DIR)` reaches `attach_onnxruntime`
through the `zoo.backends` entry point; the pipeline's pre- and postprocessing stay as they
are, only `run_graph` changes, so results read the same as on the torch backend.

Threads: one process-wide pool per session sized to the CPUs this process may use
(`os.sched_getaffinity`), sequential execution (our graphs are chains), full graph
optimisation. Where the CUDA execution provider exists (onnxruntime-gpu in place of
onnxruntime, docs/export.md) and the pipeline sits on a CUDA device, inputs and outputs are bound to
device memory with IO binding, so tensors never round-trip through the host.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zoo.export.common import ExportError, dims_from_inputs, graph_module_fingerprint, read_manifest

if TYPE_CHECKING:
    import onnxruntime as ort

    from zoo.pipeline import GraphSpec, Pipeline

log = logging.getLogger(__name__)

# ONNX Runtime type strings -> numpy dtypes for the inputs we feed.
ORT_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: keep --json output clean
    return options


def choose_providers(device: str | torch.device = "cpu") -> list[str]:
    """CUDA first when the pipeline is on a CUDA device and onnxruntime-gpu offers it; CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = []
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" in available:
            providers.append("CUDAExecutionProvider")
        else:
            log.warning("device %s requested but onnxruntime has no CUDA provider (swap onnxruntime for onnxruntime-gpu, see docs/export.md); running on CPU", device)
    providers.append("CPUExecutionProvider")
    return providers


def make_session(path: str | Path, device: str | torch.device = "cpu", threads: int | None = None) -> ort.InferenceSession:
    import onnxruntime as ort

    device = torch.device(device)
    providers: list[Any] = choose_providers(device)
    if providers[0] == "CUDAExecutionProvider":
        providers[0] = ("CUDAExecutionProvider", {"device_id": device.index or 0})
    return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=providers)


class OnnxRuntimeRunner:
    """One graph as an ONNX Runtime session, called like the torch module: tensors in, tensors out."""

    def __init__(self, session: ort.InferenceSession, spec: GraphSpec, device: str | torch.device = "cpu"):
        self.session = session
        self.spec = spec
        self.device = torch.device(device)
        self.input_names = [i.name for i in session.get_inputs()]
        self.input_types = [ORT_NUMPY.get(i.type, np.float32) for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        expected_in = [t.name for t in spec.inputs]
        expected_out = [t.name for t in spec.outputs]
        if self.input_names != expected_in or self.output_names != expected_out:
            raise ExportError(
                f"graph {spec.name!r}: exported inputs {self.input_names} / outputs {self.output_names} do not match "
                f"the card's {expected_in} / {expected_out}; re-export"
            )
        self.io_binding = "CUDAExecutionProvider" in session.get_providers() and self.device.type == "cuda"

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"graph {self.spec.name!r} takes {len(self.input_names)} inputs, got {len(inputs)}")
        if self.io_binding:
            return self._run_bound(inputs)
        feeds: dict[str, np.ndarray] = {
            name: np.ascontiguousarray(tensor.detach().to("cpu").numpy(), dtype=dtype)
            for name, tensor, dtype in zip(self.input_names, inputs, self.input_types)
        }
        outputs = self.session.run(self.output_names, feeds)
        return tuple(torch.from_numpy(np.asarray(o)).to(self.device) for o in outputs)

    def _run_bound(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """IO binding on CUDA: inputs read from and outputs written to torch's device memory."""
        binding = self.session.io_binding()
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        keep = []
        for name, tensor, dtype in zip(self.input_names, inputs, self.input_types):
            tensor = tensor.to(self.device, dtype=_torch_dtype(dtype)).contiguous()
            keep.append(tensor)
            binding.bind_input(name, "cuda", index, dtype, list(tensor.shape), tensor.data_ptr())
        sizes = dims_from_inputs(self.spec, tuple(inputs))
        outputs: list[torch.Tensor | None] = []
        for spec_out, ort_out in zip(self.spec.outputs, self.session.get_outputs()):
            dtype = ORT_NUMPY.get(ort_out.type, np.float32)
            try:
                shape = spec_out.concrete_shape(sizes)
            except KeyError:  # an output size not named on any input: let ORT allocate it
                binding.bind_output(spec_out.name, "cuda", index)
                outputs.append(None)
                continue
            out = torch.empty(shape, dtype=_torch_dtype(dtype), device=self.device)
            binding.bind_output(spec_out.name, "cuda", index, dtype, list(shape), out.data_ptr())
            outputs.append(out)
        self.session.run_with_iobinding(binding)
        if any(o is None for o in outputs):
            copied = binding.copy_outputs_to_cpu()
            outputs = [o if o is not None else torch.from_numpy(c).to(self.device) for o, c in zip(outputs, copied)]
        return tuple(outputs)  # type: ignore[arg-type]


def _torch_dtype(dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def attach_onnxruntime(
    pipeline: Pipeline,
    export_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    check_weights: bool = True,
    **_: Any,
) -> None:
    """Entry point `zoo.backends: onnxruntime`: replace each graph with an ONNX Runtime session.

    export_dir: a folder written by `zoo export NAME --format onnx|onnx-fp16` (or a Triton
    repository from `--format triton`). check_weights: refuse an export made from other
    weights than the pipeline's (predictions would silently differ from the torch backend).
    """
    if export_dir is None:
        raise ExportError("the onnxruntime backend needs export_dir= (a folder written by `zoo export NAME --format onnx --out DIR`)")
    for spec, _, path in exported_graphs(pipeline, Path(export_dir), check_weights):
        session = make_session(path, device, threads)
        pipeline.set_runner(spec.name, OnnxRuntimeRunner(session, spec, device))


def exported_graphs(pipeline: Pipeline, export_dir: Path, check_weights: bool,
                    file_key: str = "file") -> Iterator[tuple[GraphSpec, dict[str, Any], Path]]:
    """(spec, manifest entry, file) of each of the pipeline's graphs in an export folder, after checking
    the folder holds this model, variant and (check_weights) weights; a clear error for a missing graph."""
    manifest = read_manifest(export_dir)
    check_manifest(pipeline, manifest, export_dir, check_weights)
    for spec in pipeline.graph_specs():
        entry = manifest["graphs"].get(spec.name)
        if entry is None:
            raise ExportError(f"{export_dir}: no exported graph {spec.name!r} (has {sorted(manifest['graphs'])})")
        path = export_dir / entry.get(file_key, entry["file"])
        if not path.is_file():
            raise ExportError(f"{path} missing (listed in {export_dir / 'export.json'})")
        yield spec, entry, path


def check_manifest(pipeline: Pipeline, manifest: dict[str, Any], export_dir: Path, check_weights: bool) -> None:
    name = pipeline.card.name if pipeline.card is not None else None
    if manifest.get("model") != name or manifest.get("variant") != pipeline.variant:
        raise ExportError(
            f"{export_dir} holds {manifest.get('model')}/{manifest.get('variant')}, not {name}/{pipeline.variant}"
        )
    failed = [g for g, e in manifest["graphs"].items() if not e.get("parity", {}).get("passed", False)]
    if failed:
        raise ExportError(f"{export_dir}: graphs {failed} failed their parity check at export; see export.json")
    if check_weights and manifest.get("weights_sha256") != graph_module_fingerprint(pipeline):
        raise ExportError(
            f"{export_dir} was exported from other weights ({manifest.get('weights')}) than this pipeline's; "
            "pass the same --weights as at export, re-export, or set check_weights=False"
        )
