"""Registry-driven: every registered model's micro variant, served. A family that lands later
is covered without editing this file: its graphs answer tritonclient exactly as they answer
in-process, batched or not, and its REST route returns its result type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from serving_support import http, live, png_bytes, real_model_names

from zoo.serving import BatchingConfig, create_app
from zoo.serving.oip import triton_dtype

NAMES = real_model_names()


@pytest.mark.parametrize("name", NAMES)
def test_model_serves(name):
    app = create_app([f"{name}:micro"], batching=BatchingConfig(max_batch_size=4, max_queue_delay_s=0.1))
    with live(app) as server:
        manager = app.state.manager
        entry = manager.entries[name]
        assert entry.status == "ready", entry.error
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        assert client.is_model_ready(name)
        for v2 in entry.graphs:
            endpoint = manager.endpoints[v2]
            spec = endpoint.spec
            meta = client.get_model_metadata(v2)
            assert [i["name"] for i in meta["inputs"]] == [t.name for t in spec.inputs]
            assert [o["datatype"] for o in meta["outputs"]] == [triton_dtype(t.dtype) for t in spec.outputs]
            # graph outputs over HTTP (binary) equal the direct call on the same inputs
            batch = {endpoint.batch_dim: 2} if endpoint.batch_dim else {}
            inputs = spec.example_inputs(batch, seed=1)
            want = endpoint.direct(*inputs)
            tensors = []
            for t, x in zip(spec.inputs, inputs):
                tensor = triton.InferInput(t.name, list(x.shape), triton_dtype(t.dtype))
                tensor.set_data_from_numpy(x.numpy())
                tensors.append(tensor)
            result = client.infer(v2, tensors)
            for t, w in zip(spec.outputs, want):
                np.testing.assert_allclose(result.as_numpy(t.name), w.cpu().numpy(), rtol=1e-4, atol=1e-5, err_msg=f"{v2}:{t.name}")
            if endpoint.batch_dim:
                _check_batching_equivalence(server.url.removeprefix("http://"), v2, spec, inputs, want)
        _check_rest(server, entry.card)
        _check_pipeline_v2(client, entry.card)


def _check_batching_equivalence(url, v2, spec, inputs, want):
    """The two rows sent as two concurrent requests (tritonclient's async_infer; the server
    batches them together) come back equal to the rows of the direct call."""
    client = triton.InferenceServerClient(url, concurrency=2)
    pending = []
    for row in range(2):
        tensors = []
        for t, x in zip(spec.inputs, inputs):
            tensor = triton.InferInput(t.name, [1, *x.shape[1:]], triton_dtype(t.dtype))
            tensor.set_data_from_numpy(x[row:row + 1].numpy())
            tensors.append(tensor)
        pending.append(client.async_infer(v2, tensors))
    for row, request in enumerate(pending):
        result = request.get_result()
        for t, w in zip(spec.outputs, want):
            np.testing.assert_allclose(result.as_numpy(t.name)[0], w[row].cpu().numpy(), rtol=1e-4, atol=1e-5, err_msg=f"{v2}:{t.name} row {row}")


def _check_rest(server, card):
    from zoo.results import RESULT_TYPES

    rng = np.random.default_rng(0)
    files = {i.name: (f"{i.name}.png", png_bytes(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)), "image/png") for i in card.image_inputs}
    data = {i.name: "HELLO" for i in card.inputs if i.kind == "text"}
    with http(server.url) as h:
        response = h.post(f"/models/{card.name}/predict", files=files or None, data={**data, "overlay": "true"})
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["overlay_png_base64"]
    expected_type = RESULT_TYPES[card.result_type](**_empty_fields(card.result_type)).to_json()["type"]
    assert document["result"]["type"] == expected_type


def _check_pipeline_v2(client, card):
    """The pipeline-level v2 model (the model's own name): the card's typed inputs in, the
    result's JSON (and its images) out, through tritonclient."""
    import json

    meta = client.get_model_metadata(card.name)
    assert [i["name"] for i in meta["inputs"]] == [f.name for f in (*card.inputs, *card.options)]
    rng = np.random.default_rng(1)
    examples = {
        "image": ("UINT8", lambda: rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)),
        "mask": ("UINT8", lambda: (rng.random((48, 40)) > 0.5).astype(np.uint8) * 255),
        "text": ("BYTES", lambda: np.array([b"HELLO"], dtype=np.object_)),
        "boxes": ("FP32", lambda: np.array([[2, 2, 20, 30]], np.float32)),
        "polygons": ("BYTES", lambda: np.array([b"[[[2, 2], [20, 2], [20, 30]]]"], dtype=np.object_)),
    }
    tensors = []
    for spec in card.inputs:
        if spec.required:
            datatype, make = examples[spec.kind]
            value = make()
            tensor = triton.InferInput(spec.name, list(value.shape), datatype)
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
    result = client.infer(card.name, tensors)
    document = json.loads(result.as_numpy("result")[0])
    from zoo.results import RESULT_TYPES

    assert document["type"] == RESULT_TYPES[card.result_type](**_empty_fields(card.result_type)).to_json()["type"]
    if any(o["name"] == "images" for o in meta["outputs"]):
        images = result.as_numpy("images")
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[0] >= 1


def _empty_fields(result_type: str) -> dict:
    """Smallest valid instance of each result type, to read its JSON "type" tag."""
    empty = {
        "AnomalyResult": {"score": 0.0, "map": np.zeros((1, 1))},
        "ImageResult": {"images": [np.zeros((1, 1, 3), np.uint8)]},
        "Generation": {"images": [np.zeros((1, 1, 3), np.uint8)]},
        "Detections": {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)},
        "Segmentation": {"kind": "semantic", "segment_map": np.zeros((1, 1))},
        "Grounding": {"box": np.zeros(4)},
        "Boxes3D": {"boxes": np.zeros((0, 7)), "scores": np.zeros(0), "labels": np.zeros(0)},
    }
    return empty[result_type]


def test_registry_has_models():
    assert NAMES, "no model registered: the registry-driven serving tests cover nothing"
    assert torch.get_num_threads() >= 1
