"""Simple REST: one predict route per model, built from its card's typed inputs.

    POST /models/{name}/predict
      application/json: {"<input>": ..., "<option>": ..., "overlay": false, "format": "json"}:
        images (and masks) as base64 strings (a data: URL works too), text as strings,
        boxes/polygons as JSON arrays, options as JSON values (`{"prompt": "a cat", "seed": 3}`);
      multipart/form-data: a file field per image input (a model with one image input takes
        any single file field), a form field per other input (boxes/polygons as JSON text)
        and per option;
      or the raw image bytes as the body (Content-Type image/* or application/octet-stream)
        for a model with one image input;
      or no body at all, where no input is required (a generator: `POST .../predict?seed=3`).
      Any non-image input, option and control field may also come in the query string.
      Control fields: `overlay=true` adds the drawn result as a base64 PNG to the JSON;
      `format=png` answers with the PNG itself; `include=map,masks` asks the result's JSON
      for what it leaves out by default (`zoo.results.json_includes`: the anomaly map as a
      16-bit PNG, masks as COCO RLE, ...).
      Unknown fields, missing required inputs and values out of range (NaN included) are
      400s that name the field.
    GET /models, GET /models/{name}: what is served, with each card and its status.

Images are decoded by `zoo.imageio.decode_image` under the server's pixel and byte limits:
the header is read first, so a decompression bomb is refused (413) before any pixel is.
Nothing here knows a model family: inputs, their kinds and the options come from the card.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from zoo.registry import InputSpec, parse_bool
from zoo.results import RESULT_TYPES, include_kwargs, json_includes
from zoo.serving.errors import BadRequest, PayloadTooLarge, ServingError
from zoo.serving.limits import Limits
from zoo.serving.metrics import failure_reason
from zoo.serving.oip import json_safe

if TYPE_CHECKING:
    from zoo.registry import ModelCard, OptionSpec
    from zoo.serving.model_manager import ModelEntry, ModelManager

CONTROL_FIELDS = ("overlay", "format", "include")
_JSON_KINDS = {
    "boxes": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
              "description": "boxes [[x0, y0, x1, y1], ...] in pixels"},
    "polygons": {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}},
                 "description": "polygons [[[x, y], ...], ...] in pixels"},
}


def _option_schema(option: OptionSpec) -> dict[str, Any]:
    kinds = {"float": "number", "int": "integer", "bool": "boolean", "str": "string"}
    description = option.help or option.name
    if option.kind == "label":
        assert option.choices is not None
        schema: dict[str, Any] = {
            "oneOf": [{"type": "string", "enum": list(option.choices)}, {"type": "integer", "minimum": 0, "maximum": len(option.choices) - 1}],
            "description": f"{description} (a class name or its index)",
        }
    else:
        schema = {"type": kinds.get(option.kind, "string"), "description": description}
        if option.minimum is not None:
            schema["minimum"] = option.minimum
        if option.maximum is not None:
            schema["maximum"] = option.maximum
        if option.choices:
            schema["enum"] = list(option.choices)
    if option.default is not None:
        schema["default"] = option.default
    return schema


def _input_schema(spec: InputSpec, body: str) -> dict[str, Any]:
    """One typed input in a multipart form (`body="form"`), a JSON body ("json") or the query ("query")."""
    description = spec.help or spec.name
    if spec.is_image:
        if body == "json":
            return {"type": "string", "format": "byte", "description": f"{description} ({spec.kind}: base64 PNG/JPEG, or a data: URL)"}
        return {"type": "string", "format": "binary", "description": f"{description} ({spec.kind})"}
    if spec.kind == "text":
        schema: dict[str, Any] = {"type": "string", "description": description}
        if spec.minimum is not None:
            schema["minLength"] = int(spec.minimum)
        if spec.maximum is not None:
            schema["maxLength"] = int(spec.maximum)
        if spec.choices:
            schema["enum"] = list(spec.choices)
        if spec.default is not None:
            schema["default"] = spec.default
        return schema
    json_schema = dict(_JSON_KINDS[spec.kind])
    if body == "json":
        if spec.minimum is not None:
            json_schema["minItems"] = int(spec.minimum)
        if spec.maximum is not None:
            json_schema["maxItems"] = int(spec.maximum)
        return {**json_schema, "description": f"{description}: {json_schema['description']}"}
    return {"type": "string", "description": f"{description}: JSON {json_schema['description']}"}


def predict_openapi(card: ModelCard) -> dict[str, Any]:
    """The request body and query parameters of one model's predict route, for /docs."""
    required = [spec.name for spec in card.inputs if spec.required]
    control = {
        "overlay": {"type": "boolean", "default": False, "description": "add the drawn result as a base64 PNG"},
        "format": {"type": "string", "enum": ["json", "png"], "default": "json", "description": "png: answer with the drawn result as image/png"},
    }
    offered = json_includes(card.result_type) if card.result_type in RESULT_TYPES else ()
    if offered:
        control["include"] = {"type": "string", "description": f"comma-separated extras for the result JSON: {', '.join(offered)}"}
    content: dict[str, Any] = {}
    for media, body in (("application/json", "json"), ("multipart/form-data", "form")):
        properties = {spec.name: _input_schema(spec, body) for spec in card.inputs}
        properties.update({option.name: _option_schema(option) for option in card.options})
        properties.update(control)
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        content[media] = {"schema": schema}
    if len(card.image_inputs) == 1:
        for media in ("application/octet-stream", "image/png", "image/jpeg"):
            content[media] = {"schema": {"type": "string", "format": "binary", "description": f"the {card.image_inputs[0].name!r} image itself"}}
    parameters = [{"name": o.name, "in": "query", "required": False, "schema": _option_schema(o)} for o in card.options]
    parameters += [{"name": i.name, "in": "query", "required": False, "schema": _input_schema(i, "query")} for i in card.inputs if not i.is_image]
    parameters += [{"name": name, "in": "query", "required": False, "schema": schema, "description": schema["description"]} for name, schema in control.items()]
    return {
        "requestBody": {"required": bool(required), "content": content},
        "parameters": parameters,
        "responses": {"200": {"description": "the result", "content": {"application/json": {}, "image/png": {}}}},
    }


def build_router(manager: ModelManager, limits: Limits) -> APIRouter:
    router = APIRouter(tags=["REST"])

    @router.get("/models", summary="The served models with their status, inputs and options")
    def models() -> list[dict[str, Any]]:
        return [entry.to_json() for entry in manager.entries.values()]

    @router.get("/models/{name}", summary="One model: its card and status")
    def model(name: str) -> dict[str, Any]:
        entry = manager.entry(name)
        return {**entry.to_json(), "card": entry.card.to_json()}

    async def handle(name: str, request: Request) -> Response:
        started = time.perf_counter()
        entry = manager.entry(name)
        try:
            response = await _predict(manager, entry, request, limits)
        except ServingError as err:
            manager.metrics.request_done(name, time.perf_counter() - started, failure_reason(err.status))
            raise
        manager.metrics.request_done(name, time.perf_counter() - started)
        return response

    # One route per served model, so /docs shows each model's inputs and options ...
    def route_for(name: str) -> Any:
        async def model_route(request: Request) -> Response:
            return await handle(name, request)

        return model_route

    for entry in manager.entries.values():
        router.add_api_route(
            f"/models/{entry.name}/predict", route_for(entry.name), methods=["POST"], name=f"predict_{entry.name}",
            summary=f"{entry.name}: {entry.card.task} -> {entry.card.result_type}", description=entry.card.summary,
            openapi_extra=predict_openapi(entry.card),
        )

    # ... and one for any other name, which answers 404 naming what is served.
    async def any_route(name: str, request: Request) -> Response:
        return await handle(name, request)

    router.add_api_route("/models/{name}/predict", any_route, methods=["POST"], include_in_schema=False)
    return router


async def _read_fields(card: ModelCard, request: Request) -> tuple[dict[str, Any], dict[str, bytes], bool]:
    """Every field the request carries: (named values from the query and the body, image
    bytes by input name, whether image values in `fields` are base64 text from JSON)."""
    fields: dict[str, Any] = dict(request.query_params.items())
    files: dict[str, bytes] = {}

    def put(key: str, value: Any) -> None:
        if key in fields or key in files:
            raise BadRequest(f"field {key!r} given twice")
        fields[key] = value

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=max(1, len(card.image_inputs)), max_fields=64, max_part_size=1024 * 1024)
        except ServingError:
            raise
        except Exception as err:  # malformed multipart, too many parts
            raise BadRequest(f"could not read the form: {getattr(err, 'detail', err)}") from None
        try:
            uploads: dict[str, bytes] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key in uploads:
                        raise BadRequest(f"file field {key!r} given twice")
                    uploads[key] = await value.read()
                else:
                    put(key, value)
        finally:
            await form.close()
        images = card.image_inputs
        if len(images) == 1 and len(uploads) == 1 and images[0].name not in uploads:
            uploads = {images[0].name: next(iter(uploads.values()))}  # one image input: any file field name will do
        for key, data in uploads.items():
            spec = _input_or_error(card, key)
            if spec is None or not spec.is_image:
                what = f"a {spec.kind} input: send it as a form field" if spec is not None else "not an input"
                raise BadRequest(f"model {card.name!r}: file field {key!r} is {what}; image inputs: {', '.join(i.name for i in images) or 'none'}")
            if key in fields:
                raise BadRequest(f"field {key!r} given twice")
            files[key] = data
        return fields, files, False
    body = await request.body()
    if content_type == "application/json":
        try:
            document = json.loads(body) if body else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadRequest(f"the JSON body is not valid JSON: {err}") from None
        except RecursionError:
            raise BadRequest("the JSON body is nested too deeply") from None
        if not isinstance(document, dict):
            raise BadRequest(f"the JSON body must be an object of fields, got {type(document).__name__}")
        for key, value in document.items():
            put(key, value)
        return fields, files, True
    if body:
        images = card.image_inputs
        if len(images) != 1:
            inputs = ", ".join(f"{i.name} ({i.kind})" for i in card.inputs) or "none"
            raise BadRequest(f"model {card.name!r} takes inputs {inputs}: send them as a JSON object or multipart/form-data fields, not a raw body")
        files[images[0].name] = body
    return fields, files, False


def _input_or_error(card: ModelCard, name: str) -> InputSpec | None:
    return next((spec for spec in card.inputs if spec.name == name), None)


def _base64_image(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"input {name!r} is an image: send it as a base64 string in JSON, got {type(value).__name__}")
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"input {name!r}: not valid base64") from None


async def _read_request(entry: ModelEntry, request: Request, limits: Limits, executor: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    """(parsed input values, the options the caller set (parsed), control fields, the image to draw on)."""
    from zoo.imageio import ImageDecodeError, decode_image

    card = entry.card
    fields, files, json_body = await _read_fields(card, request)
    raw_inputs: dict[str, Any] = {}
    raw_options: dict[str, Any] = {}
    control: dict[str, Any] = {}
    for key, value in fields.items():
        if key in CONTROL_FIELDS:
            control[key] = value
            continue
        try:
            spec = card.field_spec(key)
        except ValueError as err:
            raise BadRequest(str(err)) from None
        if isinstance(spec, InputSpec):
            if spec.is_image and not json_body:
                raise BadRequest(f"input {key!r} is an {spec.kind}: send it as a file field, base64 in a JSON body, or the raw body")
            raw_inputs[key] = value
        else:
            raw_options[key] = value
    for spec in card.image_inputs:
        if spec.name in raw_inputs:
            files[spec.name] = _base64_image(spec.name, raw_inputs.pop(spec.name))
        if spec.required and spec.name not in files:
            raise BadRequest(f"model {card.name!r} needs an image for input {spec.name!r} (a multipart file field, base64 in a JSON body, or the raw bytes as the body)")

    def decode(name: str, data: bytes) -> Any:
        try:
            return decode_image(data, max_pixels=limits.max_image_pixels, max_bytes=limits.max_image_bytes)
        except ImageDecodeError as err:
            if err.too_large:
                raise PayloadTooLarge(f"input {name!r}: {err}") from None
            raise BadRequest(f"input {name!r}: {err}") from None

    first_image = None
    for name, data in files.items():
        # decoding is CPU work: off the event loop (the header check inside still comes first)
        image = await asyncio.get_running_loop().run_in_executor(executor, decode, name, data)
        raw_inputs[name] = image
        first_image = image if first_image is None else first_image
    try:
        values = card.parse_inputs(raw_inputs)
        parsed = card.parse_options(raw_options)
    except ValueError as err:
        raise BadRequest(f"model {card.name!r}: {err}") from None
    # only what the caller set: `predict` fills in the defaults itself (and re-parses what it gets)
    return values, {key: parsed[key] for key in raw_options}, control, first_image


async def _predict(manager: ModelManager, entry: ModelEntry, request: Request, limits: Limits) -> Response:
    manager.ready_entry(entry.name)
    values, options, control, first_image = await _read_request(entry, request, limits, manager.predict_pool)
    fmt = str(control.get("format", "json")).lower()
    if fmt not in ("json", "png"):
        raise BadRequest(f"format must be json or png, got {fmt!r}")
    try:
        overlay = parse_bool(control.get("overlay", False), "field 'overlay'")
        include = include_kwargs(entry.card.result_type, control.get("include"))
    except ValueError as err:
        raise BadRequest(str(err)) from None
    result = await manager.predict(entry, entry.card.pipeline_input(values), options)
    png = None
    loop = asyncio.get_running_loop()
    if fmt == "png" or overlay:
        png = await loop.run_in_executor(manager.predict_pool, _draw_png, result, first_image)
    if fmt == "png":
        return Response(content=png, media_type="image/png")
    pipeline = entry.pipeline
    document: dict[str, Any] = {
        "model": entry.name,
        "variant": pipeline.variant if pipeline is not None else entry.variant,
        "backend": pipeline.backend if pipeline is not None else None,
        # PNG/RLE encoding of maps and masks is CPU work: off the event loop; NaN/Inf as null (JSON has neither)
        "result": await loop.run_in_executor(manager.predict_pool, lambda: json_safe(result.to_json(**include))),
    }
    if png is not None:
        document["overlay_png_base64"] = base64.b64encode(png).decode()
    return JSONResponse(document)


def _draw_png(result: Any, image: Any) -> bytes:
    try:
        drawn = result.draw(image)
    except Exception as err:
        raise ServingError(f"could not draw the result: {type(err).__name__}: {err}") from err
    buffer = io.BytesIO()
    drawn.save(buffer, format="PNG")
    return buffer.getvalue()
