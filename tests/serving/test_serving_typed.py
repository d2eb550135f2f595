"""Typed inputs over HTTP (issue #12, #19): REST (JSON, multipart, query, no body) and the
pipeline-level Open Inference Protocol v2 model (raw JSON and tritonclient), driven with
test-time cards that the serving layer has never heard of: a generator with no inputs and
an editor with image, mask, text and boxes inputs (tests/support/typed_toys.py)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from serving_support import FAKE, FAKE_GRAPH, http, live, png_bytes
from tritonclient.utils import InferenceServerException
from typed_toys import EDITOR, GENERATOR, TOY_CLASSES, toy_generate

from zoo.imageio import decode_image
from zoo.registry import create_model
from zoo.serving import BatchingConfig, Limits, create_app

MAX_PIXELS = 10_000
PICTURE = np.full((10, 12, 3), 200, np.uint8)
MASK = np.zeros((10, 12), np.uint8)
MASK[8:, 10:] = 255


@pytest.fixture(scope="module")
def typed_server(typed_toys):
    pipelines = {name: create_model(name, weights="random") for name in (GENERATOR, EDITOR)}
    app = create_app(pipelines, batching=BatchingConfig(max_batch_size=4), limits=Limits(max_image_pixels=MAX_PIXELS))
    with live(app) as running:
        yield running


def edited(prompt: str, boxes: list, mask: bool) -> np.ndarray:
    """What toy-editor makes of PICTURE, by hand."""
    out = PICTURE.copy()
    for x0, y0, x1, y1 in boxes:
        out[y0:y1, x0:x1] = ((len(prompt) * 10) % 256, 0, 0)
    if mask:
        out[MASK > 127] = 0
    return out


def b64(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode()


def first_image(document: dict) -> np.ndarray:
    return np.asarray(decode_image(base64.b64decode(document["result"]["images_png_base64"][0])))


# -- REST ----------------------------------------------------------------------------------
def test_rest_generator_needs_no_body(typed_server):
    with http(typed_server.url) as h:
        plain = h.post(f"/models/{GENERATOR}/predict")
        assert plain.status_code == 200, plain.text
        assert plain.json()["result"]["seeds"] == [0] and np.array_equal(first_image(plain.json()), toy_generate(0, 2, 1))
        query = h.post(f"/models/{GENERATOR}/predict?seed=5&class_label=circle").json()
        assert query["result"]["seeds"] == [5] and np.array_equal(first_image(query), toy_generate(5, 2, 0))


def test_rest_generator_json_and_form_bodies(typed_server):
    with http(typed_server.url) as h:
        as_json = h.post(f"/models/{GENERATOR}/predict", json={"seed": 3, "class_label": "triangle", "steps": 3, "guidance": 1.0})
        assert as_json.status_code == 200, as_json.text
        assert np.array_equal(first_image(as_json.json()), toy_generate(3, 3, 2))
        assert as_json.json()["result"]["info"]["class_name"] == "triangle"
        form = h.post(f"/models/{GENERATOR}/predict", data={"seed": "3", "class_label": "2", "invert": "yes"})
        assert form.status_code == 200, form.text
        assert np.array_equal(first_image(form.json()), toy_generate(3, 2, 2, invert=True))
        png = h.post(f"/models/{GENERATOR}/predict?format=png", json={"seed": 1})
        assert png.headers["content-type"] == "image/png"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), toy_generate(1, 2, 1))


GENERATOR_400 = [
    ({"json": {"sed": 3}}, "has no option 'sed'"),
    ({"json": {"steps": 9}}, "option 'steps' must be <= 8"),
    ({"json": {"steps": 2.5}}, "option 'steps' expects int"),
    ({"content": b'{"guidance": NaN}', "headers": {"Content-Type": "application/json"}}, "option 'guidance' expects a finite float"),
    ({"params": {"guidance": "inf"}}, "option 'guidance' expects a finite float"),
    ({"json": {"invert": "maybe"}}, "option 'invert' expects a boolean"),
    ({"data": {"invert": "maybe"}}, "option 'invert' expects a boolean"),
    ({"json": {"class_label": "hexagon"}}, "option 'class_label' expects a class name"),
    ({"json": {"class_label": 3}}, "option 'class_label' must be a class index 0..2"),
    ({"json": {"seed": -1}}, "option 'seed' must be >= 0"),
    ({"json": [1, 2]}, "must be an object of fields"),
    ({"content": b"{nope", "headers": {"Content-Type": "application/json"}}, "not valid JSON"),
    ({"json": {"seed": 1}, "params": {"seed": 2}}, "field 'seed' given twice"),
    ({"json": {"overlay": "maybe"}}, "field 'overlay' expects a boolean"),
    ({"content": png_bytes(PICTURE), "headers": {"Content-Type": "image/png"}}, "send them as a JSON object or multipart"),
    ({"files": {"image": ("x.png", png_bytes(PICTURE))}}, "file field 'image' is not an input"),
]


@pytest.mark.parametrize("request_kwargs,message", GENERATOR_400)
def test_rest_generator_400s_name_the_field(typed_server, request_kwargs, message):
    with http(typed_server.url) as h:
        response = h.post(f"/models/{GENERATOR}/predict", **request_kwargs)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_rest_editor_json_and_multipart(typed_server):
    want = edited("abc", [[0, 0, 2, 3]], mask=True)
    with http(typed_server.url) as h:
        as_json = h.post(f"/models/{EDITOR}/predict", json={"image": b64(PICTURE), "mask": "data:image/png;base64," + b64(MASK), "prompt": "abc", "boxes": [[0, 0, 2, 3]], "overlay": True})
        assert as_json.status_code == 200, as_json.text
        assert np.array_equal(first_image(as_json.json()), want) and as_json.json()["result"]["info"] == {"prompt": "abc", "boxes": 1}
        assert as_json.json()["overlay_png_base64"]
        form = h.post(f"/models/{EDITOR}/predict", files={"image": ("a.png", png_bytes(PICTURE)), "mask": ("m.png", png_bytes(MASK))},
                      data={"prompt": "abc", "boxes": "[[0, 0, 2, 3]]", "strength": "1"})
        assert form.status_code == 200, form.text
        assert np.array_equal(first_image(form.json()), want)
        optional_left_out = h.post(f"/models/{EDITOR}/predict?prompt=abcd", files={"image": ("a.png", png_bytes(PICTURE))})
        assert np.array_equal(first_image(optional_left_out.json()), edited("abcd", [], mask=False))


EDITOR_400 = [
    ({"json": {"image": b64(PICTURE)}}, "input 'prompt' (text) is required"),
    ({"json": {"prompt": "abc"}}, "needs an image for input 'image'"),
    ({"json": {"image": b64(PICTURE), "prompt": "x" * 41}}, "input 'prompt' must be a text of length <= 40"),
    ({"json": {"image": b64(PICTURE), "prompt": 7}}, "input 'prompt' expects text"),
    ({"json": {"image": b64(PICTURE), "prompt": "a", "boxes": [[0, 0, 1]]}}, "input 'boxes' expects boxes"),
    ({"json": {"image": b64(PICTURE), "prompt": "a", "boxes": [[0, 0, 1, 1]] * 5}}, "input 'boxes' must be a number of items <= 4"),
    ({"json": {"image": "%%%", "prompt": "a"}}, "input 'image': not valid base64"),
    ({"json": {"image": base64.b64encode(b"not an image").decode(), "prompt": "a"}}, "input 'image': not an image"),
    ({"json": {"image": b64(PICTURE), "prompt": "a", "colour": "red"}}, "has no option 'colour'"),
    ({"json": {"image": b64(PICTURE), "prompt": "a", "strength": 2}}, "option 'strength' must be <= 1.0"),
    ({"data": {"image": "not a file", "prompt": "a"}}, "input 'image' is an image: send it as a file field"),
    ({"files": {"prompt": ("p.txt", b"abc")}, "data": {}}, "file field 'prompt' is a text input"),
    ({"content": png_bytes(PICTURE), "headers": {"Content-Type": "image/png"}}, "send them as a JSON object or multipart"),
]


@pytest.mark.parametrize("request_kwargs,message", EDITOR_400)
def test_rest_editor_400s_name_the_field(typed_server, request_kwargs, message):
    with http(typed_server.url) as h:
        response = h.post(f"/models/{EDITOR}/predict", **request_kwargs)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_rest_image_limits_hold_for_base64(typed_server):
    with http(typed_server.url) as h:
        big = h.post(f"/models/{EDITOR}/predict", json={"image": b64(np.zeros((200, 200, 3), np.uint8)), "prompt": "a"})
    assert big.status_code == 413 and "input 'image'" in big.json()["error"]


def test_openapi_follows_the_typed_inputs(typed_server):
    with http(typed_server.url) as h:
        schema = h.get("/openapi.json").json()
        listing = {m["name"]: m for m in h.get("/models").json()}
    generator = schema["paths"][f"/models/{GENERATOR}/predict"]["post"]
    assert generator["requestBody"]["required"] is False
    body = generator["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["steps"] == {"type": "integer", "description": "sampling steps", "minimum": 1, "maximum": 8, "default": 2}
    assert body["properties"]["class_label"]["oneOf"][0]["enum"] == list(TOY_CLASSES) and body["additionalProperties"] is False
    assert "application/octet-stream" not in generator["requestBody"]["content"]
    editor = schema["paths"][f"/models/{EDITOR}/predict"]["post"]
    assert editor["requestBody"]["required"] is True
    as_json = editor["requestBody"]["content"]["application/json"]["schema"]
    form = editor["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert as_json["required"] == ["image", "prompt"] and as_json["properties"]["image"]["format"] == "byte"
    assert as_json["properties"]["boxes"]["type"] == "array" and as_json["properties"]["boxes"]["maxItems"] == 4
    assert form["properties"]["mask"]["format"] == "binary" and form["properties"]["boxes"]["type"] == "string"
    assert form["properties"]["prompt"]["maxLength"] == 40
    query = {p["name"] for p in editor["parameters"]}
    assert {"prompt", "boxes", "strength", "overlay", "format"} <= query and "image" not in query
    assert [i["kind"] for i in listing[EDITOR]["inputs"]] == ["image", "mask", "text", "boxes"] and listing[GENERATOR]["inputs"] == []


# -- Open Inference Protocol v2: the pipeline model ----------------------------------------
def client(server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def scalar(name: str, value, datatype: str, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, [1], datatype)
    dtype = {"INT64": np.int64, "FP32": np.float32, "BOOL": np.bool_, "BYTES": np.object_}[datatype]
    tensor.set_data_from_numpy(np.array([value], dtype=dtype), binary_data=binary)
    return tensor


def test_v2_pipeline_metadata_and_config(typed_server):
    c = client(typed_server)
    assert c.is_model_ready(GENERATOR) and c.is_model_ready(EDITOR)
    meta = c.get_model_metadata(GENERATOR)
    assert meta["platform"] == "zoo_pipeline"
    assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
        "seed": ("INT64", [1]), "steps": ("INT64", [1]), "class_label": ("INT64", [1]), "guidance": ("FP32", [1]), "invert": ("BOOL", [1])}
    assert meta["outputs"] == [{"name": "result", "datatype": "BYTES", "shape": [1]}, {"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    editor = c.get_model_metadata(EDITOR)
    assert [(i["name"], i["datatype"], i["shape"]) for i in editor["inputs"][:4]] == [
        ("image", "UINT8", [-1, -1, 3]), ("mask", "UINT8", [-1, -1]), ("prompt", "BYTES", [1]), ("boxes", "FP32", [-1, 4])]
    config = c.get_model_config(EDITOR)
    assert config["max_batch_size"] == 0 and {i["name"]: i["optional"] for i in config["input"]} == {"image": False, "mask": True, "prompt": False, "boxes": True, "strength": True}
    assert config["input"][2]["data_type"] == "TYPE_STRING"
    index = {m["name"] for m in c.get_model_repository_index()}
    assert index == {GENERATOR, EDITOR, "render", "edit-identity"}  # pipelines and graphs, names apart
    assert c.get_model_metadata("render")["inputs"][1] == {"name": "label", "datatype": "INT64", "shape": [-1]}


@pytest.mark.parametrize("binary", [True, False])
def test_v2_generator_with_tritonclient(typed_server, binary):
    outputs = [triton.InferRequestedOutput("result", binary_data=binary), triton.InferRequestedOutput("images", binary_data=binary)]
    result = client(typed_server).infer(GENERATOR, [scalar("seed", 3, "INT64", binary), scalar("steps", 3, "INT64", binary)],
                                        outputs=outputs, parameters={"class_label": "triangle"})
    images = result.as_numpy("images")
    assert images.dtype == np.uint8 and images.shape == (1, 8, 8, 3)
    assert np.array_equal(images[0], toy_generate(3, 3, 2))
    document = json.loads(result.as_numpy("result")[0])
    assert document["type"] == "generation" and document["seeds"] == [3] and document["steps"] == 3
    assert "images_png_base64" not in document  # the pixels travel as the "images" tensor
    nothing = client(typed_server).infer(GENERATOR, [])  # a generator needs no input at all
    assert np.array_equal(nothing.as_numpy("images")[0], toy_generate(0, 2, 1))
    flags = client(typed_server).infer(GENERATOR, [scalar("invert", True, "BOOL", binary), scalar("guidance", 0.5, "FP32", binary)])
    assert np.array_equal(flags.as_numpy("images")[0], toy_generate(0, 2, 1, invert=True, guidance=0.5))


def test_v2_editor_with_tritonclient(typed_server):
    image = triton.InferInput("image", list(PICTURE.shape), "UINT8")
    image.set_data_from_numpy(PICTURE)
    mask = triton.InferInput("mask", [1], "BYTES")  # an encoded PNG instead of UINT8 [H, W]
    mask.set_data_from_numpy(np.array([png_bytes(MASK)], dtype=np.object_))
    boxes = triton.InferInput("boxes", [1, 4], "FP32")
    boxes.set_data_from_numpy(np.array([[0, 0, 2, 3]], np.float32))
    result = client(typed_server).infer(EDITOR, [image, mask, scalar("prompt", b"abc", "BYTES"), boxes])
    assert np.array_equal(result.as_numpy("images")[0], edited("abc", [[0, 0, 2, 3]], mask=True))
    assert json.loads(result.as_numpy("result")[0])["info"] == {"prompt": "abc", "boxes": 1}


def test_v2_raw_json_with_base64_image_and_parameters(typed_server):
    body = {"id": "r1", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(PICTURE)]},
                                   {"name": "mask", "datatype": "UINT8", "shape": list(MASK.shape), "data": MASK.ravel().tolist()}],
            "parameters": {"prompt": "ab", "boxes": "[[1, 1, 3, 3]]", "strength": 0.5}}
    with http(typed_server.url) as h:
        response = h.post(f"/v2/models/{EDITOR}/infer", json=body)
    assert response.status_code == 200, response.text
    document = response.json()
    outputs = {o["name"]: o for o in document["outputs"]}
    assert document["id"] == "r1" and document["model_name"] == EDITOR and outputs["images"]["shape"] == [1, 10, 12, 3]
    want = PICTURE.copy()
    want[1:3, 1:3] = (10, 0, 0)  # 20 * 0.5
    want[MASK > 127] = 0
    assert np.array_equal(np.array(outputs["images"]["data"], np.uint8).reshape(10, 12, 3), want)
    assert json.loads(outputs["result"]["data"][0])["info"]["boxes"] == 1
    integer_boxes = {"inputs": [body["inputs"][0], _tensor("boxes", "INT64", [2, 4], [0, 0, 2, 3, 4, 4, 6, 6])], "parameters": {"prompt": "abc"}}
    with http(typed_server.url) as h:
        response = h.post(f"/v2/models/{EDITOR}/infer", json=integer_boxes)
    assert response.status_code == 200, response.text
    images = {o["name"]: o for o in response.json()["outputs"]}["images"]
    assert np.array_equal(np.array(images["data"], np.uint8).reshape(10, 12, 3), edited("abc", [[0, 0, 2, 3], [4, 4, 6, 6]], mask=False))


def _tensor(name, datatype, shape, data):
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


V2_400 = [
    (GENERATOR, {"inputs": [_tensor("colour", "INT64", [1], [1])]}, 400, "has no input 'colour'"),
    (GENERATOR, {"inputs": [_tensor("steps", "INT64", [1], [9])]}, 400, "option 'steps' must be <= 8"),
    (GENERATOR, {"inputs": [_tensor("steps", "FP32", [1], [2.5])]}, 400, "option 'steps' expects int"),
    (GENERATOR, {"inputs": [_tensor("steps", "INT64", [2], [1, 2])]}, 400, "an option is one value"),
    (GENERATOR, {"inputs": [_tensor("invert", "BYTES", [1], ["maybe"])]}, 400, "option 'invert' expects a boolean"),
    (GENERATOR, {"inputs": [], "parameters": {"guidance": float("nan")}}, 400, "option 'guidance' expects a finite float"),
    (GENERATOR, {"inputs": [_tensor("guidance", "FP32", [1], [float("inf")])]}, 400, "option 'guidance' expects a finite float"),
    (GENERATOR, {"inputs": [], "parameters": {"colour": 1}}, 400, "no input or option 'colour'"),
    (GENERATOR, {"inputs": [_tensor("seed", "INT64", [1], [1])], "parameters": {"seed": 2}}, 400, "given both"),
    (GENERATOR, {"inputs": [], "outputs": [{"name": "heatmap"}]}, 400, "no output 'heatmap'"),
    (EDITOR, {"inputs": [_tensor("image", "UINT8", [2, 2, 3], [0] * 12)]}, 400, "input 'prompt' (text) is required"),
    (EDITOR, {"inputs": [_tensor("image", "FP32", [2, 2, 3], [0.0] * 12)]}, 400, "expected UINT8 (or BYTES holding an encoded PNG/JPEG)"),
    (EDITOR, {"inputs": [_tensor("image", "UINT8", [2, 2], [0] * 4)]}, 400, "expected [-1, -1, 3]"),
    (EDITOR, {"inputs": [_tensor("image", "UINT8", [200, 200, 3], [0] * 3)]}, 413, "over the 10000-pixel limit"),
    (EDITOR, {"inputs": [_tensor("image", "BYTES", [1], ["bm90IGFuIGltYWdl"])]}, 400, "not an image"),
    (EDITOR, {"inputs": [_tensor("image", "UINT8", [2, 2, 3], [0] * 12)], "parameters": {"prompt": "a", "boxes": "[[0, 0, 1]]"}}, 400, "input 'boxes' expects boxes"),
    (EDITOR, {"inputs": [], "parameters": {"image": "x"}}, 400, "send it as a UINT8 or BYTES input tensor"),
    (EDITOR, {"inputs": [_tensor("prompt", "INT64", [1], [7])]}, 400, "input 'prompt' has datatype 'INT64', expected BYTES"),
    (EDITOR, {"inputs": [_tensor("boxes", "BOOL", [1, 4], [True] * 4)]}, 400, "input 'boxes' has datatype 'BOOL', expected FP32 or another number type"),
]


@pytest.mark.parametrize("model,body,status,message", V2_400)
def test_v2_pipeline_errors_name_the_field(typed_server, model, body, status, message):
    with http(typed_server.url) as h:
        response = h.post(f"/v2/models/{model}/infer", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_v2_graphs_still_serve_beside_the_pipelines(typed_server):
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    tensors = [triton.InferInput("x", [2, 3, 8, 8], "FP32"), triton.InferInput("label", [2], "INT64")]
    tensors[0].set_data_from_numpy(x)
    tensors[1].set_data_from_numpy(np.array([0, 2], np.int64))
    y = client(typed_server).infer("render", tensors).as_numpy("y")
    import torch
    from typed_toys import ToyGenConfig, ToyGenNet

    with torch.no_grad():
        want = ToyGenNet(ToyGenConfig())(torch.from_numpy(x), torch.tensor([0, 2]))[0].numpy()
    np.testing.assert_allclose(y, want, atol=1e-6)


def test_v2_pipeline_of_a_model_with_a_graph_of_its_name(server):
    """fake-anomaly: the bare name is the pipeline (UINT8 image in, the REST result out); its
    graph of the same name answers as fake-anomaly.fake-anomaly, and a graph-shaped request to
    the pipeline is told where the graph went."""
    image = np.random.default_rng(1).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    tensor = triton.InferInput("image", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image)
    c = client(server)
    result = c.infer(FAKE, [tensor], parameters={"threshold": 0.5})
    document = json.loads(result.as_numpy("result")[0])
    with http(server.url) as h:
        rest = h.post(f"/models/{FAKE}/predict?threshold=0.5", content=png_bytes(image)).json()["result"]
    assert document == rest and [o["name"] for o in c.get_model_metadata(FAKE)["outputs"]] == ["result"]
    assert c.get_model_metadata(FAKE_GRAPH)["inputs"][0]["datatype"] == "FP32"
    graph_shaped = triton.InferInput("image", [1, 3, 8, 8], "FP32")
    graph_shaped.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InferenceServerException) as err:
        c.infer(FAKE, [graph_shaped])
    assert err.value.status() == "400" and f"served as '{FAKE_GRAPH}'" in err.value.message()
