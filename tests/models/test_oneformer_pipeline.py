"""OneFormer predictor: letterboxing, the official post-processing by hand, batching, the three tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo import registry
from zoo.imageio import letterbox_masks, letterbox_size
from zoo.models.oneformer.model import preset_config
from zoo.models.oneformer.pipeline import instance_inference, letterbox_image, panoptic_inference, restore_masks, semantic_inference
from zoo.models.oneformer.tokenizer import VOCAB_SIZE, task_tokens
from zoo.results import Segmentation

SKY, GROUND, CIRCLE, SQUARE = 6, 7, 0, 1


@pytest.fixture(scope="module")
def pipeline():
    return registry.create_model("oneformer", "micro", weights="random")


def test_letterbox_geometry():
    assert letterbox_size(48, 64, 128) == (96, 128) and letterbox_size(40, 40, 128) == (128, 128)
    assert letterbox_size(1, 500, 128) == (1, 128)
    image = torch.rand(3, 48, 64)
    config = preset_config("micro")
    boxed, valid = letterbox_image(image, 128, config)
    assert valid == (96, 128) and boxed.shape == (3, 128, 128)
    assert boxed[:, 96:].eq(0).all()  # padded with the mean colour, i.e. 0 after normalisation
    # normalised as detectron2: (255 x - mean) / std
    grey, _ = letterbox_image(torch.full((3, 8, 8), 0.5), 8, config)
    expected = (127.5 - torch.tensor(config.pixel_mean)) / torch.tensor(config.pixel_std)
    torch.testing.assert_close(grey[:, 3, 3], expected)
    masks = torch.zeros(1, 4, 8, dtype=torch.bool)
    masks[0, :, :4] = True
    boxed_masks = letterbox_masks(masks, 16)
    assert boxed_masks.shape == (1, 16, 16) and boxed_masks[0, :8, :8].all() and not boxed_masks[0, :, 8:].any()
    assert not boxed_masks[0, 8:].any()


def test_restore_masks_crops_the_valid_region():
    logits = torch.full((1, 32, 32), -5.0)
    logits[0, :, :16] = 5.0  # left half of the letterboxed input
    logits[0, 24:] = 9.0  # padding rows: must be cropped away
    out = restore_masks(logits, 128, (96, 128), (48, 64))
    assert out.shape == (1, 48, 64)
    assert (out[0, :, :30] > 0).all() and (out[0, :, 34:] < 0).all()
    assert out.max() < 9.0 - 1e-3


def _scene_logits(size: int = 32, num_queries: int = 5, num_classes: int = 9):
    """Hand-made predictions: sky over ground, a circle at the bottom left, one empty query."""
    cls = torch.full((num_queries, num_classes + 1), -8.0)
    masks = torch.full((num_queries, size, size), -8.0)
    half = size // 2
    cls[0, SKY] = 8.0
    masks[0, :half] = 8.0
    masks[0, :4, :4] = -8.0  # a hole the unsure square fills
    cls[1, GROUND] = 8.0
    masks[1, half:] = 8.0
    masks[1, half + 4:half + 12, 4:12] = -8.0
    cls[2, CIRCLE] = 8.0
    masks[2, half + 4:half + 12, 4:12] = 8.0
    cls[3, SQUARE] = 1.2  # unsure: p = 0.55, below the 0.8 threshold
    cls[3, -1] = 1.0
    masks[3, :4, :4] = 8.0
    cls[4, -1] = 8.0  # no object
    return cls, masks


def test_semantic_inference_by_hand():
    cls, masks = _scene_logits()
    scores = semantic_inference(cls, masks)
    assert scores.shape == (9, 32, 32)
    label = scores.argmax(0)
    assert label[4:16].eq(SKY).all() and label[20:28, 4:12].eq(CIRCLE).all() and label[:4, :4].eq(SQUARE).all()
    assert label[16:20].eq(GROUND).all() and label[28:].eq(GROUND).all()
    p = torch.softmax(cls[0], -1)[SKY] * torch.sigmoid(torch.tensor(8.0)) + sum(
        torch.softmax(cls[q], -1)[SKY] * torch.sigmoid(masks[q, 8, 8]) for q in range(1, 5))
    assert scores[SKY, 8, 8].item() == pytest.approx(p.item(), rel=1e-5)


def test_panoptic_inference_by_hand():
    cls, masks = _scene_logits()
    ids, segments = panoptic_inference(cls, masks, thing_classes=range(6), object_mask_threshold=0.8, overlap_threshold=0.8)
    assert [(s["id"], s["category"], s["isthing"], s["query"]) for s in segments] == [
        (1, SKY, False, 0), (2, GROUND, False, 1), (3, CIRCLE, True, 2)]
    assert ids[4:16].eq(1).all() and ids[20:28, 4:12].eq(3).all() and ids[28:].eq(2).all()
    assert ids[:4, :4].eq(0).all()  # no kept query's mask covers the hole: void
    assert segments[0]["score"] == pytest.approx(torch.softmax(cls[0], -1).max().item(), rel=1e-6)
    # a lower threshold admits the unsure square, which then covers the top-left corner
    ids, segments = panoptic_inference(cls, masks, range(6), object_mask_threshold=0.3)
    assert [s["category"] for s in segments] == [SKY, GROUND, CIRCLE, SQUARE] and ids[:4, :4].eq(4).all()
    # stuff of one class merges into one segment
    cls2, masks2 = cls.clone(), masks.clone()
    cls2[1, GROUND], cls2[1, SKY] = -8.0, 8.0
    ids, segments = panoptic_inference(cls2, masks2, range(6))
    assert [s["category"] for s in segments] == [SKY, CIRCLE] and ids[28:].eq(1).all()
    # overlap: a query that keeps less than 80 % of its own mask is dropped
    cls3, masks3 = cls.clone(), masks.clone()
    masks3[2, :16] = 7.0  # the circle query also claims the sky, where the sky query wins
    _, segments = panoptic_inference(cls3, masks3, range(6))
    assert CIRCLE not in [s["category"] for s in segments]


def test_instance_inference_by_hand():
    cls, masks = _scene_logits()
    found = instance_inference(cls, masks, thing_classes=range(6), topk=5)
    # top-5 (query, class) pairs by probability, things only: the circle first, the square pair next
    assert found["labels"][0].item() == CIRCLE and found["queries"][0].item() == 2
    assert set(found["labels"].tolist()) <= set(range(6))
    p = torch.softmax(cls[2], -1)[CIRCLE]
    mask_score = torch.sigmoid(torch.tensor(8.0))
    assert found["scores"][0].item() == pytest.approx((p * mask_score).item(), rel=1e-5)
    assert found["masks"][0].sum().item() == 64
    assert (found["scores"][:-1] >= found["scores"][1:]).all()
    strict = instance_inference(cls, masks, range(6), topk=5, object_mask_threshold=0.8)
    assert strict["labels"].tolist() == [CIRCLE]


def test_postprocess_with_a_fake_graph(pipeline):
    """The full predict path on hand-made logits: letterbox, task tokens, crop and resize, results."""
    seen = []

    def fake(images, tokens):
        seen.append(tokens.clone())
        cls, masks = _scene_logits()
        cls = torch.cat([cls, torch.full((19, 10), -8.0)])
        cls[5:, -1] = 8.0
        masks = torch.cat([masks, torch.full((19, 32, 32), -8.0)])
        b = images.shape[0]
        return cls.expand(b, -1, -1), masks.expand(b, -1, -1, -1)

    pipeline.set_runner("segment", fake)
    try:
        image = np.zeros((64, 64, 3), np.uint8)
        semantic = pipeline.predict(image, task="semantic")
        assert torch.equal(seen[-1][0], task_tokens(["semantic"])[0])
        assert semantic.kind == "semantic" and semantic.segment_map.shape == (64, 64)
        assert semantic.segment_map[8, 30] == SKY and semantic.segment_map[50, 15] == CIRCLE and semantic.segment_map[63, 63] == GROUND
        assert semantic.segment_map[2, 2] == SQUARE
        assert {s["label"] for s in semantic.segments} == {SKY, GROUND, CIRCLE, SQUARE}
        panoptic = pipeline.predict(image)  # default task: panoptic
        assert torch.equal(seen[-1][0], task_tokens(["panoptic"])[0])
        assert panoptic.kind == "panoptic"
        assert [(s["id"], s["label"], s["is_thing"]) for s in panoptic.segments] == [(1, SKY, False), (2, GROUND, False), (3, CIRCLE, True)]
        assert panoptic.segment_map[50, 15] == 3 and panoptic.segment_map[8, 30] == 1 and panoptic.segment_map[2, 2] == -1
        instance = pipeline.predict(image, task="instance")
        assert instance.kind == "instance" and [s["label"] for s in instance.segments] == [CIRCLE]
        assert instance.segment_map[50, 15] == 1 and instance.segment_map[8, 30] == -1
        assert (instance.segment_map == 1).sum() == 16 * 16
        assert instance.class_names[CIRCLE] == "circle"
    finally:
        pipeline.set_runner("segment", None)


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_tasks_batch_invariant_and_consistent(pipeline, task):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)]
    batch = pipeline.predict(images, task=task, object_mask_threshold=0.0, overlap_threshold=0.0)
    for image, result in zip(images, batch):
        assert isinstance(result, Segmentation) and result.kind == task
        assert result.segment_map.shape == image.shape[:2]
        single = pipeline.predict(image, task=task, object_mask_threshold=0.0, overlap_threshold=0.0)
        np.testing.assert_array_equal(single.segment_map, result.segment_map)
        assert [s["label"] for s in single.segments] == [s["label"] for s in result.segments]
        ids = set(np.unique(result.segment_map).tolist())
        if task == "semantic":
            assert ids <= set(range(9)) and ids == {s["id"] for s in result.segments}
        else:
            assert ids - {-1} == {s["id"] for s in result.segments}
        if task == "instance":
            assert all(s["is_thing"] for s in result.segments)
        assert result.draw(image).size == (image.shape[1], image.shape[0])


def test_graph_spec(pipeline):
    spec = pipeline.graph("segment")
    assert [t.name for t in spec.inputs] == ["images", "task_tokens"]
    assert spec.inputs[1].dtype == "int64" and spec.inputs[1].value_range == (0, VOCAB_SIZE - 1)
    class_logits, mask_logits = pipeline.run_graph("segment", *spec.example_inputs())
    assert class_logits.shape == (2, 24, 10) and mask_logits.shape == (2, 24, 32, 32)
    with pytest.raises(ValueError):
        pipeline.predict(np.zeros((8, 8, 3), np.uint8), task="detection")
