"""Open Inference Protocol v2 (KServe), as Triton serves it over HTTP/REST.

Spec: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ and
Triton's binary tensor data extension (docs/protocol/extension_binary_data.md):

- An inference request is JSON, or JSON followed by raw tensor bytes when the
  `Inference-Header-Content-Length` header gives the JSON's length. An input with
  `parameters.binary_data_size` takes that many bytes, in input order, little-endian,
  row-major.
- An output is returned in binary when its `parameters.binary_data` is true, or when the
  request's `parameters.binary_data_output` is true and the output does not say otherwise;
  the response then carries `Inference-Header-Content-Length` and each binary output names
  its `binary_data_size`.
- Metadata shapes use -1 for variable dimensions, the batch dimension included (Triton
  reports the full shape in metadata, and `dims` without the batch in the model config).

Two kinds of v2 model, under names that never collide:
- a pipeline model per served zoo model, under the model's own name (`/v2/models/docdiff`):
  the card's typed inputs and options in, the result's JSON (and its images) out; see
  `zoo.serving.oip_pipeline`.
- a graph model per exportable graph, under the graph's own name, as in the Triton model
  repository `zoo export --format triton` writes (`/v2/models/coarse`); its inputs and
  outputs are the graph's `TensorSpec`s, checked strictly (names, datatypes, shapes) with
  400 answers that name the problem. A graph whose name is taken, because it equals a served
  model's name (EfficientAD's graph "efficientad") or another model has a graph of that
  name, is served as `model.graph` (`/v2/models/efficientad.efficientad`); `model.graph`
  works as an alias for every graph. See `zoo.serving.model_manager.v2_model_name`.
BYTES tensors use Triton's layout: in binary, each element is a 4-byte little-endian length
and its bytes; in JSON, a string.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from zoo.serving.errors import BadRequest, NotFound, ServingError
from zoo.serving.limits import Limits, decompress_body
from zoo.serving.metrics import failure_reason

if TYPE_CHECKING:
    from zoo.pipeline import TensorSpec
    from zoo.serving.model_manager import GraphEndpoint, ModelManager

# Triton datatype <-> numpy. BYTES (strings) and BF16 have no graph that uses them here.
TRITON_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_TRITON = {dtype: name for name, dtype in TRITON_TO_NUMPY.items()}
SPEC_TO_TRITON = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "half": "FP16", "float32": "FP32", "float": "FP32", "float64": "FP64", "double": "FP64",
}

HEADER_LENGTH = "Inference-Header-Content-Length"
MODEL_VERSION = "1"
# Binary-extension requests whose JSON header is this small decode in microseconds (the tensor bytes
# are wrapped, not parsed) and binary outputs encode as fast: both stay on the event loop, since a
# thread hop each way costs more than the work (profiled: EfficientAD micro at concurrency 1).
INLINE_HEADER_BYTES = 16 * 1024
INLINE_OUTPUT_BYTES = 8 * 1024 * 1024


def triton_dtype(spec_dtype: str) -> str:
    try:
        return SPEC_TO_TRITON[spec_dtype]
    except KeyError:
        raise ValueError(f"dtype {spec_dtype!r} has no Triton datatype") from None


def metadata_shape(spec: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in spec.shape]


# -- requests ------------------------------------------------------------------------------
@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None  # None: all outputs
    binary_default: bool
    timeout_s: float | None


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header (all of the body, or its first `Inference-Header-Content-Length` bytes) and the binary rest."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if n < 0 or n > len(body):
            raise BadRequest(f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    if not head:
        raise BadRequest("empty inference request: expected a JSON object")
    try:
        document = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(f"inference request is not valid JSON: {err}") from None
    except RecursionError:
        raise BadRequest("inference request JSON is nested too deeply") from None
    if not isinstance(document, dict):
        raise BadRequest("inference request must be a JSON object")
    return document, binary


def parse_infer_request(document: dict[str, Any], binary: bytes, endpoint: GraphEndpoint, limits: Limits) -> InferRequest:
    """Check the request against the graph's specs and decode its tensors (numpy, not yet torch)."""
    spec = endpoint.spec
    assert spec is not None
    name = endpoint.name
    parameters = _as_dict(document.get("parameters"), "parameters")
    for unsupported in ("sequence_id", "sequence_start", "sequence_end"):
        if parameters.get(unsupported):
            raise BadRequest(f"model {name!r}: sequence batching ({unsupported}) is not supported")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest(f"model {name!r}: 'inputs' must be a non-empty list")

    expected = {t.name: t for t in spec.inputs}
    offset = 0
    arrays: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}  # dynamic dimension name -> size seen, to keep inputs consistent
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise BadRequest(f"model {name!r}: each input must be a JSON object")
        in_name = raw.get("name")
        if in_name not in expected:
            raise BadRequest(f"model {name!r} has no input {in_name!r}; inputs: {', '.join(expected)}")
        if in_name in arrays:
            raise BadRequest(f"model {name!r}: input {in_name!r} given twice")
        tensor_spec = expected[in_name]
        want = triton_dtype(tensor_spec.dtype)
        datatype = raw.get("datatype")
        if datatype != want:
            raise BadRequest(f"model {name!r}: input {in_name!r} has datatype {datatype!r}, expected {want}")
        shape = _check_shape(raw.get("shape"), tensor_spec, endpoint, sizes)
        count = math.prod(shape)
        dtype = TRITON_TO_NUMPY[want]
        nbytes = count * dtype.itemsize
        if nbytes > limits.max_body_bytes:  # checked before allocating anything
            raise ServingError(f"model {name!r}: input {in_name!r} of shape {shape} needs {nbytes} bytes, over the {limits.max_body_bytes}-byte limit", status=413)
        params = _as_dict(raw.get("parameters"), f"parameters of input {in_name!r}")
        if params.get("shared_memory_region") is not None:
            raise BadRequest(f"model {name!r}: shared-memory inputs are not supported by this server")
        if params.get("binary_data_size") is not None:
            if "data" in raw:
                raise BadRequest(f"model {name!r}: input {in_name!r} has both 'data' and binary_data_size")
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"model {name!r}: input {in_name!r} binary_data_size must be a non-negative integer")
            if size != nbytes:
                raise BadRequest(f"model {name!r}: input {in_name!r} of shape {shape} and datatype {want} needs {nbytes} bytes, binary_data_size says {size}")
            if offset + size > len(binary):
                raise BadRequest(f"model {name!r}: input {in_name!r} wants {size} binary bytes at offset {offset}, but only {len(binary) - offset} remain")
            chunk = binary[offset:offset + size]
            offset += size
            array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype, copy=True).reshape(shape)
        else:
            if "data" not in raw:
                raise BadRequest(f"model {name!r}: input {in_name!r} has no 'data' and no binary_data_size")
            array = _json_tensor(raw["data"], dtype, shape, f"model {name!r}: input {in_name!r}")
        check_values(array, tensor_spec, f"model {name!r}: input {in_name!r}")
        arrays[in_name] = array
    if offset != len(binary):
        raise BadRequest(f"model {name!r}: {len(binary) - offset} binary bytes after the inputs are left over")
    missing = [t for t in expected if t not in arrays]
    if missing:
        raise BadRequest(f"model {name!r}: missing input(s) {', '.join(missing)}")

    binary_default = bool(parameters.get("binary_data_output", False))
    outputs = requested_outputs(document, name, [t.name for t in spec.outputs], binary_default)
    timeout_s = request_timeout(parameters, name)
    request_id = document.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, arrays, outputs, binary_default, timeout_s)


def requested_outputs(document: dict[str, Any], name: str, known: list[str], binary_default: bool) -> list[RequestedOutput] | None:
    """The request's `outputs` (None: all), each checked against the model's output names."""
    if document.get("outputs") is None:
        return None
    raw_outputs = document["outputs"]
    if not isinstance(raw_outputs, list):
        raise BadRequest(f"model {name!r}: 'outputs' must be a list")
    outputs = []
    for raw in raw_outputs:
        if not isinstance(raw, dict) or raw.get("name") not in known:
            got = raw.get("name") if isinstance(raw, dict) else raw
            raise BadRequest(f"model {name!r} has no output {got!r}; outputs: {', '.join(known)}")
        params = _as_dict(raw.get("parameters"), f"parameters of output {raw['name']!r}")
        if params.get("classification"):
            raise BadRequest(f"model {name!r}: the classification extension is not supported")
        if params.get("shared_memory_region") is not None:
            raise BadRequest(f"model {name!r}: shared-memory outputs are not supported by this server")
        outputs.append(RequestedOutput(raw["name"], bool(params.get("binary_data", binary_default))))
    return outputs


def request_timeout(parameters: dict[str, Any], name: str) -> float | None:
    """tritonclient's `timeout=` parameter (microseconds) in seconds, or None."""
    if parameters.get("timeout") is None:
        return None
    try:
        return max(1e-3, float(parameters["timeout"]) / 1e6)
    except (TypeError, ValueError):
        raise BadRequest(f"model {name!r}: parameters.timeout must be microseconds, got {parameters['timeout']!r}") from None


def _check_shape(shape: Any, tensor_spec: TensorSpec, endpoint: GraphEndpoint, sizes: dict[str, int]) -> list[int]:
    name, in_name = endpoint.name, tensor_spec.name
    expected = metadata_shape(tensor_spec)
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"model {name!r}: input {in_name!r} shape must be a list of integers, got {shape!r}")
    if len(shape) != len(tensor_spec.shape):
        raise BadRequest(f"model {name!r}: input {in_name!r} has shape {shape}, expected {expected} (rank {len(expected)})")
    assert endpoint.spec is not None
    for axis, (got, want) in enumerate(zip(shape, tensor_spec.shape)):
        if got < 0:
            raise BadRequest(f"model {name!r}: input {in_name!r} has a negative dimension in shape {shape}")
        if isinstance(want, int):
            if got != want:
                raise BadRequest(f"model {name!r}: input {in_name!r} has shape {shape}, expected {expected} (dimension {axis} must be {want})")
            continue
        if want in sizes and sizes[want] != got:
            raise BadRequest(f"model {name!r}: input {in_name!r} dimension {axis} ({want}) is {got}, but another input has {sizes[want]}")
        sizes[want] = got
        low, _, high = endpoint.spec.dims.get(want, (1, 0, None))
        if want == endpoint.batch_dim and endpoint.max_batch_size:
            high = endpoint.max_batch_size
        if got < low or (high is not None and got > high):
            raise BadRequest(f"model {name!r}: input {in_name!r} dimension {axis} ({want}) is {got}, allowed {low}..{high}")
        multiple = endpoint.spec.multiple_of.get(want)
        if multiple and got % multiple:
            raise BadRequest(f"model {name!r}: input {in_name!r} dimension {axis} ({want}) is {got}, must be a multiple of {multiple}")
    return shape


def check_values(array: np.ndarray, tensor_spec: TensorSpec, where: str) -> None:
    """Values a graph cannot take: NaN or +-Inf in a float tensor, and any value outside the
    spec's `valid_range` (an index into a table: a timestep, a token id, a class label)."""
    if not array.size:
        return
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            first = int(np.flatnonzero(~finite.reshape(-1))[0])
            bad = array.reshape(-1)[first]
            raise BadRequest(f"{where} holds {int(finite.size - finite.sum())} non-finite value(s) (first: {bad} at flat index {first}); NaN and Inf are not valid inputs")
    if tensor_spec.valid_range is not None:
        low, high = tensor_spec.valid_range
        outside = (array < low) | (array > high)
        if outside.any():
            first = int(np.flatnonzero(outside.reshape(-1))[0])
            bad = array.reshape(-1)[first]
            raise BadRequest(f"{where} value {bad} (flat index {first}) is outside its valid range {_number(low)}..{_number(high)}")


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


_KINDS_FOR = {"b": ("b",), "u": ("u", "i", "b"), "i": ("i", "u", "b"), "f": ("f", "i", "u", "b")}


def _json_tensor(data: Any, dtype: np.dtype, shape: list[int], where: str) -> np.ndarray:
    """JSON data (flat or nested, row-major) -> an array of `shape`; values must fit the datatype's kind."""
    if not isinstance(data, list):
        raise BadRequest(f"{where}: 'data' must be a list")
    try:
        raw = np.asarray(data)
    except ValueError as err:
        raise BadRequest(f"{where}: 'data' is not a regular array: {err}") from None
    count = math.prod(shape)
    if raw.size != count:
        raise BadRequest(f"{where}: 'data' has {raw.size} elements, shape {shape} needs {count}")
    if raw.size and raw.dtype.kind not in _KINDS_FOR[dtype.kind]:
        raise BadRequest(f"{where}: 'data' holds {raw.dtype.kind!r}-kind values ({raw.dtype}), not {NUMPY_TO_TRITON[dtype]}")
    if dtype.kind in "iu" and raw.size:
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise BadRequest(f"{where}: values out of range for {NUMPY_TO_TRITON[dtype]}")
    with np.errstate(over="ignore"):  # a float beyond the datatype becomes inf, refused by check_values
        return raw.astype(dtype).reshape(shape)


# -- responses -----------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """A JSON document with every non-finite float (NaN, +-Inf) replaced by null, so that
    `json.dumps(..., allow_nan=False)` never fails and no response holds a bare NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_numbers(array: np.ndarray) -> tuple[list[Any], int]:
    """A tensor's values as a flat JSON list and how many were non-finite. JSON has no NaN or
    Infinity: each becomes null (numpy and tritonclient read null back as NaN in a float
    array); binary outputs keep the exact values."""
    values = array.ravel().tolist()
    if array.dtype.kind != "f":
        return values, 0
    bad = np.flatnonzero(~np.isfinite(array.ravel()))
    for index in bad.tolist():
        values[index] = None
    return values, int(bad.size)


def _binary_only(request: InferRequest, names: list[str], arrays: list[np.ndarray]) -> bool:
    """True when every output goes back as raw bytes (nothing to format as JSON numbers) and is small."""
    wanted = request.outputs or [RequestedOutput(n, request.binary_default) for n in names]
    return all(w.binary for w in wanted) and all(a.dtype != np.object_ for a in arrays) and sum(a.nbytes for a in arrays) <= INLINE_OUTPUT_BYTES


def encode_infer_response(model_name: str, request: InferRequest, names: list[str], tensors: list[np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, then any binary outputs in order."""
    wanted = request.outputs or [RequestedOutput(n, request.binary_default) for n in names]
    by_name = dict(zip(names, tensors))
    outputs = []
    blobs = []
    for requested in wanted:
        array = np.ascontiguousarray(by_name[requested.name])
        datatype = "BYTES" if array.dtype == np.object_ else NUMPY_TO_TRITON.get(array.dtype)
        if datatype is None:
            raise ServingError(f"output {requested.name!r} has dtype {array.dtype} with no v2 datatype")
        entry: dict[str, Any] = {"name": requested.name, "datatype": datatype, "shape": list(array.shape)}
        if requested.binary:
            if datatype == "BYTES":  # each element: a 4-byte little-endian length, then its bytes
                blob = b"".join(struct.pack("<I", len(item)) + item for item in (bytes(x) for x in array.ravel()))
            else:
                blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":  # JSON carries strings: our BYTES outputs are UTF-8 (result JSON)
            entry["data"] = [bytes(x).decode("utf-8") for x in array.ravel()]
        else:
            entry["data"], non_finite = json_numbers(array)
            if non_finite:
                entry["parameters"] = {"non_finite_count": non_finite}
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": MODEL_VERSION, "outputs": outputs}
    if request.id is not None:
        document["id"] = request.id
    head = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def model_metadata(endpoint: GraphEndpoint, backend: str) -> dict[str, Any]:
    """Triton's metadata; an input with constraints beyond its shape carries them as
    `parameters` (the optional tensor parameters MLServer's metadata has too)."""
    spec = endpoint.spec
    assert spec is not None
    inputs = []
    for t in spec.inputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": triton_dtype(t.dtype), "shape": metadata_shape(t)}
        constraints = spec.input_constraints(t)
        if constraints:
            entry["parameters"] = constraints
        inputs.append(entry)
    return {
        "name": endpoint.name,
        "versions": [MODEL_VERSION],
        "platform": platform_name(backend),
        "inputs": inputs,
        "outputs": [{"name": t.name, "datatype": triton_dtype(t.dtype), "shape": metadata_shape(t)} for t in spec.outputs],
    }


def platform_name(backend: str) -> str:
    return {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino", "tensorrt": "tensorrt_plan"}.get(backend, "pytorch_libtorch")


def model_config(endpoint: GraphEndpoint, backend: str, manager: ModelManager) -> dict[str, Any]:
    """Triton's model configuration as JSON (what `GET /v2/models/{name}/config` returns)."""
    spec = endpoint.spec
    assert spec is not None
    skip = 1 if endpoint.max_batch_size else 0  # config dims leave the batch dimension out

    def tensors(items: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "data_type": "TYPE_" + ("STRING" if t.dtype == "bytes" else triton_dtype(t.dtype)), "dims": metadata_shape(t)[skip:]} for t in items]

    config: dict[str, Any] = {
        "name": endpoint.name,
        "platform": platform_name(backend),
        "max_batch_size": endpoint.max_batch_size,
        "input": tensors(spec.inputs),
        "output": tensors(spec.outputs),
        "instance_group": [{"count": 1, "kind": "KIND_GPU" if str(manager.device).startswith("cuda") else "KIND_CPU"}],
        "parameters": {"zoo_model": {"string_value": endpoint.model}, "zoo_graph": {"string_value": endpoint.graph}},
    }
    # Triton's config has no per-input constraints beyond dims: model parameters carry them
    # (GraphSpec.config_parameters; `zoo export --format triton` writes the same ones).
    for key, value in spec.config_parameters(skip).items():
        config["parameters"][key] = {"string_value": value}
    if endpoint.max_batch_size:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(manager.batching.max_queue_delay_s * 1e6),
            "default_queue_policy": {"max_queue_size": manager.batching.queue_size, "default_timeout_microseconds": int(manager.batching.timeout_s * 1e6)},
        }
    return config


# -- routes --------------------------------------------------------------------------------
def build_router(manager: ModelManager, limits: Limits, server_name: str, server_version: str) -> APIRouter:
    from zoo.serving import oip_pipeline

    router = APIRouter(tags=["Open Inference Protocol v2"])
    metrics = manager.metrics

    def v2_names() -> list[str]:
        """Every v2 model: a pipeline per served model (its own name), and every graph."""
        return sorted({*manager.entries, *manager.endpoints})

    @router.get("/v2", summary="Server metadata")
    def server_metadata() -> dict[str, Any]:
        return {"name": server_name, "version": server_version, "extensions": ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]}

    @router.get("/v2/health/live", summary="Liveness: 200 while the process serves HTTP")
    def live() -> Response:
        return Response(status_code=200)

    @router.get("/v2/health/ready", summary="Readiness: 200 once loading finished and a model serves")
    def ready() -> Response:
        if manager.ready:
            return Response(status_code=200)
        reason = "models are still loading" if manager.loading else "no model loaded"
        return JSONResponse({"error": reason}, status_code=400)

    # before /v2/models/{name}, which would otherwise take "stats" for a model name
    @router.get("/v2/models/stats", summary="Inference statistics for every model")
    def all_stats() -> dict[str, Any]:
        return {"model_stats": [_stats(manager, v2) for v2 in v2_names()]}

    def ready_response(name: str) -> Response:
        ok, reason = manager.model_status(name)
        # Triton answers 200 for ready and 400 otherwise; the body says why.
        return Response(status_code=200) if ok else JSONResponse({"error": reason}, status_code=400)

    @router.get("/v2/models/{name}/ready", summary="Model readiness (400 with the reason when not ready)")
    def model_ready(name: str) -> Response:
        return ready_response(name)

    @router.get("/v2/models/{name}/versions/{version}/ready", include_in_schema=False)
    def model_version_ready(name: str, version: str) -> Response:
        _check_version(name, version)
        return ready_response(name)

    def metadata(name: str) -> dict[str, Any]:
        if name in manager.entries:  # the pipeline model: the card's typed inputs
            return oip_pipeline.pipeline_metadata(manager.ready_entry(name).card)
        endpoint = manager.ready_endpoint(name)
        return model_metadata(endpoint, manager.entries[endpoint.model].pipeline.backend)

    @router.get("/v2/models/{name}", summary="Model metadata: input/output names, datatypes, shapes (-1 = variable)")
    def get_metadata(name: str) -> dict[str, Any]:
        return metadata(name)

    @router.get("/v2/models/{name}/versions/{version}", include_in_schema=False)
    def get_version_metadata(name: str, version: str) -> dict[str, Any]:
        _check_version(name, version)
        return metadata(name)

    @router.get("/v2/models/{name}/config", summary="Model configuration (Triton's config.pbtxt fields as JSON)")
    def get_config(name: str) -> dict[str, Any]:
        if name in manager.entries:
            entry = manager.ready_entry(name)
            return oip_pipeline.pipeline_config(entry.card, entry.graphs, manager.device)
        endpoint = manager.ready_endpoint(name)
        return model_config(endpoint, manager.entries[endpoint.model].pipeline.backend, manager)

    @router.get("/v2/models/{name}/versions/{version}/config", include_in_schema=False)
    def get_version_config(name: str, version: str) -> dict[str, Any]:
        _check_version(name, version)
        return get_config(name)

    @router.post("/v2/repository/index", summary="Every v2 model with its state")
    def repository_index() -> list[dict[str, Any]]:
        out = []
        for v2 in v2_names():
            ok, reason = manager.model_status(v2)
            item = {"name": v2, "version": MODEL_VERSION, "state": "READY" if ok else "UNAVAILABLE"}
            if reason:
                item["reason"] = reason
            out.append(item)
        return out

    @router.get("/v2/models/{name}/stats", summary="Inference statistics (Triton's statistics extension)")
    def stats(name: str) -> dict[str, Any]:
        return {"model_stats": [_stats(manager, name if name in manager.entries else manager.endpoint(name).name)]}

    infer_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
                    "id": {"type": "string"}, "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": {"type": "object"}}, "outputs": {"type": "array", "items": {"type": "object"}}}}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description": f"JSON header of {HEADER_LENGTH} bytes, then the binary tensors"}},
            },
        }
    }

    async def infer(name: str, request: Request) -> Response:
        if name in manager.entries:
            return await infer_pipeline(name, request)
        started = time.perf_counter()
        label = name
        try:
            endpoint = manager.endpoint(name)
            label = endpoint.name
            manager.ready_endpoint(name)
            raw = await request.body()
            encoding, header_length = request.headers.get("content-encoding"), request.headers.get(HEADER_LENGTH)
            loop = asyncio.get_running_loop()

            def decode() -> InferRequest:  # inflating and parsing megabytes of JSON stays off the event loop
                body = decompress_body(raw, encoding, limits.max_body_bytes)
                document, binary = split_body(body, header_length)
                return parse_infer_request(document, binary, endpoint, limits)

            # A small uncompressed body decodes in microseconds: a thread hop would cost more than it saves
            inline = encoding is None and header_length is not None and int(header_length or 0) <= INLINE_HEADER_BYTES
            parsed = decode() if inline else await loop.run_in_executor(manager.predict_pool, decode)
            tensors = [torch.from_numpy(parsed.inputs[t.name]) for t in endpoint.spec.inputs]
            timeout = min(manager.batching.timeout_s, parsed.timeout_s) if parsed.timeout_s else None
            outputs = await manager.infer(endpoint, tensors, timeout)
            names = [t.name for t in endpoint.spec.outputs]
            if len(outputs) != len(names):
                raise ServingError(f"graph {endpoint.graph!r} returned {len(outputs)} outputs, its spec names {len(names)}")
            arrays = [o.detach().to("cpu").numpy() for o in outputs]
            if _binary_only(parsed, names, arrays):
                body_out, headers = encode_infer_response(endpoint.name, parsed, names, arrays)
            else:
                body_out, headers = await loop.run_in_executor(manager.predict_pool, encode_infer_response, endpoint.name, parsed, names, arrays)
        except ServingError as err:
            if label in manager.endpoints:
                metrics.request_done(label, time.perf_counter() - started, failure_reason(err.status))
            raise
        metrics.request_done(label, time.perf_counter() - started)
        media = headers.pop("content-type")
        return Response(content=body_out, media_type=media, headers=headers)

    async def infer_pipeline(name: str, request: Request) -> Response:
        """The pipeline model: the card's typed inputs in, "result" (+ "images") out."""
        started = time.perf_counter()
        try:
            entry = manager.ready_entry(name)
            card = entry.card
            raw = await request.body()
            encoding, header_length = request.headers.get("content-encoding"), request.headers.get(HEADER_LENGTH)
            loop = asyncio.get_running_loop()
            graph_twin = f"{name}.{name}" if name in card.graphs else ""
            hint = f" (graph {name!r} of this model is served as {graph_twin!r})" if graph_twin else ""

            def decode() -> Any:  # inflating, parsing and image decoding stay off the event loop
                body = decompress_body(raw, encoding, limits.max_body_bytes)
                document, binary = split_body(body, header_length)
                parsed = oip_pipeline.parse_pipeline_request(document, binary, card, limits, hint)
                try:
                    values = card.parse_inputs(parsed.inputs)
                    options = card.parse_options(parsed.options)
                except ValueError as err:
                    raise BadRequest(f"model {name!r}: {err}") from None
                return parsed, values, {key: options[key] for key in parsed.options}

            parsed, values, options = await loop.run_in_executor(manager.predict_pool, decode)
            result = await manager.predict(entry, card.pipeline_input(values), options, parsed.timeout_s)
            names, arrays = await loop.run_in_executor(manager.predict_pool, oip_pipeline.result_tensors, card, result, parsed.include)
            body_out, headers = await loop.run_in_executor(manager.predict_pool, encode_infer_response, name, parsed, names, arrays)
        except ServingError as err:
            metrics.request_done(name, time.perf_counter() - started, failure_reason(err.status))
            raise
        metrics.request_done(name, time.perf_counter() - started)
        media = headers.pop("content-type")
        return Response(content=body_out, media_type=media, headers=headers)

    router.add_api_route("/v2/models/{name}/infer", infer, methods=["POST"], summary="Run inference (JSON or binary tensors)", openapi_extra=infer_doc)

    async def infer_version(name: str, version: str, request: Request) -> Response:
        _check_version(name, version)
        return await infer(name, request)

    router.add_api_route("/v2/models/{name}/versions/{version}/infer", infer_version, methods=["POST"], include_in_schema=False)
    return router


def _check_version(name: str, version: str) -> None:
    if version not in ("", MODEL_VERSION):
        raise NotFound(f"model {name!r} has no version {version!r}; versions: {MODEL_VERSION}")


def _stats(manager: ModelManager, v2: str) -> dict[str, Any]:
    """Triton's statistics extension, from the same counters /metrics shows (durations in ns)."""
    m = manager.metrics
    labels = {"model": v2, "version": m.VERSION}
    success = m.request_success.value(**labels)
    failed = m.request_failure.total(model=v2)
    return {
        "name": v2,
        "version": MODEL_VERSION,
        "inference_count": int(m.inference_count.value(**labels)),
        "execution_count": int(m.exec_count.value(**labels)),
        "inference_stats": {
            "success": {"count": int(success), "ns": int(m.request_duration_us.value(**labels) * 1e3)},
            "fail": {"count": int(failed), "ns": 0},
            "queue": {"count": int(m.queue_ms.count(**labels)), "ns": int(m.queue_duration_us.value(**labels) * 1e3)},
            "compute_infer": {"count": int(m.exec_count.value(**labels)), "ns": int(m.compute_infer_duration_us.value(**labels) * 1e3)},
        },
    }
