"""SeaBird predictor: Boxes3D out, the camera option, KITTI text export, drawing image + BEV side by side."""

from __future__ import annotations

import numpy as np
import pytest

from zoo import registry
from zoo.data.kitti import parse_labels
from zoo.models.seabird.pipeline import parse_calib_option
from zoo.results import Boxes3D


def test_calib_option():
    assert parse_calib_option("") is None
    assert parse_calib_option("100,110,50,20") == (100.0, 110.0, 50.0, 20.0)
    assert parse_calib_option("P2: 7 0 6 0 0 8 2 0 0 0 1 0") == (7.0, 8.0, 6.0, 2.0)
    with pytest.raises(ValueError, match="12 numbers"):
        parse_calib_option("1 2 3")


def test_predict_returns_boxes3d_with_camera():
    model = registry.create_model("seabird", "micro", weights="random")
    image = np.random.default_rng(0).integers(0, 255, (96, 320, 3), dtype=np.uint8)
    out = model.predict(image, score_threshold=0.0, max_detections=5, calib="128,128,160,48")
    assert isinstance(out, Boxes3D) and out.boxes.shape[1] == 7 and len(out.boxes) <= 5
    assert out.bev.shape == (2, 32, 32) and out.calib[0, 0] == 128 and out.bev_extent == (-16.0, 16.0, 0.0, 32.0)


def test_boxes3d_kitti_text_json_and_drawing():
    p2 = np.array([[128, 0, 160, 0], [0, 128, 48, 0], [0, 0, 1, 0]], float)
    result = Boxes3D([[2.0, 1.55, 12.0, 4.0, 1.8, 1.5, 0.3]], [0.9], [1], bev=np.zeros((2, 32, 32)), class_names=["Large", "Car"],
                     calib=p2, bev_extent=(-16.0, 16.0, 0.0, 32.0))
    (obj,) = parse_labels(result.to_kitti())
    assert obj.type == "Car" and obj.location == (2.0, 1.55, 12.0) and obj.dimensions == (1.5, 1.8, 4.0) and obj.score == 0.9
    x1, y1, x2, y2 = obj.bbox
    assert 140 < x1 < x2 < 320 and 48 < y1 < 50 < y2 < 96  # the roof (y = 0.05 m) sits just under the horizon
    doc = result.to_json(include_bev=True)
    assert doc["boxes"][0]["center"][1] == round(1.55 - 0.75, 3) and doc["kitti"] == result.to_kitti() and len(doc["bev"]) == 2
    image = np.full((96, 320, 3), 80, np.uint8)
    drawn = np.asarray(result.draw(image))
    assert drawn.shape == (96, 320 + 96, 3)
    assert (drawn[:, :320] != 80).any()  # the projected box is drawn into the image
    assert (drawn[:, 320:] > 200).any()  # its footprint in the BEV panel
