"""v2 graph requests the graphs cannot take are 400s that name the field (issue #19): sizes
that are not a multiple of what the graph needs (DocDiff's U-Net), integer inputs outside the
table they index (DocDiff's timestep, OneFormer's task tokens), NaN/Inf data. The constraints
are declared in the graphs' specs and published in the v2 metadata and config."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serving_support import http, live

from zoo.serving import BatchingConfig, create_app


@pytest.fixture(scope="module")
def real_server():
    """docdiff and oneformer micro with their bundled weights, as `zoo serve` serves them."""
    app = create_app(["docdiff:micro", "oneformer:micro"], batching=BatchingConfig(max_batch_size=4, max_queue_delay_s=0.01))
    with live(app) as server:
        yield server


def _tensor(name, array, datatype):
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()}


def _post(server, model, *inputs):
    with http(server.url) as h:
        return h.post(f"/v2/models/{model}/infer", json={"inputs": list(inputs)})


def _refine(server, timestep, prev, size=(32, 32)):
    image = np.zeros((1, 3, *size), np.float32)
    return _post(server, "refine_step", _tensor("noisy", image, "FP32"), _tensor("coarse", image, "FP32"),
                 _tensor("timestep", np.array([timestep]), "INT64"), _tensor("prev_timestep", np.array([prev]), "INT64"))


def test_sizes_must_be_multiples(real_server):
    ok = _post(real_server, "coarse", _tensor("image", np.zeros((1, 3, 32, 40), np.float32), "FP32"))
    assert ok.status_code == 200, ok.text
    for shape, axis, dim in (((1, 3, 36, 32), 2, "height"), ((1, 3, 32, 44), 3, "width")):
        response = _post(real_server, "coarse", _tensor("image", np.zeros(shape, np.float32), "FP32"))
        assert response.status_code == 400, response.text
        assert f"input 'image' dimension {axis} ({dim}) is {shape[axis]}, must be a multiple of 8" in response.json()["error"]
    assert _refine(real_server, 3, 2, size=(32, 36)).status_code == 400


def test_timesteps_must_index_the_schedule(real_server):
    assert _refine(real_server, 99, -1).status_code == 200
    for timestep, prev, field, value, allowed in ((5000, 2, "timestep", 5000, "0..99"), (-1, -1, "timestep", -1, "0..99"),
                                                  (3, 100, "prev_timestep", 100, "-1..99")):
        response = _refine(real_server, timestep, prev)
        assert response.status_code == 400, response.text
        assert f"input {field!r} value {value} (flat index 0) is outside its valid range {allowed}" in response.json()["error"]


def test_task_tokens_must_be_in_the_vocabulary(real_server):
    from zoo.models.oneformer.tokenizer import VOCAB_SIZE, task_tokens

    with http(real_server.url) as h:
        meta = h.get("/v2/models/segment").json()
    side, length = meta["inputs"][0]["shape"][-1], meta["inputs"][1]["shape"][-1]
    tokens = task_tokens(["panoptic"], length).numpy()
    images = np.zeros((1, 3, side, side), np.float32)
    assert _post(real_server, "segment", _tensor("images", images, "FP32"), _tensor("task_tokens", tokens, "INT64")).status_code == 200
    tokens[0, 5] = VOCAB_SIZE
    response = _post(real_server, "segment", _tensor("images", images, "FP32"), _tensor("task_tokens", tokens, "INT64"))
    assert response.status_code == 400, response.text
    assert f"input 'task_tokens' value {VOCAB_SIZE} (flat index 5) is outside its valid range 0..{VOCAB_SIZE - 1}" in response.json()["error"]


def test_non_finite_data_is_refused(real_server):
    image = np.zeros((1, 3, 32, 32), np.float32)
    for bad in (float("nan"), float("inf"), float("-inf")):
        image.reshape(-1)[7] = bad
        body = json.dumps({"inputs": [_tensor("image", image, "FP32")]})  # json.dumps writes bare NaN/Infinity
        with http(real_server.url) as h:
            response = h.post("/v2/models/coarse/infer", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert "input 'image' holds 1 non-finite value(s)" in response.json()["error"] and "flat index 7" in response.json()["error"]


def test_constraints_are_published(real_server):
    with http(real_server.url) as h:
        coarse = h.get("/v2/models/coarse").json()
        refine = h.get("/v2/models/refine_step").json()
        config = h.get("/v2/models/refine_step/config").json()
        segment = h.get("/v2/models/segment").json()
    assert coarse["inputs"][0]["parameters"] == {"multiple_of": [1, 1, 8, 8]}
    assert "parameters" not in coarse["outputs"][0]
    by_name = {t["name"]: t for t in refine["inputs"]}
    assert by_name["timestep"]["parameters"] == {"valid_range": [0, 99]}
    assert by_name["prev_timestep"]["parameters"] == {"valid_range": [-1, 99]}
    assert by_name["noisy"]["parameters"] == {"multiple_of": [1, 1, 8, 8]}
    # the config: dims without the batch, constraints as JSON model parameters
    assert json.loads(config["parameters"]["zoo_multiple_of"]["string_value"]) == {"noisy": [1, 8, 8], "coarse": [1, 8, 8]}
    assert json.loads(config["parameters"]["zoo_valid_range"]["string_value"]) == {"timestep": [0, 99], "prev_timestep": [-1, 99]}
    assert segment["inputs"][1]["parameters"]["valid_range"][1] == 49407
