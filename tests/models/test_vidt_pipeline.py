"""ViDT / ViDT+ predictor: letterbox and its inverse by hand, official top-k selection, Detections out,
boxes inside the image, batch invariance, masks for ViDT+."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.models.vidt.model import ViDT, preset_config
from zoo.models.vidt.pipeline import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ViDTPipeline,
    letterbox_scaled,
    postprocess_image,
    select_topk,
    unletterbox_boxes,
)
from zoo.results import Detections


def _pipeline(plus: bool) -> ViDTPipeline:
    torch.manual_seed(0)
    config = preset_config("micro", plus=plus)
    return ViDTPipeline(ViDT(config), config).eval()


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8),
            rng.integers(0, 255, (90, 30, 3), dtype=np.uint8)]


def test_letterbox_by_hand():
    # 40 x 80 (H x W) grey image into S = 128: scale 1.6, content 64 x 128 at the top, zeros below
    image = torch.full((3, 40, 80), 0.5)
    out, (sy, sx) = letterbox_scaled(image, 128)
    assert out.shape == (3, 128, 128)
    assert (sy, sx) == (1.6, 1.6)
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, :64, :], expected.view(3, 1, 1).expand(3, 64, 128), atol=1e-5)
    assert out[:, 64:, :].abs().max() == 0
    # a tall image pads on the right
    tall, (ty, tx) = letterbox_scaled(torch.full((3, 100, 50), 0.5), 128)
    assert (ty, tx) == (1.28, 1.28) and tall[:, :, 64:].abs().max() == 0 and tall[:, :, :64].abs().min() > 0


def test_letterbox_inverse_maps_boxes_back():
    # box (16, 8, 64, 32) in the letterboxed frame of a 40 x 80 image (scale 1.6) is (10, 5, 40, 20) there
    back = unletterbox_boxes(torch.tensor([[16.0, 8.0, 64.0, 32.0]]), (1.6, 1.6), 40, 80)
    assert torch.allclose(back, torch.tensor([[10.0, 5.0, 40.0, 20.0]]))
    # boxes reaching into the padding are clipped to the image
    clipped = unletterbox_boxes(torch.tensor([[-8.0, 0.0, 200.0, 112.0]]), (1.6, 1.6), 40, 80)
    assert torch.allclose(clipped, torch.tensor([[0.0, 0.0, 80.0, 40.0]]))
    # through postprocess_image: a normalised cxcywh box (0.25, 0.125, 0.375, 0.1875) on the 128 canvas
    # is xyxy (8, 4, 56, 28) there, (5, 2.5, 35, 17.5) in the image
    logits = torch.tensor([[5.0, -5.0]])
    det = postprocess_image(logits, torch.tensor([[0.25, 0.125, 0.375, 0.1875]]), input_size=128, scale=(1.6, 1.6),
                            height=40, width=80, max_detections=1)
    assert torch.allclose(det["boxes"], torch.tensor([[5.0, 2.5, 35.0, 17.5]]))
    assert det["labels"].tolist() == [0] and det["scores"].item() == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())


def test_topk_over_query_class_pairs():
    # official PostProcess: top-k of sigmoid scores flattened to Q * C; query = i // C, label = i % C
    logits = torch.tensor([[0.0, 3.0, -1.0], [2.0, 4.0, 1.0]])
    scores, query, labels = select_topk(logits, 3)
    assert query.tolist() == [1, 0, 1] and labels.tolist() == [1, 1, 0]
    assert torch.allclose(scores, torch.sigmoid(torch.tensor([4.0, 3.0, 2.0])))
    # IoU-aware ranking (option iou_alpha) reorders by p^(1-a) IoU^a
    _, query, _ = select_topk(logits, 1, ious=torch.tensor([[5.0], [-5.0]]), iou_alpha=0.5)
    assert query.tolist() == [0]


@pytest.mark.parametrize("plus", [False, True])
def test_predict_detections_inside_image_and_batch_invariant(plus):
    pipe = _pipeline(plus)
    images = _images()
    batch = pipe._predict(images, score_threshold=0.0, max_detections=20)
    assert len(batch) == 3 and all(isinstance(r, Detections) for r in batch)
    for det, image in zip(batch, images):
        h, w = image.shape[:2]
        assert len(det.boxes) == 20
        assert det.boxes[:, [0, 2]].min() >= 0 and det.boxes[:, [0, 2]].max() <= w
        assert det.boxes[:, [1, 3]].min() >= 0 and det.boxes[:, [1, 3]].max() <= h
        assert (det.boxes[:, 2] >= det.boxes[:, 0]).all() and (det.boxes[:, 3] >= det.boxes[:, 1]).all()
        assert np.all(np.diff(det.scores) <= 0)
        assert det.class_names == list(pipe.config.class_names)
        if plus:
            assert det.masks.shape == (20, h, w) and det.masks.dtype == bool
        else:
            assert det.masks is None
    for i, image in enumerate(images):
        one = pipe._predict([image], score_threshold=0.0, max_detections=20)[0]
        np.testing.assert_allclose(one.boxes, batch[i].boxes, atol=1e-3)
        np.testing.assert_allclose(one.scores, batch[i].scores, atol=1e-5)
        np.testing.assert_array_equal(one.labels, batch[i].labels)
    assert isinstance(batch[0].to_json(), dict) and batch[0].draw(images[0]).size == (64, 48)


def test_score_threshold_and_graph_outputs():
    pipe = _pipeline(True)
    spec = pipe.graph("detect")
    c = pipe.config
    assert spec.inputs[0].shape == ("batch", 3, c.image_size, c.image_size)
    outs = pipe.run_graph("detect", *spec.example_inputs())
    assert [tuple(o.shape) for o in outs] == [(2, c.det_tokens, c.num_classes), (2, c.det_tokens, 4),
                                              (2, c.det_tokens, c.vector_dim), (2, c.det_tokens, 1)]
    assert [o.name for o in spec.outputs] == ["logits", "boxes", "vectors", "ious"]
    top = pipe._predict(_images()[:1], score_threshold=0.0, max_detections=50)[0]
    cut = float(np.median(top.scores))
    kept = pipe._predict(_images()[:1], score_threshold=cut, max_detections=50)[0]
    assert 0 < len(kept.scores) < 50 and (kept.scores >= cut).all()
    assert [o.name for o in _pipeline(False).graph("detect").outputs] == ["logits", "boxes"]
