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


# --- Against torchvision.ops (issue #19: use the library where nothing is lost) --------------
# The conversions call torchvision.ops.box_convert; the rest is ours and must agree with
# torchvision wherever both are defined. Where they differ, the test names the convention.

def _random_xyxy(n: int, g: torch.Generator, min_size: float = 0.0) -> torch.Tensor:
    x0y0 = torch.rand(n, 2, generator=g) * 10
    return torch.cat([x0y0, x0y0 + torch.rand(n, 2, generator=g) * 5 + min_size], 1)


def _degenerate_xyxy() -> torch.Tensor:
    # a point, a horizontal and a vertical segment (zero area), and one ordinary box
    return torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 3.0, 2.0], [2.0, 0.0, 2.0, 4.0], [0.0, 0.0, 2.0, 2.0]])


def test_conversions_are_torchvisions():
    from torchvision.ops import box_convert

    g = torch.Generator().manual_seed(1)
    boxes = torch.cat([torch.rand(2, 3, 7, 4, generator=g) * 10, _degenerate_xyxy().expand(2, 3, 4, 4)], 2)
    for ours, fmt_in, fmt_out in ((B.box_cxcywh_to_xyxy, "cxcywh", "xyxy"), (B.box_xyxy_to_cxcywh, "xyxy", "cxcywh"),
                                  (B.box_xywh_to_xyxy, "xywh", "xyxy"), (B.box_xyxy_to_xywh, "xyxy", "xywh")):
        expected = torch.stack([box_convert(b, fmt_in, fmt_out) for b in boxes.reshape(-1, 4)[:, None]]).reshape(boxes.shape)
        assert torch.equal(ours(boxes), expected), (fmt_in, fmt_out)


def test_area_iou_giou_equal_torchvision_on_boxes_of_positive_area():
    import torchvision.ops as tvo

    g = torch.Generator().manual_seed(2)
    a, b = _random_xyxy(9, g, min_size=0.01), _random_xyxy(11, g, min_size=0.01)
    b[0] = a[0]  # identical pair: IoU 1
    b[1] = a[1] + torch.tensor([100.0, 100.0, 100.0, 100.0])  # far apart: IoU 0, GIoU near -1
    assert torch.allclose(B.box_area(a), tvo.box_area(a))
    iou, _ = B.box_iou(a, b)
    assert torch.allclose(iou, tvo.box_iou(a, b), atol=1e-6)
    assert torch.allclose(B.generalized_box_iou(a, b), tvo.generalized_box_iou(a, b), atol=1e-6)
    # torchvision has no elementwise IoU; its GIoU loss is 1 - our elementwise GIoU (it adds
    # eps=1e-7 to the denominators where we clamp at 1e-7: equal to float precision here).
    loss = tvo.generalized_box_iou_loss(a, b[:9], reduction="none")
    assert torch.allclose(1 - B.elementwise_generalized_box_iou(a, b[:9]), loss, atol=1e-6)
    assert torch.allclose(B.elementwise_box_iou(a, b[:9])[0], tvo.box_iou(a, b[:9]).diagonal(), atol=1e-6)


def test_degenerate_boxes_where_the_convention_differs_from_torchvision():
    import torchvision.ops as tvo

    d = _degenerate_xyxy()
    # Convention difference 1: two zero-area boxes give 0/0. torchvision returns NaN; we clamp
    # the union (and the enclosing area) at 1e-7 and return 0 (GIoU likewise finite), because a
    # NaN here reaches the Hungarian matcher's cost and the GIoU loss of DETR-style training.
    tv_iou, ours = tvo.box_iou(d, d), B.box_iou(d, d)[0]
    zero_area = B.box_area(d) == 0
    both_zero = zero_area[:, None] & zero_area[None, :]
    assert torch.isnan(tv_iou[both_zero]).all() and torch.equal(ours[both_zero], torch.zeros(int(both_zero.sum())))
    assert torch.allclose(ours[~both_zero], tv_iou[~both_zero])  # a zero-area box against a real box: both 0
    tv_giou, our_giou = tvo.generalized_box_iou(d, d), B.generalized_box_iou(d, d)
    assert torch.isfinite(our_giou).all()
    finite = torch.isfinite(tv_giou)
    assert torch.allclose(our_giou[finite], tv_giou[finite], atol=1e-6)
    # Convention difference 2: an inverted box (x1 < x0 and y1 < y0). torchvision's area is the
    # plain product (positive here: two negative sides); ours clamps each side at 0 (area 0).
    inverted = torch.tensor([[3.0, 3.0, 1.0, 1.0], [0.0, 0.0, -2.0, 1.0]])
    assert torch.equal(tvo.box_area(inverted), torch.tensor([4.0, -2.0]))
    assert torch.equal(B.box_area(inverted), torch.zeros(2))


def test_masks_to_boxes_is_torchvisions_plus_one_pixel_edge():
    import torchvision.ops as tvo

    g = torch.Generator().manual_seed(3)
    masks = torch.rand(6, 9, 7, generator=g) > 0.8
    masks[0] = False
    masks[1] = False
    masks[1, 4, 2] = True  # a single pixel
    # Convention difference: torchvision's boxes are pixel indices (x1 = last column), ours are
    # pixel edges (x1 = last column + 1, so a one-pixel mask has area 1, as COCO's boxes do);
    # and for an empty mask torchvision gives (0, 0, 0, 0) too, which we keep.
    ours, tv = B.masks_to_boxes(masks), tvo.masks_to_boxes(masks)
    nonempty = masks.flatten(1).any(1)
    assert torch.equal(ours[nonempty], tv[nonempty] + torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(ours[~nonempty], torch.zeros(1, 4)) and torch.equal(tv[~nonempty], torch.zeros(1, 4))
    assert torch.equal(ours[1], torch.tensor([2.0, 4.0, 3.0, 5.0]))
