"""Generative models load on their first request when a server serves several models (issue #12):
start-up does not pay for them, the first request answers 503 with Retry-After while the model
loads in a thread (the event loop keeps serving the others), then it serves."""

from __future__ import annotations

import time

from serving_support import http, live
from typed_toys import GENERATOR

from zoo.serving import create_app


def test_generator_loads_on_first_request(typed_toys):
    app = create_app([GENERATOR, "efficientad"], random_weights=True)
    with live(app) as server, http(server.url) as client:
        assert client.get("/v2/health/ready").status_code == 200  # efficientad serves; the generator waits
        first = client.get(f"/v2/models/{GENERATOR}/ready")
        assert first.status_code == 400 and "first request" in first.json()["error"]
        statuses = []
        deadline = time.time() + 60
        while time.time() < deadline:
            response = client.post(f"/models/{GENERATOR}/predict", json={"seed": 3})
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
            assert response.status_code == 503 and response.headers.get("retry-after") == "1"
            time.sleep(0.2)
        assert statuses[-1] == 200 and set(statuses[:-1]) <= {503}  # a fast load may beat the first check
        assert response.json()["result"]["seeds"] == [3]
        assert client.get(f"/v2/models/{GENERATOR}/ready").status_code == 200


def test_one_model_loads_at_start(typed_toys):
    app = create_app([GENERATOR], random_weights=True)
    with live(app) as server, http(server.url) as client:
        assert client.get(f"/v2/models/{GENERATOR}/ready").status_code == 200
        assert client.post(f"/models/{GENERATOR}/predict", json={"seed": 1}).status_code == 200
