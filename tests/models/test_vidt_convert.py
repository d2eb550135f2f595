"""ViDT converters: official naver-ai/vidt checkpoints, Microsoft / naver-ai ImageNet Swin and
timm Swin state dicts into our ViDT, with random-weight checkpoints built in those layouts."""

from __future__ import annotations

import argparse
import dataclasses
import re

import numpy as np
import pytest
import torch

from zoo.models.vidt.convert import convert_state_dict, detect_layout, expected_shapes, load_official
from zoo.models.vidt.model import ViDT, ViDTConfig, ViDTGraph, count_parameters, official_unused_parameters, preset_config
from zoo.weights import flatten_state

MICRO = preset_config("micro")
MICRO_PLUS = preset_config("micro", plus=True)


def official_layout(c: ViDTConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every key of the official `Detector(...).state_dict()` for config `c`, with its shape and kind
    ("param", "unused" = a parameter forward never reads, "buffer", "alias" = the same tensor as
    another key), written from the official module structure (methods/swin_w_ram.py SwinTransformer
    + finetune_det, methods/vidt/detector.py Detector, deformable_transformer.py, fpn_fusion.py)."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}

    def add(name, shape, kind="param"):
        out[name] = (tuple(shape), kind)

    def linear(name, i, o, bias=True, kind="param"):
        add(f"{name}.weight", (o, i), kind)
        if bias:
            add(f"{name}.bias", (o,), kind)

    def norm(name, d, kind="param"):
        add(f"{name}.weight", (d,), kind)
        add(f"{name}.bias", (d,), kind)

    def conv(name, i, o, k=1, kind="param"):
        add(f"{name}.weight", (o, i, k, k), kind)
        add(f"{name}.bias", (o,), kind)

    def mlp(name, i, h, o, kind="param"):
        for j, (a, b) in enumerate(((i, h), (h, h), (h, o))):
            linear(f"{name}.layers.{j}", a, b, kind=kind)

    e, p, q, ws, d = c.embed_dim, c.patch_size, c.det_tokens, c.window_size, c.hidden_dim
    dims = [e * 2**i for i in range(len(c.depths))]
    add("backbone.patch_embed.proj.weight", (e, 3, p, p))
    add("backbone.patch_embed.proj.bias", (e,))
    norm("backbone.patch_embed.norm", e)
    add("backbone.det_token", (1, q, e))
    add("backbone.det_pos_embed", (1, q, d))
    for i, dim in enumerate(dims):
        for j in range(c.depths[i]):
            b = f"backbone.layers.{i}.blocks.{j}"
            norm(f"{b}.norm1", dim)
            add(f"{b}.attn.relative_position_bias_table", ((2 * ws - 1) ** 2, c.num_heads[i]))
            add(f"{b}.attn.relative_position_index", (ws * ws, ws * ws), "buffer")
            linear(f"{b}.attn.qkv", dim, 3 * dim)
            linear(f"{b}.attn.proj", dim, dim)
            norm(f"{b}.norm2", dim)
            linear(f"{b}.mlp.fc1", dim, int(dim * c.mlp_ratio))
            linear(f"{b}.mlp.fc2", int(dim * c.mlp_ratio), dim)
            linear(f"{b}.det_pos_linear", d, dim)
        out_dim = 2 * dim if i + 1 < len(dims) else d  # the official hard-codes 256 = pos_dim
        ds = f"backbone.layers.{i}.downsample"
        linear(f"{ds}.reduction", 4 * dim, out_dim, bias=False)
        norm(f"{ds}.norm", 4 * dim)
        linear(f"{ds}.expansion", dim, out_dim, bias=False, kind="unused")
        norm(f"{ds}.norm2", dim, kind="unused")
    for i in (1, 2, 3):
        norm(f"backbone.norm{i}", dims[i], kind="unused")
    # neck
    add("transformer.level_embed", (c.num_levels, d), "unused")
    linear("transformer.reference_points", d, 2)
    h, lv, pt = c.dec_heads, c.num_levels, c.dec_points
    for k in range(c.dec_layers):
        b = f"transformer.decoder.layers.{k}"
        linear(f"{b}.cross_attn.sampling_offsets", d, h * lv * pt * 2)
        linear(f"{b}.cross_attn.attention_weights", d, h * lv * pt)
        linear(f"{b}.cross_attn.value_proj", d, d)
        linear(f"{b}.cross_attn.output_proj", d, d)
        norm(f"{b}.norm1", d)
        add(f"{b}.self_attn.in_proj_weight", (3 * d, d))
        add(f"{b}.self_attn.in_proj_bias", (3 * d,))
        linear(f"{b}.self_attn.out_proj", d, d)
        norm(f"{b}.norm2", d)
        linear(f"{b}.linear1", d, c.dec_ffn)
        linear(f"{b}.linear2", c.dec_ffn, d)
        norm(f"{b}.norm3", d)
    if c.token_label:
        linear("transformer.enc_output", d, d)
        norm("transformer.enc_output_norm", d)
        linear("transformer.token_embed", d, c.num_classes)
    # heads: num_pred = dec_layers + 1 entries; clones with box refinement, one shared module otherwise
    n_pred = c.dec_layers + 1
    for k in range(n_pred):
        kind = "param" if c.box_refine or k == 0 else "alias"
        linear(f"class_embed.{k}", d, c.num_classes, kind=kind)
        mlp(f"bbox_embed.{k}", d, d, 4, kind=kind)
        if c.box_refine:  # decoder.bbox_embed = detector.bbox_embed
            mlp(f"transformer.decoder.bbox_embed.{k}", d, d, 4, kind="alias")
        if c.uqr:
            mlp(f"vector_embed.{k}", d, c.vector_hidden_dim, c.vector_dim, kind="param" if k == 0 else "alias")
        if c.iou_aware:
            mlp(f"iou_embed.{k}", d, d, 1, kind=kind)
    chans = dims[1:] + [d]
    if c.epff:
        top = len(chans) - 1
        m = c.epff_bottleneck
        for i, ch in enumerate(chans):
            ms = "fusion.multi_scaler"
            conv(f"{ms}.layer_{i}_rn", ch, d)
            norm(f"{ms}.p_norm_{i}", d)
            kind = "unused" if i == top else "param"
            conv(f"{ms}.refinenet_{i}.smoothing", d, d, kind=kind)
            for unit, ukind in (("resConfUnit1", kind), ("resConfUnit2", "param")):
                conv(f"{ms}.refinenet_{i}.{unit}.conv1", d, m, kind=ukind)
                conv(f"{ms}.refinenet_{i}.{unit}.conv2", m, m, 3, kind=ukind)
                conv(f"{ms}.refinenet_{i}.{unit}.conv3", m, d, kind=ukind)
    else:
        for i, ch in enumerate(chans):
            conv(f"input_proj.{i}.0", ch, d)
            norm(f"input_proj.{i}.1", d)
    conv("tgt_proj.0", dims[-1], d)
    norm("tgt_proj.1", d)
    conv("query_pos_proj.0", d, d)
    norm("query_pos_proj.1", d)
    return out


def _alias_source(name: str) -> str:
    """The key an official alias shares its tensor with."""
    name = name.replace("transformer.decoder.bbox_embed.", "bbox_embed.")
    return re.sub(r"^(class_embed|bbox_embed|vector_embed|iou_embed)\.\d+\.", r"\1.0.", name)


_NORM_WEIGHT = re.compile(r"(norm\d*|norm_\d+|_proj\.\d*\.?1)\.weight$")


def random_official(c: ViDTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official layout (std 0.02, norm scales around 1), aliases shared."""
    gen = torch.Generator().manual_seed(seed)
    layout = official_layout(c)
    state = {k: torch.randn(s, generator=gen) * 0.02 + (1.0 if _NORM_WEIGHT.search(k) else 0.0)
             for k, (s, kind) in layout.items() if kind != "alias"}
    for k, (_, kind) in layout.items():
        if kind == "buffer":
            state[k] = torch.arange(int(np.prod(layout[k][0]))).view(layout[k][0])
        if kind == "alias":
            source = _alias_source(k)
            if source not in state:  # box refinement: the decoder alias of the detector's own head
                source = k.replace("transformer.decoder.", "")
            state[k] = state[source]
    return state


CONFIGS = {
    "vidt": MICRO,
    "vidt_plus": MICRO_PLUS,
    "no_refine": dataclasses.replace(MICRO_PLUS, box_refine=False),
    "cross_every_stage": dataclasses.replace(MICRO, cross_attention_stages=(0, 1, 2, 3)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_official_round_trip(name):
    cfg = CONFIGS[name]
    official = random_official(cfg)
    assert detect_layout(official) == "official"
    ours = convert_state_dict({"model": official, "epoch": torch.tensor(3)}, cfg)
    model = ViDT(cfg)
    model.load_state_dict(ours, strict=True)
    mine = model.state_dict()
    layout = official_layout(cfg)
    for key, (_, kind) in layout.items():
        if kind != "param":
            continue
        ours_key = re.sub(r"^(vector_embed)\.0\.", r"\1.", key)
        if not cfg.box_refine:
            ours_key = re.sub(r"^(class_embed|bbox_embed|iou_embed)\.0\.", r"\1.", ours_key)
        assert torch.equal(mine[ours_key], official[key]), key
    # every official parameter is ours or one that forward never reads
    n_official = sum(int(np.prod(s)) for s, kind in layout.values() if kind in ("param", "unused"))
    assert n_official == count_parameters(model) + official_unused_parameters(cfg)
    # our own layout passes through unchanged
    again = convert_state_dict(model.state_dict(), cfg)
    assert all(torch.equal(again[k], v) for k, v in mine.items())


@pytest.mark.parametrize("variant,plus", [("tiny", False), ("base", True)])
def test_official_paper_size_key_map(variant, plus):
    """The map on the full official layout, on the meta device (shapes only)."""
    cfg = preset_config(variant, plus)
    with torch.device("meta"):
        official = {k: torch.empty(s) for k, (s, _) in official_layout(cfg).items()}
    ours = convert_state_dict(official, cfg)
    assert {k: v.shape for k, v in ours.items()} == dict(expected_shapes(cfg))


def test_mismatch_names_keys():
    official = random_official(MICRO)
    del official["transformer.reference_points.weight"]
    official["transformer.extra.weight"] = torch.zeros(1)
    official["class_embed.0.bias"] = torch.zeros(7)
    with pytest.raises(ValueError) as err:
        convert_state_dict(official, MICRO)
    text = str(err.value)
    assert "missing (1): transformer.reference_points.weight" in text
    assert "unexpected (1): transformer.extra.weight" in text
    assert "class_embed.0.bias: got (7,), expected (6,)" in text
    # a ViDT+ checkpoint for a ViDT config names the ViDT+ parts
    with pytest.raises(ValueError, match="fusion.multi_scaler"):
        convert_state_dict(random_official(MICRO_PLUS), MICRO)


def test_load_official_checkpoint_files(tmp_path):
    official = random_official(MICRO)
    path = tmp_path / "vidt_micro.pth"
    # the official main.py saves args (an argparse.Namespace) beside the weights
    torch.save({"model": official, "epoch": 49, "args": argparse.Namespace(method="vidt", det_token_num=32)}, path)
    state = load_official(path, MICRO)
    assert torch.equal(state["backbone.det_token"], official["backbone.det_token"])
    # zoo.weights flattens nested checkpoints to "model.backbone...", "optimizer.state..." keys
    flat = flatten_state({"model": official, "optimizer": {"state": {"0": {"exp_avg": torch.zeros(3)}}}})
    assert torch.equal(convert_state_dict(flat, MICRO)["backbone.det_token"], official["backbone.det_token"])
    from safetensors.torch import save_file

    st_path = tmp_path / "vidt_micro.safetensors"
    save_file({k: v.contiguous() for k, v in official.items() if not k.startswith("transformer.decoder.bbox_embed.")}, str(st_path))
    state = load_official(st_path, MICRO)
    assert torch.equal(state["transformer.reference_points.bias"], official["transformer.reference_points.bias"])


def _timm_swin(cfg: ViDTConfig, img_size: int):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, embed_dim=cfg.embed_dim, depths=cfg.depths,
                             num_heads=cfg.num_heads, window_size=cfg.window_size, img_size=img_size).eval()


def test_timm_swin_gives_the_same_patch_features():
    """timm's Swin and our RAM backbone agree on every [PATCH] map once the weights are mapped:
    the PATCH path of RAM is plain Swin in every stage, the cross-attention stage included."""
    cfg = dataclasses.replace(MICRO, depths=(2, 2, 2, 2))  # shifted windows in every stage
    size = 256  # every stage larger than the window (timm shrinks windows that cover a whole map)
    swin = _timm_swin(cfg, size)
    state = swin.state_dict()
    assert detect_layout(state) == "timm" and "head.fc.weight" in state
    ours = convert_state_dict(state, cfg)
    model = ViDT(cfg).eval()
    model.load_state_dict(ours, strict=True)
    torch.testing.assert_close(model.backbone.layers[0].downsample.reduction.weight, state["layers.1.downsample.reduction.weight"])
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = swin.forward_intermediates(x, indices=[1, 2, 3], norm=False, intermediates_only=True)
        feats, _, _ = model.backbone(x)
    for a, b in zip(feats[:3], ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # the Microsoft / naver-ai layout (merging at the end of a stage, buffers stored) maps the same way
    ms = {}
    for k, v in state.items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        ms[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else k.replace("head.fc.", "head.")] = v
    ms["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    assert detect_layout(ms) == "swin"
    from_ms = convert_state_dict({"model": ms}, cfg, base=model)
    assert all(torch.equal(from_ms[k], v) for k, v in model.state_dict().items())


def test_timm_swin_tiny_layout_fills_the_detector():
    """The real timm swin_tiny key set maps onto ViDT-tiny's backbone; the rest comes from `base`."""
    timm = pytest.importorskip("timm")
    cfg = preset_config("tiny")
    with torch.device("meta"):
        state = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).state_dict()
        base = ViDT(cfg).state_dict()
    ours = convert_state_dict(state, cfg, base=base)
    assert {k: v.shape for k, v in ours.items()} == dict(expected_shapes(cfg))
    assert ours["backbone.layers.2.blocks.5.attn.qkv.weight"] is state["layers.2.blocks.5.attn.qkv.weight"]
    assert ours["backbone.det_token"] is base["backbone.det_token"]
    assert ours["backbone.layers.3.downsample.reduction.weight"] is base["backbone.layers.3.downsample.reduction.weight"]
    with pytest.raises(ValueError, match="mis-shaped"):
        convert_state_dict(state, preset_config("nano"), base=base)


@pytest.mark.slow  # torch.export with a dynamic batch: 10-15 s of CPU
def test_converted_official_weights_export_to_onnx(tmp_path):
    """Official checkpoint -> our ViDT -> ONNX (dynamo, opset 18, dynamic batch) -> ONNX Runtime at batch 3."""
    ort = pytest.importorskip("onnxruntime")
    official = random_official(MICRO, seed=2)
    model = ViDT(MICRO)
    model.load_state_dict(convert_state_dict(official, MICRO))
    graph = ViDTGraph(model).eval()
    path = tmp_path / "vidt_micro.onnx"
    batch = torch.export.Dim("batch", min=1, max=16)
    x2 = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.onnx.export(graph, (x2,), str(path), dynamo=True, opset_version=18, input_names=["images"],
                          output_names=["logits", "boxes"], dynamic_shapes=({0: batch},), optimize=False, verbose=False)
        x = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(4))
        logits, boxes = graph(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_boxes = session.run(None, {"images": x.numpy()})
    assert onnx_logits.shape == (3, MICRO.det_tokens, MICRO.num_classes) and onnx_boxes.shape == (3, MICRO.det_tokens, 4)
    assert np.abs(onnx_logits - logits.numpy()).max() <= 1e-4
    assert np.abs(onnx_boxes - boxes.numpy()).max() <= 1e-4
