"""PVD pipeline: image + expression -> Grounding; clear errors for bad expressions; seeds; steps."""

import numpy as np
import pytest

from zoo import registry
from zoo.results import Grounding


@pytest.fixture(scope="module")
def pvd():
    return registry.create_model("pvd", "micro", weights="random")


def _image():
    return np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)


def test_predicts_a_grounding_with_box_polygon_and_rle_mask(pvd):
    result = pvd.predict({"image": _image(), "expression": "the small red triangle left of the blue circle"})
    assert isinstance(result, Grounding)
    x0, y0, x1, y1 = result.box
    assert 0 <= x0 <= x1 <= 56 and 0 <= y0 <= y1 <= 40
    assert result.polygon.shape == (pvd.config.polygon_vertices, 2)
    assert result.mask.shape == (40, 56) and result.mask.dtype == bool
    doc = result.to_json()
    assert doc["type"] == "grounding" and doc["mask"]["size"] == [40, 56] and isinstance(doc["mask"]["counts"], str)
    assert 0 < doc["score"] <= 1
    drawn = np.asarray(result.draw(_image(), scale=2))
    assert drawn.shape == (80, 112, 3)


@pytest.mark.parametrize("expression, message", [
    ("", "'expression'"), ("   ", "'expression' is empty"), ("x" * 201, "'expression'"),
    ("the red circle " * 8, "too long"), (b"\xff\xfe", "UTF-8"), (None, "'expression'"),
])
def test_bad_expressions_are_clear_value_errors(pvd, expression, message):
    with pytest.raises(ValueError, match=message):
        pvd.predict({"image": _image(), "expression": expression})


def test_seed_and_steps(pvd):
    item = {"image": _image(), "expression": "the big square"}
    a, b = pvd.predict(item, seed=3), pvd.predict(item, seed=3)
    np.testing.assert_array_equal(a.polygon, b.polygon)
    assert not np.allclose(pvd.predict(item, seed=4).polygon, a.polygon)
    assert not np.allclose(pvd.predict(item, steps=1).polygon, pvd.predict(item, steps=8).polygon)
    with pytest.raises(ValueError, match="steps"):
        pvd.predict(item, steps=-1)


def test_rest_answers_400_naming_the_expression():
    import io
    import time

    from fastapi.testclient import TestClient
    from PIL import Image

    from zoo.serving import create_app

    buf = io.BytesIO()
    Image.fromarray(_image()).save(buf, format="PNG")

    def post(client, text):
        return client.post("/models/pvd/predict", files={"image": ("a.png", buf.getvalue(), "image/png")}, data={"expression": text})

    with TestClient(create_app(["pvd:micro"])) as client:
        for _ in range(240):  # the model loads on its first request
            response = post(client, "the red circle")
            if response.status_code != 503:
                break
            time.sleep(0.25)
        assert response.status_code == 200 and response.json()["result"]["type"] == "grounding"
        for text, message in (("   ", "'expression' is empty"), ("the red circle " * 8, "too long"), ("", "'expression'")):
            response = post(client, text)
            assert response.status_code == 400 and message in response.json()["error"], response.text
