"""Procedural referring expressions: RefCOCO-style JSON read back by the RefCOCO reader, unique by
construction, relations where attributes cannot tell twins apart, box and polygon ground truth."""

import json

import numpy as np
import pytest

from zoo.data.referring import ReferringDataset, generate_referring_dataset, mask_to_polygon, polygon_to_mask, referring_scene, valid_specs
from zoo.data.shapes import resolve_spec


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("referring")
    generate_referring_dataset(root, {"train": 24, "val": 4}, seed=0, image_size=64, twin_rate=1.0)
    return root


def test_written_in_refcoco_layout_and_read_by_the_refcoco_reader(data):
    refs = json.loads((data / "refcoco" / "refs.json").read_text())
    assert {"ref_id", "ann_id", "image_id", "category_id", "split", "file_name", "sentences", "sent_ids"} <= set(refs[0])
    assert all(s["kind"] in ("category", "attribute", "location", "relation") for r in refs for s in r["sentences"])
    ds = ReferringDataset(data, "train", 64, vertices=16)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["polygon"].shape == (16, 2)
    assert isinstance(item["sentence"], str) and item["sentence"].startswith("the ")
    x0, y0, x1, y1 = item["box"].tolist()
    poly = item["polygon"].numpy()
    assert x0 - 1 <= poly[:, 0].min() and poly[:, 0].max() <= x1 + 1 and y0 - 1 <= poly[:, 1].min() and poly[:, 1].max() <= y1 + 1
    assert len(ReferringDataset(data, "val", 64)) > 0


def test_twins_need_locations_or_relations_and_some_need_a_relation(data):
    ds = ReferringDataset(data, "train", 64)
    needs = [ds[i] for i in range(len(ds)) if ds[i]["needs_relation"]]
    assert needs, "no expression that needs a relation"
    assert all(" of " in i["sentence"] or "above" in i["sentence"] or "below" in i["sentence"] for i in needs)
    scene = referring_scene(0, 3, 64, "train", twin_rate=1.0)
    twins = [(o.shape, o.colour, o.size) for o in scene.objects]
    assert len(set(twins)) < len(twins)  # a copy was added
    for i in range(len(scene.objects)):
        for spec in valid_specs(i, scene.objects, 64):
            assert resolve_spec(spec, scene.objects, 64) == [i]  # unique by construction


def test_mask_polygon_round_trip_and_order():
    mask = np.zeros((32, 32), bool)
    mask[4:20, 6:26] = True
    poly = mask_to_polygon(mask, 40)
    assert poly.shape == (40, 2)
    assert poly[0, 1] == 4.0 and 6.0 <= poly[0, 0] < 7.0  # topmost, then leftmost (pixel edges; the contour cuts corners by half a pixel)
    x, y = poly[:, 0], poly[:, 1]
    assert 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0  # orientation fixed
    back = polygon_to_mask(poly, 32, 32)
    assert (back & mask).sum() / (back | mask).sum() > 0.97
    ring = np.zeros((32, 32), bool)
    ring[4:28, 4:28] = True
    ring[10:22, 10:22] = False  # holes are filled: the outer contour
    assert polygon_to_mask(mask_to_polygon(ring, 32), 32, 32).sum() >= 24 * 24 - 8
    assert (mask_to_polygon(np.zeros((8, 8), bool), 5) == 0).all()
