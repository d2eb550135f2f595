import numpy as np
import pytest

from zoo.results import AnomalyResult, Boxes3D, Detections, Grounding, ImageResult, Segmentation


def test_anomaly_result_threshold_and_draw():
    heat = np.zeros((10, 12), np.float32)
    heat[2:5, 3:7] = 2.0
    result = AnomalyResult(score=2.0, map=heat, threshold=1.0)
    document = result.to_json()
    assert document["is_anomalous"] is True
    assert document["anomalous_fraction"] == pytest.approx(12 / 120)
    overlay = np.asarray(result.draw(np.zeros((20, 24, 3), np.uint8)))
    assert overlay.shape == (10, 12, 3)
    assert overlay[3, 4].tolist() != overlay[8, 10].tolist()
    assert AnomalyResult(0.1, heat).to_json().get("is_anomalous") is None


def test_detections_validate_and_draw():
    det = Detections(boxes=[[1, 1, 5, 5]], scores=[0.9], labels=[2], class_names=["a", "b", "c"])
    assert det.to_json()["detections"][0]["name"] == "c"
    assert det.draw(np.zeros((8, 8, 3), np.uint8)).size == (8, 8)
    with pytest.raises(ValueError, match="same length"):
        Detections(boxes=[[0, 0, 1, 1]], scores=[0.1, 0.2], labels=[0])


def test_other_results_serialise_and_draw():
    image = np.zeros((6, 6, 3), np.uint8)
    assert ImageResult([image]).draw(image).size == (12, 6)
    seg = Segmentation("panoptic", np.ones((6, 6)), [{"id": 1, "label": 0}])
    assert seg.to_json()["kind"] == "panoptic" and seg.draw(image).size == (6, 6)
    with pytest.raises(ValueError, match="kind"):
        Segmentation("stuff", np.ones((2, 2)))
    assert Grounding([0, 0, 3, 3], polygon=np.array([[0, 0], [3, 0], [3, 3]])).to_json()["polygon"][1] == [3.0, 0.0]
    boxes = Boxes3D(np.zeros((1, 7)), [0.5], [0], bev=np.ones((4, 4)))
    assert boxes.to_json()["boxes"][0]["yaw"] == 0.0 and boxes.draw(image).size == (12, 6)
