"""Multi-scale deformable attention: hand bilinear reference, official init/keys, ONNX parity."""

import math

import numpy as np
import pytest
import torch

from zoo.nn.deformable_attention import MSDeformAttn, encoder_reference_points, level_start_index, ms_deform_attn


def _bilinear(img: np.ndarray, x: float, y: float) -> float:
    """Sample img (H, W) at normalised (x, y): pixel centres at (j + 0.5) / W, zeros outside."""
    h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    total = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            j, i = x0 + dx, y0 + dy
            wt = (1 - abs(px - j)) * (1 - abs(py - i))
            if 0 <= i < h and 0 <= j < w:
                total += wt * img[i, j]
    return total


def _reference(value, shapes, locs, weights):
    """Eq. 3 without projections, by loops over everything."""
    n, _, m, d = value.shape
    _, lq, _, nl, p, _ = locs.shape
    out = np.zeros((n, lq, m * d))
    starts = level_start_index(shapes)
    for b in range(n):
        for q in range(lq):
            for h in range(m):
                for c in range(d):
                    acc = 0.0
                    for lvl, (hh, ww) in enumerate(shapes):
                        img = value[b, starts[lvl] : starts[lvl] + hh * ww, h, c].reshape(hh, ww)
                        for k in range(p):
                            x, y = locs[b, q, h, lvl, k]
                            acc += weights[b, q, h, lvl, k] * _bilinear(img, x, y)
                    out[b, q, h * d + c] = acc
    return out


def test_core_matches_hand_bilinear():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (2, 2)]
    value = torch.randn(2, 16, 2, 3, generator=g, dtype=torch.float64)
    locs = torch.rand(2, 5, 2, 2, 3, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2  # some outside [0, 1]
    weights = torch.rand(2, 5, 2, 2, 3, generator=g, dtype=torch.float64)
    out = ms_deform_attn(value, shapes, level_start_index(shapes), locs, weights)
    assert out.shape == (2, 5, 6)
    ref = _reference(value.numpy(), shapes, locs.numpy(), weights.numpy())
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)
    # a tensor of shapes (the official API) gives the same
    assert torch.allclose(ms_deform_attn(value, torch.tensor(shapes), None, locs, weights), out)


def test_single_pixel_hand_value():
    # one 2x2 level, one head, one channel, one point at the centre: mean of the 4 pixels
    value = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 4, 1, 1)
    locs = torch.full((1, 1, 1, 1, 1, 2), 0.5)
    out = ms_deform_attn(value, [(2, 2)], [0], locs, torch.ones(1, 1, 1, 1, 1))
    assert math.isclose(out.item(), 1.5)


def test_official_parameter_names_init_and_count():
    attn = MSDeformAttn(d_model=256, n_levels=4, n_heads=8, n_points=4)
    keys = set(attn.state_dict())
    assert keys == {f"{m}.{p}" for m in ("sampling_offsets", "attention_weights", "value_proj", "output_proj") for p in ("weight", "bias")}
    assert sum(p.numel() for p in attn.parameters()) == 230272  # 3 * (256*256+256) + (256*128+128)
    bias = attn.sampling_offsets.bias.view(8, 4, 4, 2)
    assert torch.allclose(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]]))
    assert torch.allclose(bias[2, 3], torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0]]), atol=1e-6)
    assert torch.allclose(bias[1, 0, 0], torch.tensor([1.0, 1.0]))  # 45 degrees, scaled so max |.| = 1
    assert attn.sampling_offsets.weight.abs().sum() == 0 and attn.attention_weights.weight.abs().sum() == 0


def _toy(shapes=((6, 6), (3, 3)), d=16, heads=2, points=2, seed=0):
    torch.manual_seed(seed)
    attn = MSDeformAttn(d_model=d, n_levels=len(shapes), n_heads=heads, n_points=points, spatial_shapes=shapes)
    for p in attn.parameters():  # random weights so every path matters
        torch.nn.init.normal_(p, std=0.2)
    s = sum(h * w for h, w in shapes)
    return attn, s


def test_module_forward_paths_padding_and_gradients():
    attn, s = _toy()
    q = torch.randn(2, 5, 16, requires_grad=True)
    x = torch.randn(2, s, 16, requires_grad=True)
    ref2 = torch.rand(2, 5, 2, 2)
    out = attn(q, ref2, x)
    assert out.shape == (2, 5, 16)
    out.square().sum().backward()
    assert q.grad.abs().sum() > 0 and x.grad.abs().sum() > 0 and attn.sampling_offsets.weight.grad.abs().sum() > 0
    ref4 = torch.cat([ref2, torch.rand(2, 5, 2, 2) * 0.3], -1)
    assert attn(q, ref4, x).shape == (2, 5, 16)
    # padded positions are ignored: changing their content leaves the output unchanged
    mask = torch.zeros(2, s, dtype=torch.bool)
    mask[:, 30:36] = True
    x2 = x.detach().clone()
    x2[:, 30:36] += 100
    a = attn(q, ref2, x.detach(), input_padding_mask=mask)
    b = attn(q, ref2, x2, input_padding_mask=mask)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError):
        attn(q, ref2, x, [(6, 6)])


def test_encoder_reference_points():
    valid = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.5, 1.0], [0.5, 1.0]]])
    ref = encoder_reference_points([(2, 4), (1, 2)], valid)
    assert ref.shape == (2, 10, 2, 2)
    assert torch.allclose(ref[0, 0, 0], torch.tensor([0.125, 0.25]))  # first pixel centre of level 0
    assert torch.allclose(ref[1, 1, 0], torch.tensor([0.375 / 0.5 * 0.5, 0.25]))  # normalised by valid width then rescaled


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_parity_at_another_batch_size(tmp_path, dynamo):
    ort = pytest.importorskip("onnxruntime")
    attn, s = _toy()
    attn.eval()

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, query, reference_points, value):
            return self.attn(query, reference_points, value)

    g = torch.Generator().manual_seed(0)
    example = (torch.randn(2, 5, 16, generator=g), torch.rand(2, 5, 2, 2, generator=g), torch.randn(2, s, 16, generator=g))
    path = tmp_path / "msda.onnx"
    axes = {"query": {0: "batch"}, "reference_points": {0: "batch"}, "value": {0: "batch"}, "out": {0: "batch"}}
    torch.onnx.export(Wrap(), example, str(path), dynamo=dynamo, opset_version=17, input_names=["query", "reference_points", "value"],
                      output_names=["out"], dynamic_axes=axes)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = (torch.randn(3, 5, 16, generator=g), torch.rand(3, 5, 2, 2, generator=g) * 1.2 - 0.1, torch.randn(3, s, 16, generator=g))
    got = sess.run(None, {"query": inputs[0].numpy(), "reference_points": inputs[1].numpy(), "value": inputs[2].numpy()})[0]
    with torch.no_grad():
        want = Wrap()(*inputs).numpy()
    assert got.shape == (3, 5, 16)
    assert np.abs(got - want).max() < 1e-4
