"""Simple REST: one predict route per model, built from its card.

    POST /models/{name}/predict
      multipart/form-data: one file field per image input (named as the card's inputs, e.g.
        "image"; a model with one image input takes any single file field), a text field per
        text input, and the model's options as fields;
      or the raw image bytes as the body (Content-Type image/* or application/octet-stream),
        options in the query string.
      Query or field `overlay=true` adds the drawn result as a base64 PNG to the JSON;
      `format=png` answers with the PNG itself.
    GET /models, GET /models/{name}: what is served, with each card and its status.

Images are decoded by `zoo.imageio.decode_image` under the server's pixel and byte limits:
the header is read first, so a decompression bomb is refused (413) before any pixel is.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from serving.errors import BadRequest, PayloadTooLarge, ServingError
from serving.limits import Limits
from serving.metrics import failure_reason

if TYPE_CHECKING:
    from serving.model_manager import ModelEntry, ModelManager
    from zoo.registry import ModelCard

CONTROL_FIELDS = ("overlay", "format")
_IMAGE_WORDS = ("image", "mask", "photo", "face", "reference", "glyph", "frame")


def input_kind(name: str) -> str:
    """"image" for inputs named like images (image, mask, face_image, ...), "text" otherwise
    (prompt, text, expression): cards name inputs, not their kinds."""
    return "image" if any(word in name.lower() for word in _IMAGE_WORDS) else "text"


def pipeline_input(card: "ModelCard", values: dict[str, Any]) -> Any:
    """What `predict` takes: the value itself for a one-input model, a dict for several, None for none."""
    if not card.inputs:
        return None
    if len(card.inputs) == 1:
        return values[card.inputs[0]]
    return {name: values[name] for name in card.inputs}


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _option_schema(option: Any) -> dict[str, Any]:
    kinds = {"float": "number", "int": "integer", "bool": "boolean", "str": "string"}
    schema: dict[str, Any] = {"type": kinds.get(option.kind, "string"), "description": option.help or option.name}
    if option.default is not None:
        schema["default"] = option.default
    if option.minimum is not None:
        schema["minimum"] = option.minimum
    if option.maximum is not None:
        schema["maximum"] = option.maximum
    if option.choices:
        schema["enum"] = list(option.choices)
    return schema


def predict_openapi(card: "ModelCard") -> dict[str, Any]:
    """The request body and query parameters of one model's predict route, for /docs."""
    properties: dict[str, Any] = {}
    for name in card.inputs:
        properties[name] = {"type": "string", "format": "binary"} if input_kind(name) == "image" else {"type": "string"}
    for option in card.options:
        properties[option.name] = _option_schema(option)
    properties["overlay"] = {"type": "boolean", "default": False, "description": "add the drawn result as a base64 PNG"}
    content: dict[str, Any] = {"multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": list(card.inputs)}}}
    image_inputs = [n for n in card.inputs if input_kind(n) == "image"]
    if len(card.inputs) == 1 and image_inputs:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
        content["image/png"] = {"schema": {"type": "string", "format": "binary"}}
        content["image/jpeg"] = {"schema": {"type": "string", "format": "binary"}}
    parameters = [{"name": o.name, "in": "query", "required": False, "schema": _option_schema(o)} for o in card.options]
    parameters += [
        {"name": "overlay", "in": "query", "required": False, "schema": {"type": "boolean", "default": False}, "description": "add the drawn result as a base64 PNG"},
        {"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": ["json", "png"], "default": "json"}, "description": "png: answer with the drawn result as image/png"},
    ]
    return {
        "requestBody": {"required": bool(card.inputs), "content": content},
        "parameters": parameters,
        "responses": {"200": {"description": "the result", "content": {"application/json": {}, "image/png": {}}}},
    }


def build_router(manager: "ModelManager", limits: Limits) -> APIRouter:
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


async def _read_inputs(entry: "ModelEntry", request: Request, limits: Limits, executor: Any) -> tuple[dict[str, Any], dict[str, str], Any]:
    """(input values, option/control fields, the image to draw on) from multipart or a raw body."""
    from zoo.imageio import ImageDecodeError, decode_image

    card = entry.card
    fields: dict[str, str] = {k: v for k, v in request.query_params.items()}
    files: dict[str, bytes] = {}
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data") or content_type.startswith("application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=max(1, len(card.inputs)), max_fields=64, max_part_size=1024 * 1024)
        except ServingError:
            raise
        except Exception as err:  # malformed multipart, too many parts
            raise BadRequest(f"could not read the form: {getattr(err, 'detail', err)}") from None
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key in files:
                        raise BadRequest(f"file field {key!r} given twice")
                    files[key] = await value.read()
                else:
                    fields[key] = value
        finally:
            await form.close()
    else:
        body = await request.body()
        image_inputs = [n for n in card.inputs if input_kind(n) == "image"]
        if body:
            if len(image_inputs) != 1 or len(card.inputs) != 1:
                raise BadRequest(f"model {card.name!r} takes inputs {list(card.inputs)}: send them as multipart/form-data fields")
            files[image_inputs[0]] = body

    values: dict[str, Any] = {}
    first_image = None
    image_inputs = [n for n in card.inputs if input_kind(n) == "image"]
    if len(image_inputs) == 1 and image_inputs[0] not in files and len(files) == 1:
        files = {image_inputs[0]: next(iter(files.values()))}  # one image input: any file field name will do
    unknown = set(files) - set(image_inputs)
    if unknown:
        raise BadRequest(f"model {card.name!r} has no image input {sorted(unknown)[0]!r}; inputs: {', '.join(card.inputs) or 'none'}")

    def decode(name: str, data: bytes) -> Any:
        try:
            return decode_image(data, max_pixels=limits.max_image_pixels, max_bytes=limits.max_image_bytes)
        except ImageDecodeError as err:
            if err.too_large:
                raise PayloadTooLarge(f"input {name!r}: {err}") from None
            raise BadRequest(f"input {name!r}: {err}") from None

    for name in card.inputs:
        if input_kind(name) == "image":
            if name not in files:
                raise BadRequest(f"model {card.name!r} needs an image for input {name!r} (a multipart file field, or the raw bytes as the body)")
            # decoding is CPU work: off the event loop (the header check inside still comes first)
            image = await asyncio.get_running_loop().run_in_executor(executor, decode, name, files[name])
            values[name] = image
            first_image = image if first_image is None else first_image
        else:
            if name not in fields:
                raise BadRequest(f"model {card.name!r} needs a text field {name!r}")
            values[name] = fields.pop(name)
    return values, fields, first_image


async def _predict(manager: "ModelManager", entry: "ModelEntry", request: Request, limits: Limits) -> Response:
    manager.ready_entry(entry.name)
    values, fields, first_image = await _read_inputs(entry, request, limits, manager.predict_pool)
    control = {key: fields.pop(key) for key in CONTROL_FIELDS if key in fields}
    fmt = control.get("format", "json").lower()
    if fmt not in ("json", "png"):
        raise BadRequest(f"format must be json or png, got {fmt!r}")
    try:
        parsed = entry.card.parse_options(fields)
    except ValueError as err:
        raise BadRequest(str(err)) from None
    # only what the caller set: `predict` fills in the defaults itself (and re-parses what it gets)
    options = {key: parsed[key] for key in fields}
    result = await manager.predict(entry, pipeline_input(entry.card, values), options)
    want_overlay = fmt == "png" or _truthy(control.get("overlay", "false"))
    png = None
    if want_overlay:
        loop = asyncio.get_running_loop()
        png = await loop.run_in_executor(manager.predict_pool, _draw_png, result, first_image)
    if fmt == "png":
        return Response(content=png, media_type="image/png")
    pipeline = entry.pipeline
    document: dict[str, Any] = {
        "model": entry.name,
        "variant": pipeline.variant if pipeline is not None else entry.variant,
        "backend": pipeline.backend if pipeline is not None else None,
        "result": result.to_json(),
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
