"""COCO AP through pycocotools: perfect predictions, a hand-computed partial case, generated data."""

import numpy as np
import pytest

from zoo.data.coco import CocoDetection, mask_bbox, mask_to_rle
from zoo.data.shapes import generate_shapes_dataset
from zoo.metrics.coco import coco_ap, detections_to_coco


def _gt():
    masks = np.zeros((2, 120, 120), bool)
    masks[0, 0:100, 0:100] = True  # large (10000 px)
    masks[1, 10:30, 50:70] = True  # small (400 px)
    anns = []
    for i, m in enumerate(masks):
        anns.append({"id": i + 1, "image_id": 1 + i, "category_id": 1 + i, "iscrowd": 0, "area": float(m.sum()),
                     "bbox": mask_bbox(m), "segmentation": mask_to_rle(m)})
    doc = {"images": [{"id": 1, "width": 120, "height": 120, "file_name": "a.png"}, {"id": 2, "width": 120, "height": 120, "file_name": "b.png"}],
           "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    return doc, masks


def test_perfect_predictions_give_ap_one():
    doc, masks = _gt()
    preds = detections_to_coco(1, np.array([[0, 0, 100, 100]]), np.array([0.9]), np.array([1]), masks[:1])
    preds += detections_to_coco(2, np.array([[50, 10, 70, 30]]), np.array([0.8]), np.array([2]), masks[1:])
    for iou_type in ("bbox", "segm"):
        out = coco_ap(preds, doc, iou_type=iou_type)
        assert out["AP"] == pytest.approx(1.0) and out["AP50"] == pytest.approx(1.0) and out["AP75"] == pytest.approx(1.0)
        assert out["APs"] == pytest.approx(1.0) and out["APl"] == pytest.approx(1.0) and out["APm"] == -1.0


def test_partial_overlap_hand_value():
    doc, _ = _gt()
    doc = dict(doc, annotations=doc["annotations"][:1], images=doc["images"][:1], categories=doc["categories"][:1])
    # box 100 x 63 inside the 100 x 100 ground truth: IoU 0.63, a match at thresholds 0.50, 0.55, 0.60 of ten
    preds = [{"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 100.0, 63.0], "score": 0.9}]
    out = coco_ap(preds, doc)
    assert out["AP"] == pytest.approx(0.3) and out["AP50"] == pytest.approx(1.0) and out["AP75"] == pytest.approx(0.0)
    # a false positive ranked above the true one halves precision at full recall
    preds.append({"image_id": 1, "category_id": 1, "bbox": [110.0, 110.0, 5.0, 5.0], "score": 0.95})
    assert coco_ap(preds, doc)["AP50"] == pytest.approx(0.5, abs=0.01)
    assert coco_ap([], doc)["AP"] == 0.0
    with pytest.raises(ValueError):
        coco_ap(preds, doc, iou_type="keypoints")


def test_ground_truth_of_generated_shapes_scores_one(tmp_path):
    paths = generate_shapes_dataset(tmp_path, {"val": 3}, seed=1, image_size=64)
    ds = CocoDetection(tmp_path / "images", paths["instances_val"])
    preds = []
    for i in range(len(ds)):
        item = ds[i]
        preds += detections_to_coco(item["image_id"], item["boxes"].numpy(), np.ones(len(item["boxes"])),
                                    item["category_ids"].numpy(), item["masks"].numpy())
    assert coco_ap(preds, paths["instances_val"], "bbox")["AP"] == pytest.approx(1.0)
    assert coco_ap(preds, ds.coco, "segm")["AP"] == pytest.approx(1.0)
