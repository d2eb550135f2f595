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


def test_anomaly_map_on_request_as_png16():
    from zoo.results import decode_png16

    heat = np.random.default_rng(0).normal(size=(10, 12)).astype(np.float32)
    result = AnomalyResult(score=1.5, map=heat)
    assert "map" not in result.to_json()  # small by default
    encoded = result.to_json(include_map=True)["map"]
    assert encoded["encoding"] == "png16" and encoded["shape"] == [10, 12]
    assert encoded["min"] == pytest.approx(heat.min()) and encoded["max"] == pytest.approx(heat.max())
    step = (heat.max() - heat.min()) / 65535
    np.testing.assert_allclose(decode_png16(encoded), heat, rtol=0, atol=step / 2 + 1e-6)
    assert np.asarray(result.to_json(include_map=True, map_format="array")["map"]).shape == (10, 12)
    flat = AnomalyResult(0.0, np.full((3, 4), 0.25, np.float32)).to_json(include_map=True)["map"]  # max == min
    np.testing.assert_array_equal(decode_png16(flat), np.full((3, 4), 0.25, np.float32))
    with pytest.raises(ValueError, match="map_format"):
        result.to_json(include_map=True, map_format="jpeg")


def test_detection_masks_on_request_as_coco_rle():
    from pycocotools import mask as mask_utils

    masks = np.zeros((2, 6, 8), bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4:, :] = True
    det = Detections(boxes=[[2, 1, 5, 3], [0, 4, 8, 6]], scores=[0.9, 0.8], labels=[0, 1], masks=masks, class_names=["a", "b"])
    assert "mask" not in det.to_json()["detections"][0]
    rows = det.to_json(include_masks=True)["detections"]
    for row, mask in zip(rows, masks):
        assert row["mask"]["size"] == [6, 8] and isinstance(row["mask"]["counts"], str)
        decoded = mask_utils.decode({"size": row["mask"]["size"], "counts": row["mask"]["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask)
    assert "mask" not in Detections([[0, 0, 1, 1]], [0.5], [0]).to_json(include_masks=True)["detections"][0]  # no masks made


def test_segments_carry_names_areas_and_rle_masks():
    from pycocotools import mask as mask_utils

    seg_map = np.full((4, 5), -1)
    seg_map[:2] = 7
    seg_map[2:, :2] = 9
    seg = Segmentation("panoptic", seg_map, [{"id": 7, "label": 1, "score": 0.9, "is_thing": True}, {"id": 9, "label": 0, "score": 0.8, "is_thing": False}],
                       class_names=["sky", "car"])
    document = seg.to_json()
    assert [(s["name"], s["area"]) for s in document["segments"]] == [("car", 10), ("sky", 4)]
    assert "mask" not in document["segments"][0] and "segment_map" not in document
    assert "name" not in seg.segments[0]  # the result's own list is left alone
    for segment in seg.to_json(include_masks=True)["segments"]:
        decoded = mask_utils.decode({"size": segment["mask"]["size"], "counts": segment["mask"]["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), seg_map == segment["id"])


def test_include_names_per_result_type():
    from zoo.results import include_kwargs, json_includes

    assert json_includes("AnomalyResult") == ("map",) and json_includes("Detections") == ("masks",)
    assert json_includes("Segmentation") == ("map", "masks") and json_includes("Generation") == ()
    assert include_kwargs("Segmentation", "masks, map") == {"include_masks": True, "include_map": True}
    assert include_kwargs("Segmentation", ["masks"]) == {"include_masks": True} and include_kwargs("Detections", "") == {}
    with pytest.raises(ValueError, match="AnomalyResult has no 'masks' to include; it offers: map"):
        include_kwargs("AnomalyResult", "masks")
    with pytest.raises(ValueError, match="comma-separated"):
        include_kwargs("AnomalyResult", 3)
