"""ViDT+ UQR mask codec: zig-zag order, orthonormal DCT, encode/decode round trip, crop and paste."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from zoo.data.shapes import generate_scene
from zoo.models.vidt import dct
from zoo.nn.box_ops import masks_to_boxes


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_zigzag_order_hand_example():
    # JPEG zig-zag on a 4 x 4 grid, row-major flat indices r * 4 + c:
    # (0,0) (0,1) (1,0) (2,0) (1,1) (0,2) (0,3) (1,2) (2,1) (3,0) (3,1) (2,2) (1,3) (2,3) (3,2) (3,3)
    assert dct.zigzag_indices(4) == (0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15)
    order = dct.zigzag_indices(128)
    assert sorted(order) == list(range(128 * 128))
    assert order[:6] == (0, 1, 128, 256, 129, 2)


def test_dct_is_orthonormal_dct2_and_inverts():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = scipy.fft.dctn(x.double().numpy(), axes=(1, 2), norm="ortho")
    assert np.abs(dct.dct2(x).double().numpy() - ref).max() < 1e-5
    assert (dct.idct2(dct.dct2(x)) - x).abs().max() < 1e-5


def test_constant_mask_is_one_dc_coefficient():
    # orthonormal DCT of an all-ones 128 x 128 mask: DC = sum / 128 = 128, every other coefficient 0
    v = dct.encode(torch.ones(1, 128, 128, dtype=torch.bool))
    assert v.shape == (1, 256)
    assert v[0, 0].item() == pytest.approx(128.0, rel=1e-5)
    assert v[0, 1:].abs().max() < 1e-3
    assert torch.allclose(dct.decode(v), torch.ones(1, 128, 128), atol=1e-4)


def test_round_trip_reconstructs_shapes_masks():
    scene = generate_scene(0, 0, 128)
    masks = torch.from_numpy(np.stack([o.mask for o in scene.objects]))
    boxes = masks_to_boxes(masks)
    crops = dct.crop_and_resize(masks, boxes, 128)
    vectors = dct.encode(crops)
    assert vectors.shape == (len(masks), 256)
    hard = dct.decode_binary(vectors) > 0.5
    soft = dct.decode(vectors)
    assert soft.min() >= 0 and soft.max() <= 1
    for i in range(len(masks)):
        assert _iou(hard[i], crops[i]) > 0.9, scene.objects[i].shape
        assert _iou(soft[i] >= 0.5, crops[i]) > 0.9
    # back into the image: the pasted decoded masks match the original instance masks
    pasted = dct.paste_masks(hard.float(), boxes, 128, 128)
    for i in range(len(masks)):
        assert _iou(pasted[i], masks[i]) > 0.9


def test_encode_resizes_other_sizes():
    m = torch.zeros(1, 64, 64, dtype=torch.bool)
    m[:, 16:48, 16:48] = True
    v = dct.encode(m)
    big = torch.zeros(1, 128, 128, dtype=torch.bool)
    big[:, 32:96, 32:96] = True
    assert torch.allclose(v, dct.encode(big), atol=1e-3)


def test_crop_and_paste_rectangle_by_hand():
    mask = torch.zeros(1, 12, 16, dtype=torch.bool)
    mask[0, 3:8, 2:10] = True  # pixels y 3..7, x 2..9 -> box (2, 3, 10, 8) in pixel-edge coordinates
    box = torch.tensor([[2.0, 3.0, 10.0, 8.0]])
    assert dct.crop_and_resize(mask, box, 8).all()
    pasted = dct.paste_masks(torch.ones(1, 8, 8), box, 12, 16)
    assert torch.equal(pasted, mask)
    assert dct.paste_masks(torch.ones(0, 8, 8), torch.zeros(0, 4), 12, 16).shape == (0, 12, 16)
