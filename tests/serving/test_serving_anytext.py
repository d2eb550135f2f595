"""AnyText's bad requests are 400s that say what is wrong, through REST and the pipeline-level v2 model;
a good one answers with the Generation (two DDIM steps, random micro weights)."""

from __future__ import annotations

import pytest
from serving_support import http, live

from zoo.registry import create_model
from zoo.serving import BatchingConfig, create_app

BAD = [
    ({"prompt": 'a sign that reads "ABCDEFGHIJK"'}, "at most 8"),
    ({"prompt": '"A" "B" "C"'}, "at most 2"),
    ({"prompt": 'a "OK" sign', "boxes": "[[0, 0, 100, 20]]"}, "outside the 64x64 image"),
    ({"prompt": 'a "\U0001F9FF" sign'}, "no installed font has the glyphs"),
    ({"prompt": 'a "OK" sign', "boxes": "[[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]"},
     "a number of items"),
]


@pytest.fixture(scope="module")
def server():
    app = create_app({"anytext": create_model("anytext", "micro", weights="random")}, batching=BatchingConfig(max_batch_size=2))
    with live(app) as running:
        yield running


@pytest.mark.parametrize("body,message", BAD)
def test_rest_bad_requests_are_400(server, body, message):
    with http(server.url) as h:
        response = h.post("/models/anytext/predict", data=body)
    assert response.status_code == 400, response.text
    assert message in response.text


def test_v2_bad_request_is_400(server):
    body = {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ['a "ABCDEFGHIJK" sign']}]}
    with http(server.url) as h:
        response = h.post("/v2/models/anytext/infer", json=body)
    assert response.status_code == 400 and "at most 8" in response.text


def test_rest_good_request(server):
    with http(server.url) as h:
        response = h.post("/models/anytext/predict", data={"prompt": 'a sign that reads "OPEN"', "boxes": "[[4, 20, 60, 44]]",
                                                           "steps": "2"})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["info"]["lines"] == ["OPEN"]
