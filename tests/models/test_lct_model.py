"""sLCT networks: parameter counts against the authors' configuration, shapes, the consistency
boundary, NsLN, and the attention / patch layouts against their defining formulas."""

import math

import pytest
import torch

from zoo.diffusion.consistency import consistency_scalings
from zoo.models.lct.model import (
    PRESETS,
    ADMUNet,
    DiT,
    LCTConfig,
    NonScalingLayerNorm,
    UNetBlock,
    build_model,
    build_network,
    count_parameters,
    preset_config,
    sincos_2d,
)

# Trainable parameters of the authors' own modules (quandao10/LCT `models/network_karras.py`
# DhariwalUNet and `models/network_dit.py` DiT_S_2 / DiT_B_2 with no_scale=True), instantiated on
# the meta device with the arguments `create_model_and_diffusion` passes for train_lct.sh
# (img_resolution 32, 4 channels in and out, label_dim 0, model_channels 128, channel_mult 1,2,3,4,
# channel_mult_emb 4, num_blocks 4, attn_resolutions 16,8, dropout 0) and for the DiT runs
# (input_size 32, in_channels 4, num_classes 0, learn_sigma False). Their DiT also holds frozen
# tensors we do not count: the sin-cos table (256 x hidden) and NsLN's unit q/k weights
# (DiT-B/2: 129,735,184 in all; DiT-S/2: 32,576,272). `micro`: their DhariwalUNet at our micro
# sizes. The same numbers are derived from the architecture facts by `adm_reference` /
# `dit_reference` below.
AUTHORS = {"adm": 151_587_844, "dit-s2": 32_476_432, "dit-b2": 129_537_040, "micro": 832_100}


def _gn(c):
    return 2 * c


def _conv(k, i, o):
    return k * k * i * o + o


def _lin(i, o, bias=True):
    return i * o + (o if bias else 0)


def adm_reference(cfg: LCTConfig) -> int:
    """EDM DhariwalUNet's parameter count from its definition: UNetBlock = GN(in) + conv3(in, out)
    + affine(emb -> 2 out) + GN(out) + conv3(out, out) [+ 1x1 skip if in != out]
    [+ GN(out) + 1x1 qkv (3 out) + 1x1 proj if attention with out // 64 heads > 0]."""
    ch, emb = cfg.model_channels, cfg.model_channels * cfg.channel_mult_emb

    def block(i, o, attn):
        n = _gn(i) + _conv(3, i, o) + _lin(emb, 2 * o) + _gn(o) + _conv(3, o, o) + (_conv(1, i, o) if i != o else 0)
        if attn and o // cfg.channels_per_head:
            n += _gn(o) + _conv(1, o, 3 * o) + _conv(1, o, o)
        return n

    total = _lin(ch, emb) + _lin(emb, emb) + cfg.num_classes * emb
    skips, cout = [], cfg.latent_channels
    for level, mult in enumerate(cfg.channel_mult):
        res = cfg.latent_size >> level
        if level == 0:
            total += _conv(3, cout, ch * mult)
            cout = ch * mult
        else:
            total += block(cout, cout, False)
        skips.append(cout)
        for _ in range(cfg.num_blocks):
            total += block(cout, ch * mult, res in cfg.attn_resolutions)
            cout = ch * mult
            skips.append(cout)
    for level, mult in reversed(list(enumerate(cfg.channel_mult))):
        res = cfg.latent_size >> level
        if level == len(cfg.channel_mult) - 1:
            total += block(cout, cout, True) + block(cout, cout, False)
        else:
            total += block(cout, cout, False)
        for _ in range(cfg.num_blocks + 1):
            total += block(cout + skips.pop(), ch * mult, res in cfg.attn_resolutions)
            cout = ch * mult
    hw = cfg.latent_size ** 2
    total += {"layer": 2 * cout * hw, "group": 2 * cout, "nonscaling": cout * hw}[cfg.out_norm]
    return total + _conv(3, cout, cfg.latent_channels)


def dit_reference(cfg: LCTConfig) -> int:
    """DiT with per-head q/k norms: patch conv, timestep MLP (256 -> D -> D), label table
    (classes + 1 rows), blocks (qkv, q/k norm, proj, MLP D -> 4D -> D, adaLN D -> 6D), final
    adaLN (D -> 2D) and linear (D -> p^2 C)."""
    d, p, c = cfg.hidden_size, cfg.patch_size, cfg.latent_channels
    hd = d // cfg.num_heads
    qk = 2 * (hd if cfg.norm == "nonscaling" else 2 * hd)
    inner = int(d * cfg.mlp_ratio)
    per_block = _lin(d, 3 * d) + qk + _lin(d, d) + _lin(d, inner) + _lin(inner, d) + _lin(d, 6 * d)
    return (_conv(p, c, d) + _lin(256, d) + _lin(d, d) + (cfg.num_classes + 1) * d + cfg.depth * per_block
            + _lin(d, 2 * d) + _lin(d, p * p * c))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_counts_on_meta(name):
    cfg = preset_config(name)
    with torch.device("meta"):
        model = build_model(cfg)
    n = count_parameters(model)
    reference = adm_reference(cfg) if cfg.arch == "adm" else dit_reference(cfg)
    assert n == reference
    if name in AUTHORS:
        assert n == AUTHORS[name]


def test_parameter_count_variants():
    for overrides in ({"num_classes": 10}, {"out_norm": "group"}, {"out_norm": "nonscaling"}):
        cfg = preset_config("adm", **overrides)
        with torch.device("meta"):
            assert count_parameters(build_network(cfg)) == adm_reference(cfg)
    assert adm_reference(preset_config("adm", num_classes=10)) == 151_592_964  # authors' with label_dim=10
    cfg = preset_config("dit-b2", norm="layer")
    with torch.device("meta"):
        assert count_parameters(build_network(cfg)) == dit_reference(cfg) == 129_538_576  # authors' nn.LayerNorm


@pytest.mark.parametrize("name", ["micro", "micro-dit"])
def test_micro_shapes_boundary_and_zero_init(name):
    torch.manual_seed(0)
    cfg = preset_config(name)
    model = build_model(cfg).eval()
    x = torch.randn(3, *cfg.latent_shape)
    sigma = torch.tensor([0.002, 1.0, 80.0])
    out = model(x, sigma)
    assert out.shape == x.shape
    # zero-initialised output layer: F = 0, so f = c_skip x (and exactly x at sigma_min)
    c_skip, _, _ = consistency_scalings(sigma)
    torch.testing.assert_close(out, c_skip.view(-1, 1, 1, 1) * x)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    out = model(x, sigma)
    assert torch.equal(out[0], x[0])  # boundary condition holds for any weights
    assert not torch.allclose(out[1:], c_skip[1:].view(-1, 1, 1, 1) * x[1:])
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["micro", "micro-dit"])
def test_class_conditional(name):
    torch.manual_seed(0)
    cfg = preset_config(name, num_classes=3)
    net = build_network(cfg).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(2, *cfg.latent_shape)
    t = torch.tensor([10.0, 10.0])
    a = net(x, t, torch.tensor([0, 0]))
    b = net(x, t, torch.tensor([2, 2]))
    assert not torch.allclose(a, b)
    assert net(x, t, None).shape == x.shape


def test_non_scaling_layer_norm():
    norm = NonScalingLayerNorm([2, 3])
    assert [n for n, _ in norm.named_parameters()] == ["bias"]
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]))
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]]])
    mean, var = x.mean(), x.var(unbiased=False)
    torch.testing.assert_close(norm(x), (x - mean) / torch.sqrt(var + 1e-5) + norm.bias)


def test_unet_attention_matches_edm_formula():
    torch.manual_seed(0)
    blk = UNetBlock(64, 64, emb_channels=16, attention=True, channels_per_head=32).eval()
    for p in blk.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, emb = torch.randn(2, 64, 4, 4), torch.randn(2, 16)
    # EDM: x_res = residual part; q,k,v = qkv(norm2(x)).reshape(B*heads, C/heads, 3, HW); softmax(q^T k / sqrt(c))
    h = blk.conv0(torch.nn.functional.silu(blk.norm0(x)))
    scale, shift = blk.affine(emb)[:, :, None, None].chunk(2, dim=1)
    h = torch.nn.functional.silu(shift + blk.norm1(h) * (scale + 1))
    y = blk.conv1(h) + x
    q, k, v = blk.qkv(blk.norm2(y)).reshape(2 * 2, 32, 3, 16).unbind(2)
    w = torch.einsum("ncq,nck->nqk", q, k / math.sqrt(32)).softmax(dim=2)
    a = torch.einsum("nqk,nck->ncq", w, v)
    expected = blk.proj(a.reshape(2, 64, 4, 4)) + y
    torch.testing.assert_close(blk(x, emb), expected, rtol=1e-5, atol=1e-5)


def test_resampling_blocks_and_skip_layout():
    cfg = preset_config("micro")
    net = ADMUNet(cfg)
    assert list(net.enc) == ["8x8_conv", "8x8_block0", "4x4_down", "4x4_block0"]
    assert list(net.dec) == ["4x4_in0", "4x4_in1", "4x4_block0", "4x4_block1", "8x8_up", "8x8_block0",
                             "8x8_block1"]
    assert net.dec["4x4_in0"].num_heads == 2 and net.enc["8x8_block0"].num_heads == 0
    blk = UNetBlock(4, 4, emb_channels=8, down=True)
    assert blk.skip is None  # same channels: EDM's skip is the resampling alone


def test_sincos_table_hand_values_and_unpatchify():
    table = sincos_2d(4, 2)  # quarter = 1, omega = [1]; token 1 is (row 0, column 1)
    torch.testing.assert_close(table[1], torch.tensor([math.sin(1), math.cos(1), 0.0, 1.0]))
    torch.testing.assert_close(table[2], torch.tensor([0.0, 1.0, math.sin(1), math.cos(1)]))
    cfg = preset_config("micro-dit")
    net = DiT(cfg)
    x = torch.randn(2, 4, 8, 8)
    g, p = 4, 2
    tokens = x.reshape(2, 4, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(2, g * g, p * p * 4)
    torch.testing.assert_close(net.unpatchify(tokens), x)


def test_config_checks():
    with pytest.raises(ValueError):
        LCTConfig(arch="vit")
    with pytest.raises(ValueError):
        LCTConfig(out_norm="batch")
    with pytest.raises(KeyError):
        preset_config("huge")


def test_consistency_graph_exports_to_onnx(tmp_path):
    """f(x, sigma) is one graph: exported at batch 2 (TorchScript exporter, the fast one here; the
    dynamo exporter was checked by hand too), run by onnxruntime at batch 3."""
    import numpy as np
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model(preset_config("micro")).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "f.onnx"
    torch.onnx.export(model, (torch.randn(2, 4, 8, 8), torch.tensor([1.0, 20.0])), str(path), dynamo=False,
                      opset_version=17, input_names=["x", "sigma"], output_names=["x0"],
                      dynamic_axes={"x": {0: "batch"}, "sigma": {0: "batch"}, "x0": {0: "batch"}})
    x, sigma = torch.randn(3, 4, 8, 8), torch.tensor([0.002, 2.0, 80.0])
    out = ort.InferenceSession(str(path)).run(None, {"x": x.numpy(), "sigma": sigma.numpy()})[0]
    with torch.no_grad():
        ref = model(x, sigma).numpy()
    assert np.abs(out - ref).max() < 1e-4
    np.testing.assert_array_equal(out[0], x[0].numpy())  # the boundary condition survives export
