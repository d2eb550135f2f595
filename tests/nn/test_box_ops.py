"""Box conversions, IoU and GIoU against hand-computed values."""

import math

import pytest
import torch

from zoo.nn import box_ops as B


def test_conversions_round_trip_and_values():
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 10.0]])
    assert torch.equal(B.box_xyxy_to_cxcywh(xyxy), torch.tensor([[3.0, 6.0, 4.0, 8.0]]))
    assert torch.equal(B.box_xyxy_to_xywh(xyxy), torch.tensor([[1.0, 2.0, 4.0, 8.0]]))
    assert torch.equal(B.box_cxcywh_to_xyxy(torch.tensor([[3.0, 6.0, 4.0, 8.0]])), xyxy)
    assert torch.equal(B.box_xywh_to_xyxy(torch.tensor([[1.0, 2.0, 4.0, 8.0]])), xyxy)
    batch = torch.rand(2, 3, 5, 4)  # any leading shape
    assert torch.allclose(B.box_xyxy_to_cxcywh(B.box_cxcywh_to_xyxy(batch)), batch, atol=1e-6)
    assert torch.allclose(B.box_xyxy_to_xywh(B.box_xywh_to_xyxy(batch)), batch, atol=1e-6)


def test_area_iou_giou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    assert torch.equal(B.box_area(b), torch.tensor([4.0, 1.0, 4.0]))
    iou, union = B.box_iou(a, b)
    # overlap 1, union 7; touching corner only: IoU 0; identical: 1
    assert torch.allclose(iou, torch.tensor([[1 / 7, 0.0, 1.0]]))
    assert torch.allclose(union, torch.tensor([[7.0, 5.0, 4.0]]))
    giou = B.generalized_box_iou(a, b)
    # enclosing boxes 3x3 = 9 and 3x2 = 6
    assert torch.allclose(giou, torch.tensor([[1 / 7 - 2 / 9, 0.0 - 1 / 6, 1.0]]))
    far = B.generalized_box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[99.0, 99.0, 100.0, 100.0]]))
    assert -1.0 < far.item() < -0.99


def test_elementwise_matches_pairwise_diagonal_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    x0y0 = torch.rand(6, 2, generator=g)
    boxes1 = torch.cat([x0y0, x0y0 + torch.rand(6, 2, generator=g) + 0.1], 1)
    x0y0 = torch.rand(6, 2, generator=g)
    boxes2 = torch.cat([x0y0, x0y0 + torch.rand(6, 2, generator=g) + 0.1], 1)
    assert torch.allclose(B.elementwise_box_iou(boxes1, boxes2)[0], B.box_iou(boxes1, boxes2)[0].diagonal())
    assert torch.allclose(B.elementwise_generalized_box_iou(boxes1, boxes2), B.generalized_box_iou(boxes1, boxes2).diagonal())
    b1 = boxes1.double().requires_grad_()
    b2 = boxes2.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda p, q: B.generalized_box_iou(p, q), (b1, b2))
    assert torch.autograd.gradcheck(lambda p, q: B.elementwise_generalized_box_iou(p, q), (b1, b2))


def test_degenerate_boxes_stay_finite():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert torch.isfinite(B.generalized_box_iou(point, point)).all()
    assert torch.isfinite(B.elementwise_generalized_box_iou(point, point)).all()


def test_masks_to_boxes_pixel_edges():
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    boxes = B.masks_to_boxes(masks)
    assert torch.equal(boxes, torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("fn", [B.box_iou, B.generalized_box_iou])
def test_empty_inputs(fn):
    out = fn(torch.zeros(0, 4), torch.rand(3, 4))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (0, 3) and not math.isnan(out.sum().item())
