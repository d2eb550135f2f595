"""Registry-driven: every registered model's micro variant, served. A family that lands later
is covered without editing this file: its graphs answer tritonclient exactly as they answer
in-process, batched or not, and its REST route returns its result type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from serving_support import http, live, png_bytes, real_model_names

from serving import BatchingConfig, create_app
from serving.oip import triton_dtype
from serving.rest import input_kind

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
    files = {n: (f"{n}.png", png_bytes(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)), "image/png") for n in card.inputs if input_kind(n) == "image"}
    data = {n: "HELLO" for n in card.inputs if input_kind(n) == "text"}
    with http(server.url) as h:
        response = h.post(f"/models/{card.name}/predict", files=files or None, data={**data, "overlay": "true"})
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["overlay_png_base64"]
    expected_type = RESULT_TYPES[card.result_type](**_empty_fields(card.result_type)).to_json()["type"]
    assert document["result"]["type"] == expected_type


def _empty_fields(result_type: str) -> dict:
    """Smallest valid instance of each result type, to read its JSON "type" tag."""
    empty = {
        "AnomalyResult": {"score": 0.0, "map": np.zeros((1, 1))},
        "ImageResult": {"images": [np.zeros((1, 1, 3), np.uint8)]},
        "Detections": {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)},
        "Segmentation": {"kind": "semantic", "segment_map": np.zeros((1, 1))},
        "Grounding": {"box": np.zeros(4)},
        "Boxes3D": {"boxes": np.zeros((0, 7)), "scores": np.zeros(0), "labels": np.zeros(0)},
    }
    return empty[result_type]


def test_registry_has_models():
    assert NAMES, "no model registered: the registry-driven serving tests cover nothing"
    assert torch.get_num_threads() >= 1
