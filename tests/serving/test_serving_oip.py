"""Open Inference Protocol v2: tritonclient (binary and JSON), raw JSON, readiness, bad requests."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton
from serving_support import BROKEN, FAKE, FAKE_GRAPH, MAX_BODY, expected_outputs, http
from tritonclient.utils import InferenceServerException

RNG = np.random.default_rng(0)


def client(server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def infer(server, array: np.ndarray, binary: bool, model: str = FAKE_GRAPH, **kwargs):
    tensor = triton.InferInput("image", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    outputs = [triton.InferRequestedOutput("anomaly_map", binary_data=binary), triton.InferRequestedOutput("score", binary_data=binary)]
    return client(server).infer(model, [tensor], outputs=outputs, **kwargs)


def test_health_and_metadata(server):
    c = client(server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata()["extensions"][0] == "binary_tensor_data"
    meta = c.get_model_metadata(FAKE_GRAPH)
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]
    assert meta["outputs"] == [{"name": "anomaly_map", "datatype": "FP32", "shape": [-1, 1, 8, 8]}, {"name": "score", "datatype": "FP32", "shape": [-1]}]
    pool = c.get_model_metadata("pool")  # named after its graph, as in the Triton repository export writes
    assert pool["inputs"][0]["shape"] == [-1, 3, -1, -1] and pool["outputs"][0]["shape"] == [-1, 3]
    assert c.get_model_metadata(f"{FAKE}.pool")["name"] == "pool"  # model.graph alias
    config = c.get_model_config(FAKE_GRAPH)
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [3, 8, 8] and config["output"][1]["dims"] == []
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 20000
    index = {m["name"]: m["state"] for m in c.get_model_repository_index()}
    assert index == {FAKE: "READY", FAKE_GRAPH: "READY", "pool": "READY", BROKEN: "UNAVAILABLE", f"{BROKEN}.{BROKEN}": "UNAVAILABLE"}


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infer(server, binary):
    x = RNG.random((3, 3, 8, 8), dtype=np.float32)
    result = infer(server, x, binary)
    want_map, want_score = expected_outputs(x)
    np.testing.assert_allclose(result.as_numpy("anomaly_map"), want_map, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("score"), want_score, rtol=0, atol=1e-6)
    raw = result.get_response()
    assert ("binary_data_size" in raw["outputs"][0].get("parameters", {})) == binary
    assert raw["model_name"] == FAKE_GRAPH and raw["model_version"] == "1"


def test_tritonclient_defaults_id_and_compression(server):
    x = RNG.random((1, 3, 8, 8), dtype=np.float32)
    tensor = triton.InferInput("image", [1, 3, 8, 8], "FP32")
    tensor.set_data_from_numpy(x)
    # no requested outputs: the client asks for all of them in binary
    result = client(server).infer(FAKE_GRAPH, [tensor], request_id="req-7", request_compression_algorithm="gzip")
    assert result.get_response()["id"] == "req-7"
    np.testing.assert_allclose(result.as_numpy("score"), expected_outputs(x)[1], atol=1e-6)
    pooled = np.random.default_rng(1).random((2, 3, 6, 5), dtype=np.float32)
    tensor = triton.InferInput("image", [2, 3, 6, 5], "FP32")
    tensor.set_data_from_numpy(pooled)
    out = client(server).infer("pool", [tensor]).as_numpy("pooled")
    np.testing.assert_allclose(out, pooled.mean(axis=(2, 3)), atol=1e-6)


def test_raw_json_infer(server):
    x = RNG.random((2, 3, 8, 8), dtype=np.float32)
    body = {"id": "raw", "inputs": [{"name": "image", "shape": [2, 3, 8, 8], "datatype": "FP32", "data": x.tolist()}]}  # nested lists
    with http(server.url) as h:
        response = h.post(f"/v2/models/{FAKE_GRAPH}/infer", json=body)
    assert response.status_code == 200, response.text
    document = response.json()
    outputs = {o["name"]: o for o in document["outputs"]}
    assert document["id"] == "raw" and outputs["score"]["shape"] == [2] and outputs["score"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(outputs["score"]["data"], dtype=np.float32), expected_outputs(x)[1], atol=1e-6)
    np.testing.assert_allclose(np.array(outputs["anomaly_map"]["data"], dtype=np.float32).reshape(2, 1, 8, 8), expected_outputs(x)[0], atol=1e-6)


def test_binary_request_by_hand(server):
    """The extension's wire format, written out: JSON header, then little-endian FP32 bytes."""
    x = RNG.random((1, 3, 8, 8), dtype=np.float32)
    blob = x.astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": len(blob)}}],
                       "outputs": [{"name": "score", "parameters": {"binary_data": True}}]}).encode()
    with http(server.url) as h:
        response = h.post(f"/v2/models/{FAKE_GRAPH}/infer", content=head + blob, headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    n = int(response.headers["Inference-Header-Content-Length"])
    document = json.loads(response.content[:n])
    assert [o["name"] for o in document["outputs"]] == ["score"] and document["outputs"][0]["parameters"]["binary_data_size"] == 4
    (score,) = struct.unpack("<f", response.content[n:])
    assert score == pytest.approx(float(expected_outputs(x)[1][0]), abs=1e-6)


def test_failed_model_is_reported_on_its_own(server):
    c = client(server)
    assert c.is_server_ready() and c.is_model_ready(FAKE) and not c.is_model_ready(BROKEN)
    with http(server.url) as h:
        ready = h.get(f"/v2/models/{BROKEN}/ready")
        assert ready.status_code == 400 and "weights are corrupt" in ready.json()["error"]
        listing = {m["name"]: m for m in h.get("/models").json()}
        assert listing[BROKEN]["status"] == "failed" and listing[FAKE]["status"] == "ready"
    with pytest.raises(InferenceServerException) as err:
        infer(server, np.zeros((1, 3, 8, 8), np.float32), True, model=BROKEN)
    assert err.value.status() == "503" and "failed to load" in err.value.message()


def _v2(shape, datatype="FP32", data=None, name="image", **extra):
    data = data if data is not None else [0.0] * int(np.prod(shape))
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}], **extra}


BAD_JSON_REQUESTS = [
    (_v2([1, 3, 8, 8], name="img"), 400, "no input 'img'"),
    (_v2([1, 3, 8, 8], datatype="FP64"), 400, "datatype 'FP64', expected FP32"),
    (_v2([1, 3, 8]), 400, "expected [-1, 3, 8, 8]"),
    (_v2([1, 3, 8, 9]), 400, "dimension 3 must be 8"),
    (_v2([9, 3, 8, 8]), 400, "allowed 1..8"),
    (_v2([1, 3, 8, 8], data=[0.0] * 10), 400, "has 10 elements"),
    (_v2([1, 3, 8, 8], data=["a"] * 192), 400, "not FP32"),
    (_v2([1, 3, 8, 8], data=[[0.0, 1.0], [0.0]]), 400, "not a regular array"),
    (_v2([1, 3, 8, 8], outputs=[{"name": "heatmap"}]), 400, "no output 'heatmap'"),
    (_v2([1, 3, 8, 8], outputs=[{"name": "score", "parameters": {"classification": 2}}]), 400, "classification"),
    ({"inputs": []}, 400, "non-empty list"),
    ({"inputs": [{"name": "image", "shape": "1x3", "datatype": "FP32", "data": []}]}, 400, "list of integers"),
    ({"outputs": []}, 400, "'inputs'"),
    ([1, 2, 3], 400, "JSON object"),
]


@pytest.mark.parametrize("body,status,message", BAD_JSON_REQUESTS)
def test_bad_json_requests(server, body, status, message):
    with http(server.url) as h:
        response = h.post(f"/v2/models/{FAKE_GRAPH}/infer", json=body)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]
        assert h.get("/v2/health/live").status_code == 200


def test_bad_binary_and_transport(server):
    blob = np.zeros((1, 3, 8, 8), "<f4").tobytes()

    def binary_request(size: int, payload: bytes, header_len: int | None = None) -> tuple[bytes, dict[str, str]]:
        head = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}).encode()
        return head + payload, {"Inference-Header-Content-Length": str(header_len if header_len is not None else len(head))}

    cases = [
        (binary_request(100, blob), 400, "needs 768 bytes, binary_data_size says 100"),
        (binary_request(768, blob[:500]), 400, "only 500 remain"),
        (binary_request(768, blob + b"xx"), 400, "left over"),
        (binary_request(768, blob, header_len=10**6), 400, "Inference-Header-Content-Length is 1000000"),
        ((b"{not json", {}), 400, "not valid JSON"),
        ((b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}), 400, "nested too deeply"),
        ((json.dumps(_v2([1, 3, 8, 8], data=[10**30] * 192)).encode(), {}), 400, "not FP32"),
        ((b"", {}), 400, "empty inference request"),
        ((gzip.compress(bytes(5 * MAX_BODY)), {"Content-Encoding": "gzip"}), 413, "decompressed request body"),
        ((b"garbage", {"Content-Encoding": "gzip"}), 400, "corrupt gzip"),
        ((b"{}", {"Content-Encoding": "br"}), 415, "unsupported Content-Encoding"),
    ]
    with http(server.url) as h:
        for (body, headers), status, message in cases:
            response = h.post(f"/v2/models/{FAKE_GRAPH}/infer", content=body, headers=headers)
            assert response.status_code == status, (message, response.text)
            assert message in response.json()["error"], response.text
        unknown = h.post("/v2/models/nope/infer", json=_v2([1, 3, 8, 8]))
        assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["error"]
        assert h.get("/v2/models/nope").status_code == 404
        assert h.get("/v2/models/nope/ready").status_code == 404
        assert h.get("/no/such/route").json() == {"error": "Not Found"}
        # a body over the limit: refused from Content-Length, and when streamed without one
        big = h.post(f"/v2/models/{FAKE_GRAPH}/infer", content=bytes(MAX_BODY + 1))
        assert big.status_code == 413 and "over the" in big.json()["error"]
        chunked = h.post(f"/v2/models/{FAKE_GRAPH}/infer", content=iter([bytes(MAX_BODY // 2)] * 3))
        assert chunked.status_code == 413
    # still serving
    x = RNG.random((1, 3, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(infer(server, x, True).as_numpy("score"), expected_outputs(x)[1], atol=1e-6)


def test_tritonclient_sees_error_messages(server):
    tensor = triton.InferInput("image", [1, 3, 4, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(InferenceServerException) as err:
        client(server).infer(FAKE_GRAPH, [tensor])
    assert err.value.status() == "400" and "dimension 2 must be 8" in err.value.message()


def test_non_finite_inputs_are_400s(server):
    """NaN/Inf tensor data, in JSON (bare NaN/Infinity tokens) or binary, is refused naming the input."""
    with http(server.url) as h:
        for bad in ("NaN", "Infinity", "-Infinity", "1e39"):  # 1e39 overflows FP32 to inf
            body = '{"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [' + bad + ", 0.0" * 191 + "]}]}"
            response = h.post(f"/v2/models/{FAKE_GRAPH}/infer", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, (bad, response.text)
            assert "input 'image' holds 1 non-finite value(s)" in response.json()["error"] and "flat index 0" in response.json()["error"]
        blob = np.zeros((1, 3, 8, 8), "<f4")
        blob[0, 1, 2, 3] = np.nan
        head = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": blob.nbytes}}]}).encode()
        response = h.post(f"/v2/models/{FAKE_GRAPH}/infer", content=head + blob.tobytes(), headers={"Inference-Header-Content-Length": str(len(head))})
        assert response.status_code == 400 and "flat index 83" in response.json()["error"], response.text


def test_non_finite_outputs_are_valid_json(server):
    """An output that overflows (3e38 channels -> an Inf map) comes back as strict JSON: null
    for each non-finite value, counted in the output's parameters; binary keeps the values."""
    x = np.full((1, 3, 8, 8), 3e38, np.float32)
    x[0, :, 0, 0] = 1.0
    with http(server.url) as h:
        response = h.post(f"/v2/models/{FAKE_GRAPH}/infer", json={"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert response.status_code == 200, response.text[:300]
    document = json.loads(response.text, parse_constant=lambda token: pytest.fail(f"bare {token} in the response"))
    outputs = {o["name"]: o for o in document["outputs"]}
    assert outputs["anomaly_map"]["parameters"] == {"non_finite_count": 63} and outputs["score"]["parameters"] == {"non_finite_count": 1}
    assert outputs["anomaly_map"]["data"][0] == pytest.approx(2.0) and outputs["anomaly_map"]["data"][1] is None
    via_json = infer(server, x, binary=False).as_numpy("anomaly_map")  # tritonclient reads null as NaN
    assert np.isnan(via_json).sum() == 63 and via_json[0, 0, 0, 0] == pytest.approx(2.0)
    assert np.isposinf(infer(server, x, binary=True).as_numpy("anomaly_map")).sum() == 63


def test_result_json_has_no_bare_nan():
    from zoo.results import AnomalyResult
    from zoo.serving.oip import json_safe
    from zoo.serving.oip_pipeline import result_tensors

    class Card:
        name, result_type = "x", "AnomalyResult"

    _, (result,) = result_tensors(Card(), AnomalyResult(float("nan"), np.full((2, 2), np.inf, np.float32)))
    document = json.loads(result[0], parse_constant=lambda token: pytest.fail(f"bare {token}"))
    assert document["score"] is None and document["map_max"] is None
    assert json_safe({"a": [1.0, float("-inf"), {"b": (float("nan"), 2)}], "c": "NaN"}) == {"a": [1.0, None, {"b": [None, 2]}], "c": "NaN"}


def test_pipeline_model_include_parameter(server):
    """The pipeline model takes REST's `include` as a request parameter."""
    from zoo.results import decode_png16

    image = RNG.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    tensor = {"name": "image", "shape": [12, 16, 3], "datatype": "UINT8", "data": image.ravel().tolist()}
    with http(server.url) as h:
        plain = h.post(f"/v2/models/{FAKE}/infer", json={"inputs": [tensor]})
        mapped = h.post(f"/v2/models/{FAKE}/infer", json={"inputs": [tensor], "parameters": {"include": "map"}})
        wrong = h.post(f"/v2/models/{FAKE}/infer", json={"inputs": [tensor], "parameters": {"include": "masks"}})
    assert plain.status_code == mapped.status_code == 200, mapped.text
    assert "map" not in json.loads(plain.json()["outputs"][0]["data"][0])
    document = json.loads(mapped.json()["outputs"][0]["data"][0])
    # the fake's map: 2 x channel mean at 8x8, resized (nearest) to the input
    assert document["map"]["shape"] == [12, 16] and decode_png16(document["map"]).max() == pytest.approx(document["map_max"], abs=1e-4)
    assert wrong.status_code == 400 and "it offers: map" in wrong.json()["error"]
    with http(server.url) as h:
        assert h.get(f"/v2/models/{FAKE}/config").json()["parameters"]["zoo_include"] == {"string_value": "map"}
