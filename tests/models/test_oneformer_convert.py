"""OneFormer converters: the official detectron2 key layout (names written out here from the
official code), transformers' `OneFormerForUniversalSegmentation` (logit parity on a tiny random
model), and timm backbones."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from zoo.models.oneformer.convert import convert_state_dict, detect_layout, load_transformers, to_official
from zoo.models.oneformer.model import OneFormer, preset_config

MICRO = preset_config("micro")
# a ConvNeXt variant of micro (timm convnext_tiny with small dims), for the ConvNeXt key maps
MICRO_CONVNEXT = dataclasses.replace(
    MICRO, backbone="convnext_tiny", backbone_kwargs={"dims": (16, 32, 64, 128), "depths": (1, 1, 2, 1)})


def _wb(prefix: str) -> list[str]:
    return [f"{prefix}.weight", f"{prefix}.bias"]


def _mha(prefix: str) -> list[str]:
    return [f"{prefix}.in_proj_weight", f"{prefix}.in_proj_bias", *_wb(f"{prefix}.out_proj")]


def official_names(config) -> set[str]:
    """Parameter names of the official OneFormer for `config`, from the official modules
    (D2SwinTransformer / D2ConvNeXt, MSDeformAttnPixelDecoder, ContrastiveMultiScaleMaskedTransformerDecoder,
    TextTransformer, criterion)."""
    depths = config.backbone_kwargs["depths"]
    names: list[str] = []
    if config.backbone.startswith("swin"):
        names += _wb("backbone.patch_embed.proj") + _wb("backbone.patch_embed.norm")
        for i, depth in enumerate(depths):
            for j in range(depth):
                p = f"backbone.layers.{i}.blocks.{j}"
                names += [f"{p}.attn.relative_position_bias_table"]
                for sub in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                    names += _wb(f"{p}.{sub}")
            if i < len(depths) - 1:
                names += [f"backbone.layers.{i}.downsample.reduction.weight"] + _wb(f"backbone.layers.{i}.downsample.norm")
    else:
        names += _wb("backbone.downsample_layers.0.0") + _wb("backbone.downsample_layers.0.1")
        for i, depth in enumerate(depths):
            if i > 0:
                names += _wb(f"backbone.downsample_layers.{i}.0") + _wb(f"backbone.downsample_layers.{i}.1")
            for j in range(depth):
                p = f"backbone.stages.{i}.{j}"
                names += [f"{p}.gamma"] + _wb(f"{p}.dwconv") + _wb(f"{p}.norm") + _wb(f"{p}.pwconv1") + _wb(f"{p}.pwconv2")
    for i in range(4):
        names += _wb(f"backbone.norm{i}")
    pd = "sem_seg_head.pixel_decoder"
    for i in range(3):
        names += _wb(f"{pd}.input_proj.{i}.0") + _wb(f"{pd}.input_proj.{i}.1")
    names += [f"{pd}.transformer.level_embed"]
    for layer in range(config.enc_layers):
        p = f"{pd}.transformer.encoder.layers.{layer}"
        for sub in ("self_attn.sampling_offsets", "self_attn.attention_weights", "self_attn.value_proj",
                    "self_attn.output_proj", "norm1", "linear1", "linear2", "norm2"):
            names += _wb(f"{p}.{sub}")
    names += _wb(f"{pd}.mask_features") + [f"{pd}.adapter_1.weight", f"{pd}.layer_1.weight"]
    names += _wb(f"{pd}.adapter_1.norm") + _wb(f"{pd}.layer_1.norm")
    pr = "sem_seg_head.predictor"
    for layer in range(config.query_dec_layers):
        p = f"{pr}.class_transformer.decoder.layers.{layer}"
        names += _mha(f"{p}.self_attn") + _mha(f"{p}.multihead_attn")
        for sub in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            names += _wb(f"{p}.{sub}")
    names += _wb(f"{pr}.class_transformer.decoder.norm")
    for layer in range(config.dec_layers):
        names += _mha(f"{pr}.transformer_self_attention_layers.{layer}.self_attn")
        names += _wb(f"{pr}.transformer_self_attention_layers.{layer}.norm")
        names += _mha(f"{pr}.transformer_cross_attention_layers.{layer}.multihead_attn")
        names += _wb(f"{pr}.transformer_cross_attention_layers.{layer}.norm")
        for sub in ("linear1", "linear2", "norm"):
            names += _wb(f"{pr}.transformer_ffn_layers.{layer}.{sub}")
    names += _wb(f"{pr}.decoder_norm") + [f"{pr}.query_embed.weight", f"{pr}.level_embed.weight"]
    names += _wb(f"{pr}.class_input_proj") + _wb(f"{pr}.class_embed")
    for k in range(3):
        names += _wb(f"{pr}.mask_embed.layers.{k}")
    names += _wb("task_mlp.layers.0") + _wb("task_mlp.layers.1")
    names += ["text_encoder.positional_embedding", "text_encoder.token_embedding.weight"] + _wb("text_encoder.ln_final")
    for layer in range(config.text_layers):
        p = f"text_encoder.transformer.resblocks.{layer}"
        names += _mha(f"{p}.attn") + _wb(f"{p}.ln_1") + _wb(f"{p}.mlp.c_fc") + _wb(f"{p}.mlp.c_proj") + _wb(f"{p}.ln_2")
    names += _wb("text_projector.layers.0") + _wb("text_projector.layers.1") + ["prompt_ctx.weight", "criterion.logit_scale"]
    return set(names)


def _random_state(config, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = OneFormer(config)
    return {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("config", [MICRO, MICRO_CONVNEXT], ids=["swin", "convnext"])
def test_official_layout_round_trip(config):
    ours = _random_state(config)
    official = to_official(ours, config)
    assert set(official) == official_names(config)
    # what a real model_final.pth also holds: persistent buffers, and everything under "model"
    extra = {"criterion.empty_weight": torch.ones(config.num_classes + 1)}
    if config.backbone.startswith("swin"):
        extra["backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    checkpoint = {f"model.{k}": v for k, v in {**official, **extra}.items()}
    assert detect_layout(checkpoint) == "official"
    back = convert_state_dict(checkpoint, config)
    assert set(back) == set(ours) and all(torch.equal(back[k], ours[k]) for k in ours)
    # Swin patch merging moves from the end of stage i (official) to the start of stage i + 1 (timm)
    if config.backbone.startswith("swin"):
        assert torch.equal(back["backbone.body.layers_1.downsample.reduction.weight"],
                           official["backbone.layers.0.downsample.reduction.weight"])
    # a model without the training-only text mapper takes the same checkpoint and drops it
    inference = dataclasses.replace(config, use_text_mapper=False)
    slim = convert_state_dict(checkpoint, inference)
    assert not any(k.startswith("text_mapper.") for k in slim) and len(slim) < len(back)
    # ... and an inference-only checkpoint (no text mapper) still fine-tunes: the mapper starts afresh
    no_text = {k: v for k, v in official.items() if not k.startswith(("text_encoder.", "text_projector.", "prompt_ctx", "criterion."))}
    full = convert_state_dict(no_text, config)
    assert set(full) == set(ours)
    assert all(torch.equal(full[k], ours[k]) for k in ours if not k.startswith("text_mapper."))
    assert math.isclose(full["text_mapper.logit_scale"].item(), math.log(1 / 0.07), rel_tol=1e-6)


def test_converter_errors_name_the_keys():
    official = to_official(_random_state(MICRO), MICRO)
    broken = dict(official)
    del broken["sem_seg_head.predictor.class_embed.weight"]
    broken["sem_seg_head.predictor.query_embed.weight"] = torch.zeros(7, MICRO.hidden_dim)
    broken["sem_seg_head.predictor.surprise.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        convert_state_dict(broken, MICRO)
    message = str(err.value)
    assert "missing (1): transformer_decoder.class_embed.weight" in message
    assert "transformer_decoder.query_embed.weight: got (7, 64), expected (24, 64)" in message
    assert "transformer_decoder.surprise.weight" in message
    with pytest.raises(ValueError, match="no tensor of this checkpoint"):
        convert_state_dict({"foo.bar": torch.zeros(1)}, MICRO)


def test_timm_backbone_loads_and_rest_stays_fresh():
    import timm

    torch.manual_seed(0)
    net = timm.create_model(MICRO.backbone, pretrained=False, **MICRO.backbone_kwargs)
    state = net.state_dict()  # the classifier layout: layers.N, final norm, head.fc
    assert detect_layout(state) == "timm"
    converted = convert_state_dict(state, MICRO)
    model = OneFormer(MICRO)
    model.load_state_dict(converted, strict=True)
    assert torch.equal(model.backbone.body.layers_2.blocks[1].attn.qkv.weight, net.layers[2].blocks[1].attn.qkv.weight)
    assert torch.equal(model.backbone.body.layers_3.downsample.reduction.weight, net.layers[3].downsample.reduction.weight)
    assert torch.equal(model.backbone.body.patch_embed.proj.weight, net.patch_embed.proj.weight)
    assert math.isclose(converted["text_mapper.logit_scale"].item(), math.log(1 / 0.07), rel_tol=1e-6)


def _tiny_transformers(kind: str, tmp_path):
    """A random transformers OneFormer (every tensor drawn at random, so zero-initialised parts count),
    saved with save_pretrained; is_training=True so the text mapper is built too (dropout 0)."""
    from transformers import ConvNextConfig, OneFormerForUniversalSegmentation, SwinConfig
    from transformers import OneFormerConfig as HFOneFormerConfig

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if kind == "swin":  # window 2 on 96 x 128: stage maps 24x32 ... 3x4; the last, padded to 4x4, has a shifted block (pad, then roll)
        backbone = SwinConfig(image_size=96, embed_dim=16, depths=[1, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=2,
                              drop_path_rate=0.0, out_features=stages)
    else:
        backbone = ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1], out_features=stages)
    config = HFOneFormerConfig(
        backbone_config=backbone, num_queries=8, hidden_dim=64, conv_dim=64, mask_dim=64, encoder_feedforward_dim=96,
        dim_feedforward=96, encoder_layers=2, decoder_layers=4, num_attention_heads=4, text_encoder_width=64,
        text_encoder_num_layers=1, text_encoder_n_ctx=2, is_training=True, num_labels=9, dropout=0.0)
    torch.manual_seed(0)
    hf = OneFormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
            else:
                p.normal_(0.0, 0.2 if p.dim() > 1 else 0.1)
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("kind", ["swin", "convnext"])
def test_transformers_parity(kind, tmp_path):
    hf = _tiny_transformers(kind, tmp_path)
    config, state = load_transformers(tmp_path)
    assert (config.num_classes, config.num_queries, config.dec_layers, config.enc_layers, config.n_ctx) == (9, 8, 3, 2, 2)
    assert config.use_text_mapper and config.text_heads == 1
    ours = OneFormer(config).eval()
    ours.load_state_dict(state, strict=True)

    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 96, 128, generator=gen)
    tasks = torch.randint(0, 49408, (2, 77), generator=gen)
    texts = torch.randint(1, 49407, (2, config.num_texts, 77), generator=gen)
    with torch.no_grad():
        ref = hf(pixel_values=images, task_inputs=tasks.float(), text_inputs=texts)
        out = ours(images, tasks, texts)
    assert (ref.class_queries_logits - out["pred_logits"]).abs().max() <= 1e-4
    assert (ref.masks_queries_logits - out["pred_masks"]).abs().max() <= 1e-4
    assert ref.masks_queries_logits.abs().max() > 1.0  # the comparison is not between near-zero maps
    for aux_ref, aux in zip(ref.auxiliary_predictions, out["aux_outputs"], strict=True):
        assert (aux_ref["class_queries_logits"] - aux["pred_logits"]).abs().max() <= 1e-4
        assert (aux_ref["masks_queries_logits"] - aux["pred_masks"]).abs().max() <= 1e-4
    assert (ref.transformer_decoder_contrastive_queries - out["contrastive_logits"]).abs().max() <= 1e-4
    assert torch.equal(state["text_mapper.logit_scale"], hf.criterion.logit_scale.detach())
    # transformers' text encoder skips the causal mask: ours matches it exactly only with the mask off
    assert (ref.text_queries - out["texts"]).abs().max() > 1e-2
    ours.text_mapper.text_encoder.causal = False
    with torch.no_grad():
        bidirectional = ours(images, tasks, texts)["texts"]
    assert (ref.text_queries - bidirectional).abs().max() <= 1e-4
