"""The pipeline-level Open Inference Protocol v2 model: one per served zoo model, under the
model's own name (`/v2/models/docdiff`), beside the per-graph v2 models.

Its tensors are the card's typed inputs and options, so a v2 client runs the whole pipeline
(preprocess, every graph, the sampler loop, postprocess) the way the REST route does:

    input kind / option kind      datatype  shape       also accepted
    image                         UINT8     [H, W, 3]   BYTES [1]: an encoded PNG/JPEG (base64 text in JSON data)
    mask                          UINT8     [H, W]      BYTES [1]: an encoded PNG/JPEG (base64 text in JSON data)
    text                          BYTES     [1]         (UTF-8)
    boxes                         FP32      [N, 4]      any number type; BYTES [1]: JSON [[x0, y0, x1, y1], ...]
    polygons                      BYTES     [1]         (JSON [[[x, y], ...], ...])
    int / label option            INT64     [1]         any one-element numeric tensor; BYTES [1] (a label's class name)
    float option                  FP32      [1]         any one-element numeric tensor; BYTES [1]
    bool option                   BOOL      [1]         one-element integer tensor (0/1); BYTES [1]
    str option                    BYTES     [1]

Options (and the non-image inputs) may also come as request `parameters`
(`{"parameters": {"seed": 3, "steps": 2}}`, tritonclient's `infer(..., parameters=...)`).
The request parameter `include` ("map,masks") asks the result JSON for what it leaves out
by default, as REST's `include` field does (`zoo.results.json_includes`).
Every input is optional in the tensor sense (Triton's `optional: true` in the config) except
the card's required inputs; a generator takes a request with no inputs at all.
Outputs: "result" (BYTES [1], the result's JSON) and, for results made of images
(ImageResult, Generation), "images" (UINT8 [N, H, W, 3]; the JSON then leaves the base64
copies out). Values are checked by the card (`parse_inputs`, `parse_options`): unknown,
missing, out-of-range or NaN values are 400s that name the field. Images sent as UINT8
tensors are held to the server's pixel limit before any byte is read; encoded ones are
decoded by `zoo.imageio.decode_image` under its pixel and byte limits.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from zoo.results import RESULT_TYPES, include_kwargs, json_includes
from zoo.serving.errors import BadRequest, PayloadTooLarge, ServingError
from zoo.serving.limits import Limits
from zoo.serving.oip import (
    MODEL_VERSION,
    TRITON_TO_NUMPY,
    RequestedOutput,
    _as_dict,
    _json_tensor,
    json_safe,
    request_timeout,
    requested_outputs,
)

if TYPE_CHECKING:
    from zoo.registry import InputSpec, ModelCard, OptionSpec

PLATFORM = "zoo_pipeline"
# Request parameters that belong to the protocol (tritonclient reserves these names), not to the model.
RESERVED_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers", "binary_data_output")
IMAGE_RESULTS = ("ImageResult", "Generation")  # result types whose images come back as the "images" tensor
INPUT_TENSORS: dict[str, tuple[str, list[int]]] = {
    "image": ("UINT8", [-1, -1, 3]),
    "mask": ("UINT8", [-1, -1]),
    "text": ("BYTES", [1]),
    "boxes": ("FP32", [-1, 4]),
    "polygons": ("BYTES", [1]),
}
OPTION_DATATYPES = {"int": "INT64", "label": "INT64", "float": "FP32", "bool": "BOOL", "str": "BYTES"}
_NUMERIC = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}


def tensor_of(spec: InputSpec | OptionSpec) -> tuple[str, list[int]]:
    """(datatype, metadata shape) of one card field."""
    from zoo.registry import InputSpec

    if isinstance(spec, InputSpec):
        return INPUT_TENSORS[spec.kind]
    return OPTION_DATATYPES[spec.kind], [1]


def output_tensors(card: ModelCard) -> list[dict[str, Any]]:
    outputs = [{"name": "result", "datatype": "BYTES", "shape": [1]}]
    if card.result_type in IMAGE_RESULTS:
        outputs.append({"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]})
    return outputs


def pipeline_metadata(card: ModelCard) -> dict[str, Any]:
    inputs = []
    for spec in (*card.inputs, *card.options):
        datatype, shape = tensor_of(spec)
        inputs.append({"name": spec.name, "datatype": datatype, "shape": shape})
    return {"name": card.name, "versions": [MODEL_VERSION], "platform": PLATFORM, "inputs": inputs, "outputs": output_tensors(card)}


def pipeline_config(card: ModelCard, graphs: list[str], device: str) -> dict[str, Any]:
    """Triton's model configuration fields for the pipeline model (no batch dimension: one
    item a request; its graphs batch across requests on their own)."""
    from zoo.registry import InputSpec

    def entry(spec: Any) -> dict[str, Any]:
        datatype, shape = tensor_of(spec)
        required = isinstance(spec, InputSpec) and spec.required
        return {"name": spec.name, "data_type": "TYPE_" + ("STRING" if datatype == "BYTES" else datatype), "dims": shape, "optional": not required}

    return {
        "name": card.name,
        "platform": PLATFORM,
        "max_batch_size": 0,
        "input": [entry(spec) for spec in (*card.inputs, *card.options)],
        "output": [{"name": o["name"], "data_type": "TYPE_" + ("STRING" if o["datatype"] == "BYTES" else o["datatype"]), "dims": o["shape"]} for o in output_tensors(card)],
        "instance_group": [{"count": 1, "kind": "KIND_GPU" if str(device).startswith("cuda") else "KIND_CPU"}],
        "parameters": {"zoo_model": {"string_value": card.name}, "zoo_graphs": {"string_value": ",".join(graphs)},
                       # what the `include` request parameter may ask the result JSON for
                       "zoo_include": {"string_value": ",".join(json_includes(card.result_type)) if card.result_type in RESULT_TYPES else ""}},
    }


@dataclass
class PipelineRequest:
    id: str | None
    inputs: dict[str, Any]  # card input name -> raw value (images decoded to PIL, the rest as sent)
    options: dict[str, Any]  # option name -> raw value (parsed later by the card)
    outputs: list[RequestedOutput] | None
    binary_default: bool
    timeout_s: float | None
    include: dict[str, bool] = field(default_factory=dict)  # to_json keywords (the `include` parameter)


def parse_pipeline_request(document: dict[str, Any], binary: bytes, card: ModelCard, limits: Limits, hint: str = "") -> PipelineRequest:
    """Read a v2 request against the card's typed inputs (values are checked by the card later)."""
    from zoo.registry import InputSpec

    name = card.name
    parameters = _as_dict(document.get("parameters"), "parameters")
    for unsupported in ("sequence_id", "sequence_start", "sequence_end"):
        if parameters.get(unsupported):
            raise BadRequest(f"model {name!r}: sequence batching ({unsupported}) is not supported")
    raw_inputs = document.get("inputs", [])
    if not isinstance(raw_inputs, list):
        raise BadRequest(f"model {name!r}: 'inputs' must be a list")
    fields = {spec.name: spec for spec in (*card.inputs, *card.options)}
    known = ", ".join(f"{n} ({tensor_of(s)[0]})" for n, s in fields.items()) or "none"
    inputs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    offset = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise BadRequest(f"model {name!r}: each input must be a JSON object")
        in_name = raw.get("name")
        if in_name not in fields:
            raise BadRequest(f"model {name!r} has no input {in_name!r}; inputs: {known}{hint}")
        if in_name in inputs or in_name in options:
            raise BadRequest(f"model {name!r}: input {in_name!r} given twice")
        spec = fields[in_name]
        value, offset = _read_tensor(raw, spec, binary, offset, card, limits, hint)
        (inputs if isinstance(spec, InputSpec) else options)[in_name] = value
    if offset != len(binary):
        raise BadRequest(f"model {name!r}: {len(binary) - offset} binary bytes after the inputs are left over")
    include: dict[str, bool] = {}
    for key, value in parameters.items():
        if key in RESERVED_PARAMETERS or key.startswith("triton_"):
            continue
        if key == "include" and key not in fields:
            try:
                include = include_kwargs(card.result_type, value)
            except ValueError as err:
                raise BadRequest(f"model {name!r}: {err}") from None
            continue
        spec = fields.get(key)
        if spec is None:
            raise BadRequest(f"model {name!r} has no input or option {key!r} (request parameter); fields: {', '.join(fields) or 'none'}")
        if key in inputs or key in options:
            raise BadRequest(f"model {name!r}: {key!r} given both as an input tensor and as a parameter")
        if isinstance(spec, InputSpec):
            if spec.is_image:
                raise BadRequest(f"model {name!r}: input {key!r} is an {spec.kind}: send it as a UINT8 or BYTES input tensor, not a parameter")
            inputs[key] = value
        else:
            options[key] = value

    binary_default = bool(parameters.get("binary_data_output", False))
    outputs = requested_outputs(document, name, [o["name"] for o in output_tensors(card)], binary_default)
    timeout_s = request_timeout(parameters, name)
    request_id = document.get("id")
    return PipelineRequest(str(request_id) if request_id is not None else None, inputs, options, outputs, binary_default, timeout_s, include)


def _read_tensor(raw: dict[str, Any], spec: Any, binary: bytes, offset: int, card: ModelCard, limits: Limits, hint: str) -> tuple[Any, int]:
    """One input tensor -> (its value for the card, the new binary offset)."""
    from zoo.registry import InputSpec

    where = f"model {card.name!r}: input {spec.name!r}"
    datatype = raw.get("datatype")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    params = _as_dict(raw.get("parameters"), f"parameters of input {spec.name!r}")
    if params.get("shared_memory_region") is not None:
        raise BadRequest(f"{where}: shared-memory inputs are not supported by this server")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in raw:
            raise BadRequest(f"{where} has both 'data' and binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise BadRequest(f"{where} wants {size} binary bytes at offset {offset}, but only {len(binary) - offset} remain")
    elif "data" not in raw:
        raise BadRequest(f"{where} has no 'data' and no binary_data_size")
    chunk = binary[offset:offset + size] if size is not None else None
    next_offset = offset + (size or 0)
    native, _ = tensor_of(spec)
    is_input = isinstance(spec, InputSpec)

    if datatype == "BYTES":
        if math.prod(shape) != 1:
            raise BadRequest(f"{where}: a BYTES input holds one element (shape [1]), got shape {shape}")
        if chunk is not None:
            element = _one_bytes_element(chunk, where)
        else:
            data = raw["data"]
            while isinstance(data, list) and len(data) == 1:
                data = data[0]
            if not isinstance(data, str):
                raise BadRequest(f"{where}: BYTES 'data' must hold one string")
            if is_input and spec.is_image:  # raw image bytes cannot be JSON text: base64 it
                try:
                    element = base64.b64decode(data, validate=True)
                except (binascii.Error, ValueError):
                    raise BadRequest(f"{where}: an image in JSON 'data' must be base64 text (or send it binary)") from None
            else:
                element = data.encode("utf-8")
        if is_input and spec.is_image:
            return _decode_image(element, where, limits), next_offset
        try:
            return element.decode("utf-8"), next_offset
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: BYTES must hold UTF-8 text") from None

    if is_input:
        accepted = _NUMERIC - {"BOOL"} if spec.kind == "boxes" else {native}  # integer boxes are boxes too
    else:
        accepted = _NUMERIC if native != "BYTES" else set()
    if datatype not in accepted:
        if is_input and spec.is_image:
            wanted = f"{native} (or BYTES holding an encoded PNG/JPEG)"
        elif is_input or not accepted:
            wanted = native if native == "BYTES" else f"{native} or another number type (or BYTES holding JSON)"
        else:
            wanted = f"{native} (or any one-element numeric tensor, or BYTES)"
        raise BadRequest(f"{where} has datatype {datatype!r}, expected {wanted}{hint}")
    dtype = TRITON_TO_NUMPY[datatype]
    if is_input:
        expected = INPUT_TENSORS[spec.kind][1]
        if len(shape) != len(expected) or any(w != -1 and g != w for g, w in zip(shape, expected)):
            raise BadRequest(f"{where} has shape {shape}, expected {expected}{hint}")
        if spec.is_image and shape[0] * shape[1] > limits.max_image_pixels:
            raise PayloadTooLarge(f"{where}: image is {shape[1]}x{shape[0]} = {shape[0] * shape[1]} pixels, over the {limits.max_image_pixels}-pixel limit")
    elif math.prod(shape) != 1:
        raise BadRequest(f"{where}: an option is one value (shape [1]), got shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limits.max_body_bytes:
        raise PayloadTooLarge(f"{where} of shape {shape} needs {nbytes} bytes, over the {limits.max_body_bytes}-byte limit")
    if chunk is not None:
        if len(chunk) != nbytes:
            raise BadRequest(f"{where} of shape {shape} and datatype {datatype} needs {nbytes} bytes, binary_data_size says {len(chunk)}")
        array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype, copy=True).reshape(shape)
    else:
        array = _json_tensor(raw["data"], dtype, shape, where)
    if not is_input:
        return array.reshape(-1)[0].item(), next_offset
    if spec.kind == "image":
        return Image.fromarray(np.ascontiguousarray(array)), next_offset  # (H, W, 3) uint8: RGB
    if spec.kind == "mask":
        return Image.fromarray(np.ascontiguousarray(array)), next_offset  # (H, W) uint8: L
    return array, next_offset  # boxes: checked by the card


def _one_bytes_element(chunk: bytes, where: str) -> bytes:
    """Triton's binary BYTES layout: a 4-byte little-endian length, then that many bytes."""
    if len(chunk) < 4:
        raise BadRequest(f"{where}: BYTES data is shorter than its 4-byte length prefix")
    (length,) = struct.unpack("<I", chunk[:4])
    if 4 + length != len(chunk):
        raise BadRequest(f"{where}: BYTES element says {length} bytes, {len(chunk) - 4} follow")
    return chunk[4:]


def _decode_image(data: bytes, where: str, limits: Limits) -> Image.Image:
    from zoo.imageio import ImageDecodeError, decode_image

    try:
        return decode_image(data, max_pixels=limits.max_image_pixels, max_bytes=limits.max_image_bytes)
    except ImageDecodeError as err:
        if err.too_large:
            raise PayloadTooLarge(f"{where}: {err}") from None
        raise BadRequest(f"{where}: {err}") from None


def result_tensors(card: ModelCard, result: Any, include: dict[str, bool] | None = None) -> tuple[list[str], list[np.ndarray]]:
    """The pipeline model's outputs for one result: ("result", its JSON, with the `include`
    extras) and, for image results, ("images", UINT8 [N, H, W, 3])."""
    names = [o["name"] for o in output_tensors(card)]
    if "images" not in names:
        document = result.to_json(**(include or {}))
        return names, [np.array([_dumps(document)], dtype=np.object_)]
    document = result.to_json(include_images=False, **(include or {}))
    images = [np.asarray(im, dtype=np.uint8) for im in result.images]
    if len({im.shape for im in images}) > 1:
        raise ServingError(f"{card.name}: images of different sizes {[list(im.shape) for im in images]} cannot form one tensor")
    stacked = np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)
    return names, [np.array([_dumps(document)], dtype=np.object_), stacked]


def _dumps(document: Any) -> bytes:
    """The result's JSON (non-finite numbers as null: JSON has no NaN)."""
    return json.dumps(json_safe(document), allow_nan=False).encode()
