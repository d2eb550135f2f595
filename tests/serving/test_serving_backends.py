"""`--backend onnxruntime`: the server runs the exported graphs through the export layer's
runtime (batched like the torch ones), and a model without a usable export fails alone."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from serving_support import BROKEN, FAKE, FAKE_GRAPH, expected_outputs, http, live, png_bytes

from zoo.registry import create_model
from zoo.serving import create_app

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def export_root(fakes, tmp_path_factory):
    """DIR/NAME/ as `zoo export NAME --out DIR/NAME` writes it."""
    from zoo.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("exports")
    export_onnx(create_model(FAKE, weights="random"), root / FAKE, exporter="torchscript")
    return root


def test_onnxruntime_backend_serves_exported_graphs(export_root):
    from zoo.export.runtime import OnnxRuntimeRunner

    app = create_app([FAKE, BROKEN], backend="onnxruntime", export_dir=export_root, random_weights=True)
    x = np.random.default_rng(2).random((2, 3, 8, 8), dtype=np.float32)
    with live(app) as server:
        endpoint = app.state.manager.endpoints[FAKE_GRAPH]
        assert isinstance(endpoint.direct, OnnxRuntimeRunner)  # the batcher calls the ONNX Runtime session
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        assert client.get_model_metadata(FAKE_GRAPH)["platform"] == "onnxruntime_onnx"
        tensor = triton.InferInput("image", [2, 3, 8, 8], "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(FAKE_GRAPH, [tensor])
        np.testing.assert_allclose(result.as_numpy("anomaly_map"), expected_outputs(x)[0], atol=1e-5)
        pooled = np.random.default_rng(3).random((1, 3, 5, 7), dtype=np.float32)
        tensor = triton.InferInput("image", [1, 3, 5, 7], "FP32")
        tensor.set_data_from_numpy(pooled)
        np.testing.assert_allclose(client.infer("pool", [tensor]).as_numpy("pooled"), pooled.mean(axis=(2, 3)), atol=1e-5)
        with http(server.url) as h:
            image = np.random.default_rng(4).integers(0, 255, (12, 9, 3), dtype=np.uint8)
            document = h.post(f"/models/{FAKE}/predict", content=png_bytes(image)).json()
        assert document["backend"] == "onnxruntime"
        from PIL import Image

        assert document["result"]["score"] == pytest.approx(create_model(FAKE, weights="random").predict(Image.fromarray(image)).score, abs=1e-5)
        assert not client.is_model_ready(BROKEN)


def test_model_without_export_fails_alone(export_root, tmp_path):
    app = create_app([FAKE], backend="onnxruntime", export_dir=tmp_path, random_weights=True)  # no export.json there
    with live(app) as server, http(server.url) as h:
        ready = h.get(f"/v2/models/{FAKE}/ready")
        assert ready.status_code == 400 and "export.json" in ready.json()["error"]
        assert h.get("/v2/health/ready").status_code == 400  # nothing serves
        assert h.get("/v2/health/live").status_code == 200
