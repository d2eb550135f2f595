"""REST JSON carries the results, not only pictures (issue #19), on the shipped micro models and
their bundled examples: EfficientAD's anomaly map (include=map, a 16-bit PNG), OneFormer's
segments with class names and areas (masks as COCO RLE with include=masks), ViDT+'s
instance masks as COCO RLE (include=masks). Each is checked against the in-process result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serving_support import http, live

from zoo.registry import create_model, get_card
from zoo.serving import BatchingConfig, create_app

MODELS = ("efficientad", "oneformer", "vidt-plus")


@pytest.fixture(scope="module")
def result_server():
    app = create_app([f"{name}:micro" for name in MODELS], batching=BatchingConfig(max_batch_size=2, max_queue_delay_s=0.01))
    with live(app) as server:
        yield server


def _example(name: str, index: int = 0) -> bytes:
    return Path(get_card(name).examples[index]).read_bytes()


def _predict(server, name: str, data: bytes, **fields) -> dict:
    with http(server.url) as h:
        response = h.post(f"/models/{name}/predict", files={"image": ("x.png", data, "image/png")}, data=fields)
    assert response.status_code == 200, response.text[:500]
    return response.json()["result"]


def _decode_rle(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_anomaly_map(result_server):
    from zoo.results import decode_png16

    data = _example("efficientad", 3)  # scratch.png
    want = create_model("efficientad", variant="micro").predict(Image.open(Path(get_card("efficientad").examples[3])))
    default = _predict(result_server, "efficientad", data)
    assert "map" not in default and default["map_shape"] == list(want.map.shape)
    encoded = _predict(result_server, "efficientad", data, include="map")["map"]
    step = (want.map.max() - want.map.min()) / 65535
    np.testing.assert_allclose(decode_png16(encoded), want.map, rtol=0, atol=step + 1e-5)


def test_segments_with_names_and_rle_masks(result_server):
    data = _example("oneformer")
    want = create_model("oneformer", variant="micro").predict(Image.open(Path(get_card("oneformer").examples[0])))
    assert want.segments, "the micro model finds no segment in its own example"
    default = _predict(result_server, "oneformer", data)
    names = want.class_names
    assert [(s["id"], s["name"], s["area"]) for s in default["segments"]] == [
        (s["id"], names[s["label"]], int((want.segment_map == s["id"]).sum())) for s in want.segments]
    assert all("mask" not in s for s in default["segments"])
    for segment in _predict(result_server, "oneformer", data, include="masks")["segments"]:
        np.testing.assert_array_equal(_decode_rle(segment["mask"]), want.segment_map == segment["id"])


def test_vidt_plus_masks_as_coco_rle(result_server):
    data = _example("vidt-plus")
    want = create_model("vidt-plus", variant="micro").predict(Image.open(Path(get_card("vidt-plus").examples[0])))
    assert want.masks is not None and len(want.masks), "the micro model finds nothing in its own example"
    rows = _predict(result_server, "vidt-plus", data, include="masks")["detections"]
    assert len(rows) == len(want.masks)
    for row, mask in zip(rows, want.masks):
        assert row["mask"]["size"] == list(mask.shape)
        np.testing.assert_array_equal(_decode_rle(row["mask"]), mask)
    assert all("mask" not in row for row in _predict(result_server, "vidt-plus", data)["detections"])
