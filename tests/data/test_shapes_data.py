"""Shapes scenes: determinism, scene invariants, unique expressions, and real-format round trips."""

import json

import numpy as np
import pytest
import torch

from zoo.data.coco import CocoDetection, CocoPanoptic, collate_detection, id2rgb, mask_to_polygons, rgb2id
from zoo.data.refcoco import RefCocoDataset
from zoo.data.shapes import STUFF_CLASSES, THING_CLASSES, RefSpec, generate_scene, generate_shapes_dataset, resolve_spec


def test_scene_is_deterministic_by_seed_and_index():
    a, b = generate_scene(0, 3, image_size=64), generate_scene(0, 3, image_size=64)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.panoptic, b.panoptic) and a.expressions() == b.expressions()
    assert not np.array_equal(a.image, generate_scene(0, 4, image_size=64).image)
    assert not np.array_equal(a.image, generate_scene(1, 3, image_size=64).image)


@pytest.mark.parametrize("index", range(6))
def test_scene_invariants(index):
    scene = generate_scene(7, index, image_size=96)
    assert scene.image.shape == (96, 96, 3) and scene.image.dtype == np.uint8
    assert 2 <= len(scene.objects) <= 6
    assert (scene.panoptic > 0).all()  # every pixel is stuff or a thing
    ids = [s["id"] for s in scene.segments_info]
    assert len(set(ids)) == len(ids) and set(np.unique(scene.panoptic)) == set(ids)
    things = [s for s in scene.segments_info if s["isthing"]]
    assert len(things) == len(scene.objects)
    union = np.zeros((96, 96), int)
    for obj, seg in zip(scene.objects, things):
        assert np.array_equal(scene.panoptic == seg["id"], obj.mask)  # visible masks are the thing segments
        assert obj.mask.sum() >= 12 and obj.shape in THING_CLASSES
        union += obj.mask
    assert union.max() <= 1  # occlusion leaves masks disjoint


def test_expressions_are_unique_and_resolve_to_their_object():
    described = total = 0
    kinds = set()
    for index in range(25):
        scene = generate_scene(3, index, image_size=128)
        texts = [t for t in scene.expressions() if t is not None]
        assert len(set(texts)) == len(texts)
        for i, spec in enumerate(scene.specs):
            total += 1
            if spec is None:
                continue
            described += 1
            assert resolve_spec(spec, scene.objects, 128) == [i]
            text = scene.expressions()[i]
            assert text.startswith("the ") and scene.objects[i].shape in text
            kinds.update(k for k in ("size", "location", "relation", "colour") if getattr(spec, k))
    assert described / total > 0.9
    assert kinds == {"size", "location", "relation", "colour"}  # every attribute kind occurs


def test_resolve_spec_hand_scene():
    from zoo.data.shapes import ShapeObject

    def obj(shape, colour, size, x0, y0, w):
        m = np.zeros((100, 100), bool)
        m[y0 : y0 + w, x0 : x0 + w] = True
        return ShapeObject(shape, colour, size, (x0 + w / 2, y0 + w / 2), w / 2, 0.0, m)

    objs = [obj("triangle", "red", "small", 5, 40, 8), obj("triangle", "red", "big", 70, 40, 20), obj("circle", "blue", "big", 40, 40, 20)]
    assert resolve_spec(RefSpec("triangle"), objs, 100) == [0, 1]
    assert resolve_spec(RefSpec("triangle", "red", size="small"), objs, 100) == [0]
    assert resolve_spec(RefSpec("triangle", "red", relation=("left of", 2)), objs, 100) == [0]
    assert resolve_spec(RefSpec("triangle", "red", relation=("right of", 2)), objs, 100) == [1]
    assert resolve_spec(RefSpec("triangle", "red", location="on the right"), objs, 100) == [1]
    assert resolve_spec(RefSpec("circle", location="at the top"), objs, 100) == []  # centre is not in the top half
    spec = RefSpec("triangle", "red", size="small", relation=("left of", 2))
    assert spec.text(objs) == "the small red triangle left of the blue circle"


def test_polygon_and_id_encoding_round_trips():
    ids = np.array([[0, 1, 255], [256, 65536, 256**3 - 1]])
    assert np.array_equal(rgb2id(id2rgb(ids)), ids)
    mask = np.zeros((12, 12), bool)
    mask[2:7, 3:10] = True
    from pycocotools import mask as mask_utils

    polys = mask_to_polygons(mask)
    back = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 12, 12))).astype(bool)
    assert np.array_equal(back, mask)


def test_dataset_written_in_real_formats_reads_back(tmp_path):
    paths = generate_shapes_dataset(tmp_path, {"train": 3, "val": 2}, seed=5, image_size=64)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["generator"] == "zoo.data.shapes" and meta["splits"] == {"train": 3, "val": 2}
    scenes = [generate_scene(5, i, 64, split="val") for i in range(2)]

    det = CocoDetection(tmp_path / "images", paths["instances_val"])
    assert len(det) == 2 and det.class_names == list(THING_CLASSES)
    for item, scene in zip(det, scenes):
        assert torch.equal((item["image"] * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(scene.image))
        assert item["masks"].shape == (len(scene.objects), 64, 64)
        for k, obj in enumerate(scene.objects):
            x, y, w, h = obj.box
            assert torch.allclose(item["boxes"][k], torch.tensor([x, y, x + w, y + h]))
            assert THING_CLASSES[item["labels"][k]] == obj.shape
            read = item["masks"][k].numpy()
            iou = (read & obj.mask).sum() / (read | obj.mask).sum()
            assert iou > (0.999 if obj.shape == "ring" else 0.9)  # rings are RLE (exact), others polygons

    small = CocoDetection(tmp_path / "images", paths["instances_val"], image_size=32)[0]
    assert small["image"].shape == (3, 32, 32) and small["masks"].shape[1:] == (32, 32)
    assert torch.allclose(small["boxes"], det[0]["boxes"] / 2)
    images, pad, targets = collate_detection([det[0], small])
    assert images.shape == (2, 3, 64, 64) and pad[1, 40, 40] and not pad[1, 10, 10] and targets[1]["masks"].shape[1:] == (64, 64)

    pan = CocoPanoptic(tmp_path / "images", paths["panoptic_val"], tmp_path / "annotations" / "panoptic_val")
    item = pan[1]
    assert np.array_equal(item["panoptic"].numpy(), scenes[1].panoptic)
    assert item["isthing"].sum() == len(scenes[1].objects) and (~item["isthing"]).sum() <= len(STUFF_CLASSES)
    assert (item["semantic"] != 255).all()  # no void
    assert torch.equal(item["masks"].sum(0), torch.ones(64, 64, dtype=torch.long))
    assert pan.class_names[-3:] == list(STUFF_CLASSES)

    refs = RefCocoDataset(tmp_path / "images", paths["refcoco_refs"], paths["refcoco_instances"], split="val")
    expected = [(t, o) for s in scenes for t, o in zip(s.expressions(), s.objects) if t is not None]
    assert len(refs) == len(expected)
    for r, (text, obj) in zip(refs, expected):
        assert r["sentence"] == text
        x, y, w, h = obj.box
        assert torch.allclose(r["box"], torch.tensor([x, y, x + w, y + h]))
        assert (r["mask"].numpy() & obj.mask).sum() / (r["mask"].numpy() | obj.mask).sum() > 0.9
    assert len(RefCocoDataset(tmp_path / "images", paths["refcoco_refs"], paths["refcoco_instances"])) > len(refs)


def test_more_training_images_leave_validation_unchanged(tmp_path):
    a = generate_shapes_dataset(tmp_path / "a", {"train": 1, "val": 1}, seed=2, image_size=48)
    b = generate_shapes_dataset(tmp_path / "b", {"train": 3, "val": 1}, seed=2, image_size=48)
    assert (tmp_path / "a/images/val_000000.png").read_bytes() == (tmp_path / "b/images/val_000000.png").read_bytes()
    assert (tmp_path / "a/annotations/panoptic_val/val_000000.png").read_bytes() == (tmp_path / "b/annotations/panoptic_val/val_000000.png").read_bytes()
    ja = json.loads(open(a["instances_val"]).read())
    jb = json.loads(open(b["instances_val"]).read())
    assert [x["segmentation"] for x in ja["annotations"]] == [x["segmentation"] for x in jb["annotations"]]
