"""Simple REST: uploads (multipart and raw), options, overlay PNG, image limits, docs."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from serving_support import BROKEN, FAKE, http, png_bytes

from zoo.imageio import decode_image
from zoo.registry import create_model

IMAGE = np.random.default_rng(3).integers(0, 255, (24, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def reference(fakes):
    """The same model run in-process, for the expected answers."""
    return create_model(FAKE, weights="random")


def assert_same_result(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
        else:
            assert got[key] == value, key


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height with almost no pixel data: a decompression
    bomb's calling card. It must be refused from the header, before any decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_multipart_upload_matches_in_process(server, reference):
    with http(server.url) as h:
        response = h.post(f"/models/{FAKE}/predict", files={"image": ("x.png", png_bytes(IMAGE), "image/png")}, data={"threshold": "0.5"})
    assert response.status_code == 200, response.text
    document = response.json()
    expected = reference.predict(Image.fromarray(IMAGE), threshold=0.5).to_json()
    assert document["model"] == FAKE and document["variant"] == "micro" and document["backend"] == "torch"
    assert_same_result(document["result"], expected)
    assert document["result"]["map_shape"] == [24, 32] and "overlay_png_base64" not in document


def test_raw_body_with_query_options(server, reference):
    with http(server.url) as h:
        plain = h.post(f"/models/{FAKE}/predict", content=png_bytes(IMAGE), headers={"Content-Type": "image/png"}).json()
        doubled = h.post(f"/models/{FAKE}/predict?gain=2", content=png_bytes(IMAGE), headers={"Content-Type": "application/octet-stream"}).json()
        any_field = h.post(f"/models/{FAKE}/predict", files={"file": ("x.png", png_bytes(IMAGE))}).json()  # one image input: any field name
    assert doubled["result"]["score"] == pytest.approx(2 * plain["result"]["score"], rel=1e-6)
    assert plain["result"]["score"] == pytest.approx(reference.predict(Image.fromarray(IMAGE)).score, rel=1e-6)
    assert any_field["result"] == plain["result"]


def test_overlay_png(server, reference):
    expected = np.asarray(reference.predict(Image.fromarray(IMAGE), threshold=0.5).draw(Image.fromarray(IMAGE)))
    with http(server.url) as h:
        png = h.post(f"/models/{FAKE}/predict?format=png&threshold=0.5", content=png_bytes(IMAGE))
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), expected)
        inline = h.post(f"/models/{FAKE}/predict", files={"image": png_bytes(IMAGE)}, data={"overlay": "true", "threshold": "0.5"}).json()
    assert np.array_equal(np.asarray(decode_image(base64.b64decode(inline["overlay_png_base64"]))), expected)


BAD_UPLOADS = [
    ("?gain=abc", png_bytes(IMAGE), 400, "option 'gain' expects float"),
    ("?gain=11", png_bytes(IMAGE), 400, "must be <= 10.0"),
    ("?colour=red", png_bytes(IMAGE), 400, "has no option 'colour'"),
    ("?format=gif", png_bytes(IMAGE), 400, "format must be json or png"),
    ("", b"definitely not an image", 400, "not an image"),
    ("", png_bytes(IMAGE)[:60], 400, "truncated or corrupt"),
    ("", b"", 400, "needs an image for input 'image'"),
    ("", png_bytes(np.zeros((400, 600, 3), np.uint8)), 413, "over the 200000-pixel limit"),
    ("", png_header_only(100_000, 100_000), 413, "pixel"),
]


@pytest.mark.parametrize("query,body,status,message", BAD_UPLOADS)
def test_bad_uploads(server, query, body, status, message):
    with http(server.url) as h:
        response = h.post(f"/models/{FAKE}/predict{query}", content=body, headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == status, response.text
        assert message in response.json()["error"]
        assert h.get("/v2/health/live").status_code == 200


def test_unknown_and_failed_models(server):
    with http(server.url) as h:
        unknown = h.post("/models/nope/predict", content=png_bytes(IMAGE))
        assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["error"]
        broken = h.post(f"/models/{BROKEN}/predict", content=png_bytes(IMAGE))
        assert broken.status_code == 503 and "weights are corrupt" in broken.json()["error"]
        wrong_field = h.post(f"/models/{FAKE}/predict", files={"a": png_bytes(IMAGE), "b": png_bytes(IMAGE)})
        assert wrong_field.status_code == 400
        assert h.get(f"/models/{FAKE}").json()["card"]["name"] == FAKE
        assert h.get("/models/nope").status_code == 404
        ok = h.post(f"/models/{FAKE}/predict", content=png_bytes(IMAGE))
        assert ok.status_code == 200


def test_docs_describe_each_model(server):
    with http(server.url) as h:
        assert "swagger" in h.get("/docs").text.lower()
        schema = h.get("/openapi.json").json()
        index = h.get("/").json()
    route = schema["paths"][f"/models/{FAKE}/predict"]["post"]
    form = route["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {k: form["properties"]["image"][k] for k in ("type", "format")} == {"type": "string", "format": "binary"}
    assert form["properties"]["gain"]["maximum"] == 10.0 and form["properties"]["gain"]["default"] == 1.0
    assert {p["name"] for p in route["parameters"]} >= {"threshold", "gain", "overlay", "format"}
    assert "/v2/models/{name}/infer" in schema["paths"]
    assert index["docs"] == "/docs" and index["demo"] is None and {m["name"] for m in index["models"]} == {FAKE, BROKEN}


def test_include_map_carries_the_anomaly_map(server, reference):
    """`include=map` (query, form or JSON body) adds the map as a 16-bit PNG scaled to its range;
    a name the result type does not offer is a 400 naming what it does offer."""
    from zoo.results import decode_png16

    want = reference.predict(Image.fromarray(IMAGE)).map
    step = (want.max() - want.min()) / 65535
    with http(server.url) as h:
        plain = h.post(f"/models/{FAKE}/predict", content=png_bytes(IMAGE), headers={"Content-Type": "image/png"}).json()
        query = h.post(f"/models/{FAKE}/predict?include=map", content=png_bytes(IMAGE), headers={"Content-Type": "image/png"}).json()
        form = h.post(f"/models/{FAKE}/predict", files={"image": ("x.png", png_bytes(IMAGE))}, data={"include": "map"}).json()
        body = h.post(f"/models/{FAKE}/predict", json={"image": base64.b64encode(png_bytes(IMAGE)).decode(), "include": ["map"]}).json()
        wrong = h.post(f"/models/{FAKE}/predict?include=masks", content=png_bytes(IMAGE), headers={"Content-Type": "image/png"})
        schema = h.get("/openapi.json").json()
    assert "map" not in plain["result"]
    for document in (query, form, body):
        encoded = document["result"]["map"]
        assert encoded["encoding"] == "png16" and encoded["shape"] == [24, 32]
        np.testing.assert_allclose(decode_png16(encoded), want, rtol=0, atol=step / 2 + 1e-6)
    assert wrong.status_code == 400 and "AnomalyResult has no 'masks' to include; it offers: map" in wrong.json()["error"]
    include = schema["paths"][f"/models/{FAKE}/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["include"]
    assert "map" in include["description"]
