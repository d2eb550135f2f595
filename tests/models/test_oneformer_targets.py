"""OneFormer targets: semantic / instance / panoptic from one panoptic annotation, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data.coco import CocoPanoptic, write_coco_panoptic
from zoo.data.shapes import categories
from zoo.models.oneformer.targets import PAD_TEXTS, TASKS, build_targets, choose_task, item_targets, parse_tasks, text_list

NAMES = [c["name"] for c in categories()]  # circle 0, square 1, ..., sky 6, ground 7, water 8


@pytest.fixture(scope="module")
def item(tmp_path_factory):
    """A 4 x 6 scene: sky over ground, two circles, a square and a crowd circle."""
    root = tmp_path_factory.mktemp("pan")
    pan = np.array([[1, 1, 1, 1, 1, 1],
                    [1, 3, 3, 1, 4, 6],
                    [2, 3, 2, 2, 4, 6],
                    [2, 2, 5, 5, 2, 2]])
    segments = [{"id": 1, "category_id": 7}, {"id": 2, "category_id": 8}, {"id": 3, "category_id": 1},
                {"id": 4, "category_id": 1}, {"id": 5, "category_id": 2}, {"id": 6, "category_id": 1, "iscrowd": 1}]
    from PIL import Image

    (root / "images").mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "images" / "a.png")
    write_coco_panoptic(root / "pan.json", root / "pan", [{"image_id": 1, "file_name": "a.png", "panoptic": pan,
                                                          "segments_info": segments}],
                        [{"id": 1, "file_name": "a.png", "width": 6, "height": 4}], categories())
    data = CocoPanoptic(root / "images", root / "pan.json", root / "pan")
    assert data.class_names == NAMES
    return data[0], pan


def test_semantic_merges_things(item):
    it, pan = item
    t = item_targets(it, "semantic", NAMES, 8)
    assert t.labels.tolist() == [6, 7, 0, 1]  # classes in order of first segment
    assert torch.equal(t.masks[0], torch.from_numpy(pan == 1))
    assert torch.equal(t.masks[2], torch.from_numpy((pan == 3) | (pan == 4)))  # both circles, not the crowd one
    assert t.texts == ["a photo with a circle", "a photo with a square", "a photo with a sky", "a photo with a ground"] \
        + ["a semantic photo"] * 4


def test_instance_keeps_things(item):
    it, pan = item
    t = item_targets(it, "instance", NAMES, 8)
    assert t.labels.tolist() == [0, 0, 1]
    for mask, seg in zip(t.masks, (3, 4, 5)):
        assert torch.equal(mask, torch.from_numpy(pan == seg))
    assert t.texts == ["a photo with a circle"] * 2 + ["a photo with a square"] + ["an instance photo"] * 5


def test_panoptic_every_segment(item):
    it, pan = item
    t = item_targets(it, "panoptic", NAMES, 8)
    assert t.labels.tolist() == [6, 7, 0, 0, 1]
    assert t.masks.shape == (5, 4, 6) and t.masks.dtype == torch.bool
    assert not t.masks.any(0)[torch.from_numpy(pan == 6)].any()  # crowd pixels are in no target
    assert t.texts == ["a photo with a circle"] * 2 + ["a photo with a square", "a photo with a sky",
                                                        "a photo with a ground"] + ["a panoptic photo"] * 3
    # a list longer than the text queries is truncated (official: `if num >= len(texts): break`)
    assert item_targets(it, "panoptic", NAMES, 2).texts == ["a photo with a circle"] * 2


def test_empty_masks_skipped_and_no_targets():
    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    masks[1, 0, 0] = True
    t = build_targets("panoptic", masks, torch.tensor([2, 7]), torch.tensor([True, False]), NAMES, 3)
    assert t.labels.tolist() == [7] and t.masks.shape == (1, 3, 3)
    empty = build_targets("instance", masks, torch.tensor([2, 7]), torch.tensor([False, False]), NAMES, 3)
    assert empty.labels.shape == (0,) and empty.masks.shape == (0, 3, 3)
    assert empty.texts == ["an instance photo"] * 3
    assert build_targets("semantic", masks[:0], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool),
                         NAMES, 2).texts == ["a semantic photo"] * 2
    with pytest.raises(ValueError):
        build_targets("detection", masks, torch.tensor([2, 7]), torch.tensor([True, False]), NAMES, 3)


def test_text_list_orders_by_class():
    assert text_list("panoptic", [7, 0, 7], NAMES, 4) == ["a photo with a circle", "a photo with a ground",
                                                          "a photo with a ground", "a panoptic photo"]
    assert set(PAD_TEXTS) == set(TASKS)


def test_task_choice_uniform_and_deterministic():
    drawn = [choose_task(3, i) for i in range(600)]
    assert drawn == [choose_task(3, i) for i in range(600)]
    counts = {t: drawn.count(t) for t in TASKS}
    assert all(150 <= c <= 250 for c in counts.values()), counts
    assert drawn != [choose_task(4, i) for i in range(600)]
    assert {choose_task(0, i, ("instance",)) for i in range(20)} == {"instance"}


def test_parse_tasks():
    assert parse_tasks("semantic,instance,panoptic") == TASKS
    assert parse_tasks(" panoptic ") == ("panoptic",)
    with pytest.raises(ValueError):
        parse_tasks("semantic,stuff")
    with pytest.raises(ValueError):
        parse_tasks("")
