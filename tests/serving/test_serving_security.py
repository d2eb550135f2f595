"""Binding and API keys: loopback by default, a key required elsewhere, and checked when set."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from serving_support import FAKE, FAKE_GRAPH, http, live
from tritonclient.utils import InferenceServerException

from zoo.serving import create_app
from zoo.serving.limits import check_bind, is_loopback, resolve_api_key

KEY = "s3cret-key"


def test_loopback_detection_and_bind_rule(monkeypatch):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.2.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    check_bind("127.0.0.1", None)
    with pytest.raises(ValueError, match="API key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", KEY)
    monkeypatch.setenv("ZOO_API_KEY", "from-env")
    assert resolve_api_key(None) == "from-env" and resolve_api_key("flag") == "flag"
    monkeypatch.setenv("ZOO_API_KEY", "")
    assert resolve_api_key(None) is None


def test_binding_elsewhere_needs_a_key(fakes, monkeypatch):
    monkeypatch.delenv("ZOO_API_KEY", raising=False)
    with pytest.raises(ValueError, match="0.0.0.0"):
        create_app([FAKE], host="0.0.0.0")
    monkeypatch.setenv("ZOO_API_KEY", KEY)
    create_app([FAKE], host="0.0.0.0")  # the environment variable is enough


def test_key_is_required_when_set(fakes, monkeypatch):
    monkeypatch.delenv("ZOO_API_KEY", raising=False)
    app = create_app([FAKE], host="0.0.0.0", api_key=KEY, random_weights=True)
    with live(app) as server, http(server.url) as h:
        assert h.get("/v2/health/ready").status_code == 200  # probes stay open
        assert h.get("/docs").status_code == 200
        denied = h.get(f"/v2/models/{FAKE}")
        assert denied.status_code == 401 and "API key" in denied.json()["error"] and denied.headers["www-authenticate"] == "Bearer"
        assert h.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert h.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert h.get(f"/v2/models/{FAKE}", headers={"X-API-Key": KEY}).status_code == 200
        assert h.post("/models/nope/predict", content=b"x").status_code == 401  # checked before anything else
        schema = h.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        tensor = triton.InferInput("image", [1, 3, 8, 8], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
        with pytest.raises(InferenceServerException) as err:
            client.infer(FAKE, [tensor])
        assert err.value.status() == "401"
        result = client.infer(FAKE_GRAPH, [tensor], headers={"Authorization": f"Bearer {KEY}"})
        assert result.as_numpy("score").tolist() == [0.0]
