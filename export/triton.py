"""Triton Inference Server model repository: one Triton model per exported graph.

    <repo>/<graph>/config.pbtxt
    <repo>/<graph>/1/model.onnx      (platform onnxruntime_onnx)   or
    <repo>/<graph>/1/model.plan      (platform tensorrt_plan)
    <repo>/export.json               (the manifest; Triton only reads the folders)

`config.pbtxt` gives the platform, `max_batch_size` (the card's largest batch; 0 where a graph
has no leading batch axis), inputs and outputs without the batch axis (-1 for dynamic sizes;
a tensor that is only the batch, such as a score or a timestep, is `dims: [1]` reshaped to
`[]`, Triton's idiom for it), `dynamic_batching` (preferred sizes: the profile's opt and max,
the batches the engine is tuned for; a short queue delay) and `instance_group`.

The writer needs nothing beyond the standard library; `validate_config` parses a file with
Triton's own `ModelConfig` protobuf, which tritonclient ships (`model_config_pb2`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.export.common import ExportError, example_dims, write_manifest

if TYPE_CHECKING:
    from zoo.pipeline import GraphSpec, Pipeline

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
MODEL_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
DATA_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "bfloat16": "TYPE_BF16",
    "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}
INSTANCE_KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
DEFAULT_QUEUE_DELAY_US = 100


def batched(spec: GraphSpec) -> bool:
    """Triton batching applies when every input and output leads with the `batch` dim."""
    tensors = (*spec.inputs, *spec.outputs)
    return "batch" in spec.dims and all(t.shape and t.shape[0] == "batch" for t in tensors)


def _dims(shape: tuple[int | str, ...]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def _tensor_block(name: str, dtype: str, shape: tuple[int | str, ...], drop_batch: bool) -> str:
    dims = _dims(shape[1:] if drop_batch else shape)
    lines = ["  {", f'    name: "{name}"', f"    data_type: {DATA_TYPES[dtype]}"]
    if drop_batch and not dims:  # only the batch axis: Triton's [1] -> [] reshape idiom
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    else:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    lines.append("  }")
    return "\n".join(lines)


def preferred_batch_sizes(spec: GraphSpec) -> list[int]:
    """The batches a TensorRT profile is tuned for (opt) and the most it takes (max)."""
    _, _, high = spec.dims["batch"]
    return sorted({example_dims(spec)["batch"], high})


def config_text(
    spec: GraphSpec,
    platform: str = "onnxruntime_onnx",
    io_types: dict[str, str] | None = None,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    instance_kind: str = "auto",
    instances: int = 1,
) -> str:
    """config.pbtxt for one graph. io_types: tensor name -> numpy dtype name as exported
    (defaults to the card's TensorSpec dtypes)."""
    if platform not in MODEL_FILES:
        raise ValueError(f"platform must be one of {sorted(MODEL_FILES)}, got {platform!r}")
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance_kind must be one of {sorted(INSTANCE_KINDS)}, got {instance_kind!r}")
    if platform == "tensorrt_plan" and instance_kind == "cpu":
        raise ValueError("TensorRT plans run on GPUs only: instance_kind must be gpu or auto")
    io_types = io_types or {}
    batch = batched(spec)
    max_batch = spec.dims["batch"][2] if batch else 0
    kind = "gpu" if platform == "tensorrt_plan" else instance_kind
    inputs = ",\n".join(_tensor_block(t.name, io_types.get(t.name, t.dtype), t.shape, batch) for t in spec.inputs)
    outputs = ",\n".join(_tensor_block(t.name, io_types.get(t.name, t.dtype), t.shape, batch) for t in spec.outputs)
    parts = [
        f'name: "{spec.name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch}",
        f"input [\n{inputs}\n]",
        f"output [\n{outputs}\n]",
    ]
    if batch:
        sizes = ", ".join(str(s) for s in preferred_batch_sizes(spec))
        parts.append(f"dynamic_batching {{\n  preferred_batch_size: [ {sizes} ]\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}")
    parts.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {INSTANCE_KINDS[kind]}\n  }}\n]")
    # input constraints beyond dims (multiple-of sizes, value ranges), as `zoo serve`'s config gives them
    for key, value in spec.config_parameters(1 if batch else 0).items():
        parts.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: {json.dumps(value)} }}\n}}')
    return "\n".join(parts) + "\n"


def model_config_pb2() -> Any:
    """tritonclient's `model_config_pb2`, loaded from its file.

    `tritonclient.grpc/__init__` imports grpcio, which the `http` extra does not install; the
    generated protobuf module itself needs only protobuf, so it is loaded on its own."""
    for name in ("tritonclient.grpc.model_config_pb2", "zoo_triton_model_config_pb2"):
        if name in sys.modules:  # loaded already (the proto file may be registered only once)
            return sys.modules[name]
    try:
        from tritonclient.grpc import model_config_pb2 as module

        return module
    except (ImportError, RuntimeError):  # RuntimeError: tritonclient without grpcio
        sys.modules.pop("tritonclient.grpc", None)
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("validating Triton configs needs tritonclient (`pip install tritonclient[http]`)")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        raise ExportError(f"{path} not found: this tritonclient does not ship Triton's ModelConfig protobuf")
    module_spec = importlib.util.spec_from_file_location("zoo_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    sys.modules["zoo_triton_model_config_pb2"] = module
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_PB2: Any = None


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text into Triton's ModelConfig message (raises on unknown fields)."""
    global _PB2
    from google.protobuf import text_format

    _PB2 = _PB2 or model_config_pb2()
    return text_format.Parse(text, _PB2.ModelConfig())


def validate_config(path: str | Path, spec: GraphSpec | None = None) -> Any:
    """Parse a config.pbtxt with ModelConfig and check what Triton would reject at load time:
    names, batch sizes, the model file beside it. Returns the message."""
    path = Path(path)
    config = parse_config(path.read_text())
    problems = []
    if config.name != path.parent.name:
        problems.append(f"name {config.name!r} differs from its folder {path.parent.name!r}")
    model_file = MODEL_FILES.get(config.platform)
    if model_file is None:
        problems.append(f"unknown platform {config.platform!r}")
    elif not (path.parent / "1" / model_file).is_file():
        problems.append(f"{path.parent / '1' / model_file} missing")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size <= 0:
            problems.append("dynamic_batching needs max_batch_size > 0")
        too_big = [s for s in config.dynamic_batching.preferred_batch_size if s > config.max_batch_size]
        if too_big:
            problems.append(f"preferred_batch_size {too_big} above max_batch_size {config.max_batch_size}")
    for tensor in (*config.input, *config.output):
        if not tensor.dims:
            problems.append(f"{tensor.name}: no dims")
    if spec is not None:
        want_in, want_out = [t.name for t in spec.inputs], [t.name for t in spec.outputs]
        if [t.name for t in config.input] != want_in or [t.name for t in config.output] != want_out:
            problems.append(f"tensors {[t.name for t in config.input]} -> {[t.name for t in config.output]} differ from the card's {want_in} -> {want_out}")
    if problems:
        raise ExportError(f"{path}: " + "; ".join(problems))
    return config


def repository_from_export(
    pipeline: Pipeline,
    manifest: dict[str, Any],
    export_dir: str | Path,
    repo: str | Path,
    platform: str = "onnxruntime_onnx",
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    instance_kind: str = "auto",
    instances: int = 1,
    move: bool = False,
) -> dict[str, Any]:
    """Lay out an existing export (its manifest and files) as a Triton model repository;
    returns the repository's manifest (also written to `repo/export.json`)."""
    if platform not in MODEL_FILES:
        raise ValueError(f"platform must be one of {sorted(MODEL_FILES)}, got {platform!r}")
    export_dir, repo = Path(export_dir), Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    transfer = shutil.move if move else shutil.copy2
    manifest = copy.deepcopy(manifest)
    for spec in pipeline.graph_specs():
        entry = manifest["graphs"][spec.name]
        if platform == "tensorrt_plan" and "tensorrt" not in entry:
            raise ExportError(f"graph {spec.name!r} has no TensorRT plan in {export_dir}")
        version = repo / spec.name / "1"
        if version.exists():
            shutil.rmtree(version)
        version.mkdir(parents=True)
        source = export_dir / (entry["tensorrt"]["plan"] if platform == "tensorrt_plan" else entry["file"])
        transfer(str(source), str(version / MODEL_FILES[platform]))
        side = export_dir / (entry["file"] + ".data")
        if platform == "onnxruntime_onnx" and side.is_file():  # external weights keep the name the model refers to
            transfer(str(side), str(version / side.name))
        if platform == "onnxruntime_onnx":
            entry["file"] = f"{spec.name}/1/model.onnx"
        io_types = {t["name"]: t["dtype"] for t in (*entry["inputs"], *entry["outputs"])}
        config_path = repo / spec.name / "config.pbtxt"
        config_path.write_text(config_text(spec, platform, io_types, max_queue_delay_us, instance_kind, instances))
        entry["triton"] = {"config": f"{spec.name}/config.pbtxt", "platform": platform, "model_file": f"{spec.name}/1/{MODEL_FILES[platform]}"}
    manifest["source_format"] = manifest["format"]
    manifest["format"] = "triton"
    manifest["triton"] = {
        "platform": platform,
        "models": [s.name for s in pipeline.graph_specs()],
        "serve": f"tritonserver --model-repository={repo.resolve()}",
    }
    if len(manifest["triton"]["models"]) > 1:
        manifest["triton"]["pipeline"] = (
            "several graphs: the Python loop in the family's pipeline.py chains them; serve it with a Triton "
            "Python-backend model (BLS) that calls these models, or run the loop in the client (see README)"
        )
    write_manifest(repo, manifest)
    return manifest


def export_triton(
    pipeline: Pipeline,
    repo: str | Path,
    backend: str = "onnxruntime",
    fp16: bool = False,
    weights: Any = None,
    exporter: str = "auto",
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    instance_kind: str = "auto",
    instances: int = 1,
) -> dict[str, Any]:
    """`zoo export NAME --format triton`: the checked ONNX (or TensorRT plans) laid out as a
    Triton model repository, one model per graph, plus export.json at its root (so the same
    folder also serves `--backend onnxruntime`)."""
    if backend not in PLATFORMS:
        raise ValueError(f"backend must be one of {sorted(PLATFORMS)}, got {backend!r}")
    platform = PLATFORMS[backend]
    if platform == "tensorrt_plan":
        from zoo.export.tensorrt import require_tensorrt

        require_tensorrt()
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=repo))  # removed below: Triton must not see it
    try:
        if platform == "tensorrt_plan":
            from zoo.export.tensorrt import export_tensorrt

            manifest = export_tensorrt(pipeline, scratch, fp16=fp16, weights=weights, exporter=exporter)
        elif fp16:
            from zoo.export.fp16 import export_onnx_fp16

            manifest = export_onnx_fp16(pipeline, scratch, exporter=exporter, weights=weights)
        else:
            from zoo.export.onnx import export_onnx

            manifest = export_onnx(pipeline, scratch, exporter=exporter, weights=weights)
        return repository_from_export(pipeline, manifest, scratch, repo, platform, max_queue_delay_us, instance_kind, instances, move=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
