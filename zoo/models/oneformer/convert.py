"""Load OneFormer weights from the official detectron2 checkpoints, from transformers'
`OneFormerForUniversalSegmentation` folders, and timm backbones, into `OneFormer`.

Our module names mirror the official ones (see model.py), so the official map is mostly prefixes:

    official (SHI-Labs/OneFormer, `model_final.pth["model"]`)   ours
    backbone.patch_embed.*                                        backbone.body.patch_embed.*
    backbone.layers.{i}.blocks.*    (Swin)                        backbone.body.layers_{i}.blocks.*
    backbone.layers.{i}.downsample.*                              backbone.body.layers_{i+1}.downsample.*
    backbone.downsample_layers.0.{k} / .{i}.{k}  (ConvNeXt)      backbone.body.stem_{k} / stages_{i}.downsample.{k}
    backbone.stages.{i}.{j}.{dwconv,pwconv1,pwconv2}              backbone.body.stages_{i}.blocks.{j}.{conv_dw,mlp.fc1,mlp.fc2}
    backbone.norm{i}                                              backbone.norms.{i}
    sem_seg_head.pixel_decoder.*                                  pixel_decoder.*
    sem_seg_head.predictor.*                                      transformer_decoder.*
    task_mlp.*                                                    task_mlp.*
    text_encoder.* / text_projector.* / prompt_ctx.weight         text_mapper.{text_encoder,text_projector,prompt_ctx}.*
    criterion.logit_scale                                         text_mapper.logit_scale
    (buffers relative_position_index, criterion.empty_weight)     dropped

The text mapper's keys are dropped when the config has no text mapper (`use_text_mapper=False`),
and a checkpoint without them (an inference-only export) gets a freshly initialised text mapper
(OneFormer trains it from scratch anyway).
The official R50 backbone (detectron2 ResNet) is not mapped.

transformers (5.x, `save_pretrained` layout; the in-memory names of its refactored Swin are accepted
too) departs from the original in ways that matter when comparing:
- it ignores `pixel_mask` (so do we and the official decoder: no padding masks anywhere);
- its text encoder builds the causal mask but never passes it to attention (the text transformer
  runs bidirectionally). We apply the causal mask as the paper / official code / CLIP do. This only
  changes the training-time text features, never the inference logits;
- its decoder self-attention stores separate q/k/v projections (we concatenate them into
  `in_proj_weight`), its Swin stores separate query/key/value (concatenated into timm's `qkv`);
- its transformer-module input projections are a plain Python list (not registered), so a config
  with conv_dim != hidden_dim (or enforce_input_proj) has unsaved random projections: refused;
- its Swin shrinks a window to the feature map (and drops the shift) when a stage is not larger
  than the window; the official (and ours) keeps the full window and shift. Inputs whose last stage
  is larger than the window give identical results.
- pixel values: its image processor normalises with the same mean/std on [0, 1] images.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.weights import meta_shapes, preview_names

from .model import ADE20K_CLASSES, ADE20K_THING_IDS, OneFormer, OneFormerConfig, TextMapper, backbone_family

log = logging.getLogger(__name__)
_DROP = re.compile(r"(relative_position_index|(^|\.)attn_mask|^criterion\.empty_weight|^pixel_(mean|std))$")

# (regex on the source key, replacement: a template, a function of the match, or None to drop)
Rule = tuple[str, str | Callable[[re.Match[str]], str] | None]


def expected_shapes(config: OneFormerConfig) -> dict[str, torch.Size]:
    """Our state dict's names and shapes, built on the meta device."""
    return meta_shapes(lambda: OneFormer(config))


def _apply(state: Mapping[str, Tensor], rules: list[Rule]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename keys by the first matching rule. Replacements ending in `#q|#k|#v` are concatenated
    (q, k, v order) into one tensor. Returns (renamed, source keys no rule matched)."""
    out: dict[str, Tensor] = {}
    parts: dict[str, dict[str, Tensor]] = {}
    unmatched = []
    compiled = [(re.compile(p), r) for p, r in rules]
    for key, value in state.items():
        if _DROP.search(key):
            continue
        for pattern, repl in compiled:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            if repl is not None:
                new = repl(match) if callable(repl) else match.expand(repl)
                if "#" in new:
                    name, part = new.split("#")
                    parts.setdefault(name, {})[part] = value
                else:
                    out[new] = value
            break
        else:
            unmatched.append(key)
    for name, qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            unmatched.append(f"{name} (only {'/'.join(sorted(qkv))} of q/k/v)")
            continue
        out[name] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out, unmatched


def _next_stage(prefix: str) -> Callable[[re.Match[str]], str]:
    """Original Swin (official, transformers) merges patches at the end of stage i, timm at the
    start of stage i + 1: `...layers.{i}.downsample.X` -> `{prefix}layers_{i+1}.downsample.X`."""
    return lambda m: f"{prefix}layers_{int(m.group(1)) + 1}.downsample.{m.group(2)}"


# ---------------------------------------------------------------------------------------------
# Key rules
# ---------------------------------------------------------------------------------------------
def _official_backbone_rules(family: str) -> list[Rule]:
    if family == "swin":
        return [
            (r"backbone\.patch_embed\.(.*)", r"backbone.body.patch_embed.\1"),
            (r"backbone\.layers\.(\d+)\.blocks\.(.*)", r"backbone.body.layers_\1.blocks.\2"),
            (r"backbone\.layers\.(\d+)\.downsample\.(.*)", _next_stage("backbone.body.")),
            (r"backbone\.norm(\d)\.(.*)", r"backbone.norms.\1.\2"),
        ]
    if family == "convnext":
        return [
            (r"backbone\.downsample_layers\.0\.(\d)\.(.*)", r"backbone.body.stem_\1.\2"),
            (r"backbone\.downsample_layers\.(\d)\.(\d)\.(.*)", r"backbone.body.stages_\1.downsample.\2.\3"),
            (r"backbone\.stages\.(\d)\.(\d+)\.dwconv\.(.*)", r"backbone.body.stages_\1.blocks.\2.conv_dw.\3"),
            (r"backbone\.stages\.(\d)\.(\d+)\.pwconv1\.(.*)", r"backbone.body.stages_\1.blocks.\2.mlp.fc1.\3"),
            (r"backbone\.stages\.(\d)\.(\d+)\.pwconv2\.(.*)", r"backbone.body.stages_\1.blocks.\2.mlp.fc2.\3"),
            (r"backbone\.stages\.(\d)\.(\d+)\.(norm\..*|gamma)", r"backbone.body.stages_\1.blocks.\2.\3"),
            (r"backbone\.norm(\d)\.(.*)", r"backbone.norms.\1.\2"),
        ]
    return []


_OFFICIAL_HEAD_RULES: list[Rule] = [
    (r"sem_seg_head\.pixel_decoder\.(.*)", r"pixel_decoder.\1"),
    (r"sem_seg_head\.predictor\.(.*)", r"transformer_decoder.\1"),
    (r"task_mlp\.(.*)", r"task_mlp.\1"),
    (r"(text_encoder|text_projector|prompt_ctx)\.(.*)", r"text_mapper.\1.\2"),
    (r"criterion\.logit_scale", "text_mapper.logit_scale"),
]


# transformers source prefixes (after "model.") and our target prefixes
_ENC = r"model\.pixel_level_module\.encoder\.(?:swin\.)?"  # transformers 5 nests its Swin under .swin in memory
_BLK = _ENC + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_OUR_BLK = r"backbone.body.layers_\1.blocks.\2."
_CNX = _ENC + r"encoder\.stages\.(\d)\.layers\.(\d+)\."
_OUR_CNX = r"backbone.body.stages_\1.blocks.\2."
_PIX = r"model\.pixel_level_module\.decoder\."
_PIX_ENC = _PIX + r"encoder\.layers\.(\d+)\."
_OUR_PIX_ENC = r"pixel_decoder.transformer.encoder.layers.\1."
_DEC = r"model\.transformer_module\.decoder\."
_DEC_SELF = _DEC + r"layers\.(\d+)\.self_attn\."
_OUR_SELF = r"transformer_decoder.transformer_self_attention_layers.\1."
_TXT = r"model\.text_mapper\.text_encoder\.transformer\.layers\.(\d+)\."
_OUR_TXT = r"text_mapper.text_encoder.transformer.resblocks.\1."

_HF_RULES: list[Rule] = [
    # Swin backbone (the saved legacy names and transformers 5 in-memory names)
    (_ENC + r"embeddings\.patch_embeddings\.projection\.(.*)", r"backbone.body.patch_embed.proj.\1"),
    (_ENC + r"embeddings\.norm\.(.*)", r"backbone.body.patch_embed.norm.\1"),
    (_BLK + r"layernorm_before\.(.*)", _OUR_BLK + r"norm1.\3"),
    (_BLK + r"layernorm_after\.(.*)", _OUR_BLK + r"norm2.\3"),
    (_BLK + r"attention\.(?:self\.|relative_position_bias\.)relative_position_bias_table", _OUR_BLK + "attn.relative_position_bias_table"),
    (_BLK + r"attention\.(?:self\.query|q_proj)\.(.*)", _OUR_BLK + r"attn.qkv.\3#q"),
    (_BLK + r"attention\.(?:self\.key|k_proj)\.(.*)", _OUR_BLK + r"attn.qkv.\3#k"),
    (_BLK + r"attention\.(?:self\.value|v_proj)\.(.*)", _OUR_BLK + r"attn.qkv.\3#v"),
    (_BLK + r"attention\.(?:output\.dense|o_proj)\.(.*)", _OUR_BLK + r"attn.proj.\3"),
    (_BLK + r"(?:intermediate\.dense|mlp\.fc1)\.(.*)", _OUR_BLK + r"mlp.fc1.\3"),
    (_BLK + r"(?:output\.dense|mlp\.fc2)\.(.*)", _OUR_BLK + r"mlp.fc2.\3"),
    (_ENC + r"encoder\.layers\.(\d+)\.downsample\.(.*)", _next_stage("backbone.body.")),
    (_ENC + r"layernorm\.(.*)", None),  # the classifier's final norm, unused by the backbone
    # ConvNeXt backbone
    (_ENC + r"embeddings\.patch_embeddings\.(weight|bias)", r"backbone.body.stem_0.\1"),
    (_ENC + r"embeddings\.layernorm\.(.*)", r"backbone.body.stem_1.\1"),
    (_ENC + r"encoder\.stages\.(\d)\.downsampling_layer\.(\d)\.(.*)", r"backbone.body.stages_\1.downsample.\2.\3"),
    (_CNX + r"dwconv\.(.*)", _OUR_CNX + r"conv_dw.\3"),
    (_CNX + r"layernorm\.(.*)", _OUR_CNX + r"norm.\3"),
    (_CNX + r"pwconv1\.(.*)", _OUR_CNX + r"mlp.fc1.\3"),
    (_CNX + r"pwconv2\.(.*)", _OUR_CNX + r"mlp.fc2.\3"),
    (_CNX + r"layer_scale_parameter", _OUR_CNX + "gamma"),
    # the per-output norms, stage1..4 -> 0..3
    (r"model\.pixel_level_module\.encoder\.hidden_states_norms\.stage(\d)\.(.*)",
     lambda m: f"backbone.norms.{int(m.group(1)) - 1}.{m.group(2)}"),
    # pixel decoder
    (_PIX + r"level_embed", "pixel_decoder.transformer.level_embed"),
    (_PIX + r"input_projections\.(.*)", r"pixel_decoder.input_proj.\1"),
    (_PIX_ENC + r"self_attn\.(.*)", _OUR_PIX_ENC + r"self_attn.\2"),
    (_PIX_ENC + r"self_attn_layer_norm\.(.*)", _OUR_PIX_ENC + r"norm1.\2"),
    (_PIX_ENC + r"fc1\.(.*)", _OUR_PIX_ENC + r"linear1.\2"),
    (_PIX_ENC + r"fc2\.(.*)", _OUR_PIX_ENC + r"linear2.\2"),
    (_PIX_ENC + r"final_layer_norm\.(.*)", _OUR_PIX_ENC + r"norm2.\2"),
    (_PIX + r"mask_projection\.(.*)", r"pixel_decoder.mask_features.\1"),
    (_PIX + r"(adapter_\d+|layer_\d+)\.0\.weight", r"pixel_decoder.\1.weight"),
    (_PIX + r"(adapter_\d+|layer_\d+)\.1\.(.*)", r"pixel_decoder.\1.norm.\2"),
    # transformer module
    (r"model\.transformer_module\.queries_embedder\.weight", "transformer_decoder.query_embed.weight"),
    (r"model\.transformer_module\.level_embed\.weight", "transformer_decoder.level_embed.weight"),
    (_DEC + r"query_transformer\.(.*)", r"transformer_decoder.class_transformer.\1"),
    (_DEC + r"decoder_norm\.(.*)", r"transformer_decoder.decoder_norm.\1"),
    (_DEC + r"layers\.(\d+)\.cross_attn\.(.*)", r"transformer_decoder.transformer_cross_attention_layers.\1.\2"),
    (_DEC_SELF + r"self_attn\.([qkv])_proj\.weight", _OUR_SELF + r"self_attn.in_proj_weight#\2"),
    (_DEC_SELF + r"self_attn\.([qkv])_proj\.bias", _OUR_SELF + r"self_attn.in_proj_bias#\2"),
    (_DEC_SELF + r"self_attn\.out_proj\.(.*)", _OUR_SELF + r"self_attn.out_proj.\2"),
    (_DEC_SELF + r"norm\.(.*)", _OUR_SELF + r"norm.\2"),
    (_DEC + r"layers\.(\d+)\.ffn\.(.*)", r"transformer_decoder.transformer_ffn_layers.\1.\2"),
    (_DEC + r"query_input_projection\.(.*)", r"transformer_decoder.class_input_proj.\1"),
    (_DEC + r"class_embed\.(.*)", r"transformer_decoder.class_embed.\1"),
    (_DEC + r"mask_embed\.layers\.(\d)\.0\.(.*)", r"transformer_decoder.mask_embed.layers.\1.\2"),
    (r"model\.task_encoder\.task_mlp\.layers\.(\d)\.0\.(.*)", r"task_mlp.layers.\1.\2"),
    # text mapper
    (_TXT + r"self_attn\.(.*)", _OUR_TXT + r"attn.\2"),
    (_TXT + r"layer_norm1\.(.*)", _OUR_TXT + r"ln_1.\2"),
    (_TXT + r"layer_norm2\.(.*)", _OUR_TXT + r"ln_2.\2"),
    (_TXT + r"mlp\.fc1\.(.*)", _OUR_TXT + r"mlp.c_fc.\2"),
    (_TXT + r"mlp\.fc2\.(.*)", _OUR_TXT + r"mlp.c_proj.\2"),
    (r"model\.text_mapper\.text_encoder\.(positional_embedding|ln_final\..*|token_embedding\..*)", r"text_mapper.text_encoder.\1"),
    (r"model\.text_mapper\.text_projector\.layers\.(\d)\.0\.(.*)", r"text_mapper.text_projector.layers.\1.\2"),
    (r"model\.text_mapper\.prompt_ctx\.weight", "text_mapper.prompt_ctx.weight"),
    (r"criterion\.logit_scale", "text_mapper.logit_scale"),
]


def _timm_rules(family: str) -> list[Rule]:
    """A timm model's own state dict (classifier layout) or its features_only layout."""
    if family == "swin":
        return [(r"patch_embed\.(.*)", r"backbone.body.patch_embed.\1"),
                (r"layers[._](\d+)\.(.*)", r"backbone.body.layers_\1.\2"),
                (r"(norm|head)\..*", None)]
    if family == "convnext":
        return [(r"stem[._](\d)\.(.*)", r"backbone.body.stem_\1.\2"),
                (r"stages[._](\d)\.(.*)", r"backbone.body.stages_\1.\2"),
                (r"(norm_pre|head)\..*", None)]
    return [(r"(.*)", r"backbone.body.\1")]


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------
def _strip(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """Tensors only; drop a DataParallel / wrapper prefix; the official `{"model": {...}}` file
    flattened by zoo.weights reads as `model.backbone...`, which we unwrap too."""
    flat = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    for prefix in ("module.", "_orig_mod."):
        if flat and all(k.startswith(prefix) for k in flat):
            flat = {k[len(prefix):]: v for k, v in flat.items()}
    if any(k.startswith("model.sem_seg_head.") for k in flat):
        flat = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in flat.items()}
    return flat


def detect_layout(state: Mapping[str, Any]) -> str:
    """"ours", "official", "transformers" or "timm" (a backbone only)."""
    keys = list(_strip(state))
    if any(k.startswith("sem_seg_head.") for k in keys):
        return "official"
    if any(".pixel_level_module." in f".{k}" for k in keys):
        return "transformers"
    if any(k.startswith(("pixel_decoder.", "transformer_decoder.")) for k in keys):
        return "ours"
    return "timm"


def _check(converted: dict[str, Tensor], unmatched: list[str], config: OneFormerConfig, layout: str,
           fill: Callable[[], dict[str, Tensor]] | None = None) -> dict[str, Tensor]:
    """Complete, verify and order a converted state dict. The training-only text mapper is dropped
    when the config has none, and initialised afresh when the checkpoint has none (OneFormer trains
    it from scratch; inference-only exports leave it out). `fill` supplies every other missing
    tensor (a backbone-only checkpoint)."""
    shapes = expected_shapes(config)
    if not config.use_text_mapper:
        converted = {k: v for k, v in converted.items() if not k.startswith("text_mapper.")}
    elif layout != "ours":
        text_keys = [k for k in shapes if k.startswith("text_mapper.")]
        if not any(k in converted for k in text_keys):
            fresh = {f"text_mapper.{k}": v for k, v in TextMapper(config).state_dict().items()}
            converted.update(fresh)
            log.info("OneFormer: the %s checkpoint has no text mapper; it starts from a fresh initialisation", layout)
        elif "text_mapper.logit_scale" not in converted:
            converted["text_mapper.logit_scale"] = torch.tensor(math.log(1.0 / config.contrastive_temperature))
    missing = sorted(set(shapes) - set(converted))
    if fill is not None and missing:
        fresh = fill()
        converted.update({k: fresh[k] for k in missing})
        log.info("OneFormer: %d tensors not in the %s checkpoint keep a fresh initialisation", len(missing), layout)
        missing = []
    unexpected = sorted(set(converted) - set(shapes)) + sorted(unmatched)
    misshaped = [f"{k}: got {tuple(converted[k].shape)}, expected {tuple(s)}" for k, s in shapes.items()
                 if k in converted and converted[k].shape != s]
    if missing or unexpected or misshaped:
        parts = [f"cannot load this {layout} OneFormer checkpoint into backbone={config.backbone!r}, "
                 f"num_classes={config.num_classes}, num_queries={config.num_queries}, hidden_dim={config.hidden_dim}, "
                 f"use_text_mapper={config.use_text_mapper}"]
        for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if names:
                parts.append(f"{label} ({len(names)}): {preview_names(names)}")
        raise ValueError("; ".join(parts))
    return {k: converted[k].contiguous() for k in shapes}


def _fresh_state(config: OneFormerConfig) -> dict[str, Tensor]:
    return OneFormer(config).state_dict()


def convert_state_dict(state: Mapping[str, Any], config: OneFormerConfig) -> dict[str, Tensor]:
    """Any accepted layout -> `OneFormer(config).state_dict()` names and shapes.

    (a) the official detectron2 checkpoint's "model" dict (or the whole file flattened), (b) a
    transformers `OneFormerForUniversalSegmentation` state dict, (c) a timm backbone state dict:
    the backbone loads, every other tensor keeps a fresh random initialisation (fine-tuning from
    an ImageNet backbone); (d) our own layout. Raises ValueError naming missing, unexpected and
    mis-shaped keys."""
    flat = _strip(state)
    layout = detect_layout(flat)
    family = backbone_family(config.backbone)
    if layout == "ours":
        return _check(dict(flat), [], config, layout)
    if layout == "official":
        if family == "other":
            raise ValueError(f"the official {config.backbone!r} backbone layout is not mapped (Swin and ConvNeXt are)")
        renamed, unmatched = _apply(flat, _official_backbone_rules(family) + _OFFICIAL_HEAD_RULES)
        return _check(renamed, unmatched, config, layout)
    if layout == "transformers":
        renamed, unmatched = _apply(flat, _HF_RULES)
        return _check(renamed, unmatched, config, layout)
    rules = _timm_rules(family)
    if family == "swin" and "layers.0.downsample.reduction.weight" in flat:  # original Microsoft Swin layout
        rules = [(r"layers\.(\d+)\.downsample\.(.*)", _next_stage("backbone.body."))] + rules
    renamed, unmatched = _apply(flat, rules)
    if not renamed:
        raise ValueError("no tensor of this checkpoint maps onto OneFormer (not ours, official, transformers or timm "
                         f"{config.backbone!r}); first keys: {preview_names(list(flat))}")
    return _check(renamed, unmatched, config, "timm", fill=lambda: _fresh_state(config))


def to_official(state: Mapping[str, Tensor], config: OneFormerConfig) -> dict[str, Tensor]:
    """Our state dict -> the official detectron2 names (the inverse of `convert_state_dict` for
    the official layout; buffers such as `relative_position_index` are not produced)."""
    family = backbone_family(config.backbone)
    rules: list[Rule] = [
        (r"pixel_decoder\.(.*)", r"sem_seg_head.pixel_decoder.\1"),
        (r"transformer_decoder\.(.*)", r"sem_seg_head.predictor.\1"),
        (r"task_mlp\.(.*)", r"task_mlp.\1"),
        (r"text_mapper\.logit_scale", "criterion.logit_scale"),
        (r"text_mapper\.(.*)", r"\1"),
        (r"backbone\.norms\.(\d)\.(.*)", r"backbone.norm\1.\2"),
    ]
    if family == "swin":
        rules += [(r"backbone\.body\.patch_embed\.(.*)", r"backbone.patch_embed.\1"),
                  (r"backbone\.body\.layers_(\d+)\.blocks\.(.*)", r"backbone.layers.\1.blocks.\2"),
                  (r"backbone\.body\.layers_(\d+)\.downsample\.(.*)",
                   lambda m: f"backbone.layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}")]
    elif family == "convnext":
        rules += [(r"backbone\.body\.stem_(\d)\.(.*)", r"backbone.downsample_layers.0.\1.\2"),
                  (r"backbone\.body\.stages_(\d)\.downsample\.(\d)\.(.*)", r"backbone.downsample_layers.\1.\2.\3"),
                  (r"backbone\.body\.stages_(\d)\.blocks\.(\d+)\.conv_dw\.(.*)", r"backbone.stages.\1.\2.dwconv.\3"),
                  (r"backbone\.body\.stages_(\d)\.blocks\.(\d+)\.mlp\.fc1\.(.*)", r"backbone.stages.\1.\2.pwconv1.\3"),
                  (r"backbone\.body\.stages_(\d)\.blocks\.(\d+)\.mlp\.fc2\.(.*)", r"backbone.stages.\1.\2.pwconv2.\3"),
                  (r"backbone\.body\.stages_(\d)\.blocks\.(\d+)\.(.*)", r"backbone.stages.\1.\2.\3")]
    else:
        raise ValueError(f"the official layout of {config.backbone!r} is not mapped")
    renamed, unmatched = _apply(state, rules)
    if unmatched:
        raise ValueError(f"keys with no official name: {preview_names(unmatched)}")
    return renamed


# ---------------------------------------------------------------------------------------------
# transformers folders
# ---------------------------------------------------------------------------------------------
_TIMM_SWIN = {(96, (2, 2, 6, 2), 7): "swin_tiny_patch4_window7_224", (96, (2, 2, 18, 2), 7): "swin_small_patch4_window7_224",
              (128, (2, 2, 18, 2), 12): "swin_base_patch4_window12_384", (192, (2, 2, 18, 2), 12): "swin_large_patch4_window12_384"}
_TIMM_CONVNEXT = {((192, 384, 768, 1536), (3, 3, 27, 3)): "convnext_large", ((256, 512, 1024, 2048), (3, 3, 27, 3)): "convnext_xlarge",
                  ((128, 256, 512, 1024), (3, 3, 27, 3)): "convnext_base", ((96, 192, 384, 768), (3, 3, 9, 3)): "convnext_tiny"}


def _backbone_from_hf(bb: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind = bb.get("model_type", "swin")
    if kind == "swin":
        if bb.get("use_absolute_embeddings"):
            raise ValueError("Swin with absolute position embeddings is not supported")
        embed, depths, window = bb.get("embed_dim", 96), tuple(bb.get("depths", (2, 2, 6, 2))), bb.get("window_size", 7)
        kwargs = {"embed_dim": embed, "depths": depths, "num_heads": tuple(bb.get("num_heads", (3, 6, 12, 24))),
                  "window_size": window, "mlp_ratio": bb.get("mlp_ratio", 4.0), "qkv_bias": bb.get("qkv_bias", True),
                  "patch_size": bb.get("patch_size", 4), "drop_path_rate": bb.get("drop_path_rate", 0.3)}
        return _TIMM_SWIN.get((embed, depths, window), "swin_tiny_patch4_window7_224"), kwargs
    if kind == "convnext":
        dims, depths = tuple(bb.get("hidden_sizes", (96, 192, 384, 768))), tuple(bb.get("depths", (3, 3, 9, 3)))
        kwargs = {"dims": dims, "depths": depths, "ls_init_value": bb.get("layer_scale_init_value", 1e-6),
                  "drop_path_rate": bb.get("drop_path_rate", 0.0)}
        return _TIMM_CONVNEXT.get((dims, depths), "convnext_tiny"), kwargs
    raise ValueError(f"transformers backbone {kind!r} is not supported (swin and convnext are)")


def config_from_transformers(hf: dict[str, Any], processor: dict[str, Any] | None = None) -> OneFormerConfig:
    """Our config from a transformers `OneFormerConfig` dict (config.json), and optionally its
    image processor's preprocessor_config.json (class names, thing ids, mean/std, size)."""
    for key, want in (("pre_norm", False), ("norm", "GN"), ("common_stride", 4), ("layer_norm_eps", 1e-5)):
        if hf.get(key, want) != want:
            raise ValueError(f"transformers config {key}={hf[key]!r} is not supported (only {want!r}, as the official)")
    if hf.get("conv_dim", 256) != hf.get("hidden_dim", 256) or hf.get("enforce_input_proj", False):
        raise ValueError("transformers keeps the decoder input projections in a plain list (never saved): "
                         "only conv_dim == hidden_dim without enforce_input_proj can be loaded")
    name, kwargs = _backbone_from_hf(hf.get("backbone_config") or {})
    id2label = hf.get("id2label") or {}
    num_classes = len(id2label) if id2label else hf.get("num_labels", 150)
    names = tuple(id2label[k] for k in sorted(id2label, key=int)) if id2label else ADE20K_CLASSES[:num_classes]
    things: tuple[int, ...] = ADE20K_THING_IDS if names == ADE20K_CLASSES else ()
    width = hf.get("text_encoder_width", 256)
    kw: dict[str, Any] = {}
    if processor:
        meta = processor.get("metadata") or {}
        if meta.get("class_names"):
            names = tuple(meta["class_names"])
        if "thing_ids" in meta:
            things = tuple(int(i) for i in meta["thing_ids"])
        if processor.get("image_mean"):
            kw["pixel_mean"] = tuple(float(m) * 255.0 for m in processor["image_mean"])
        if processor.get("image_std"):
            kw["pixel_std"] = tuple(float(s) * 255.0 for s in processor["image_std"])
        size = processor.get("size") or {}
        if isinstance(size, dict) and size.get("shortest_edge"):
            kw["image_size"] = int(size["shortest_edge"])
    return OneFormerConfig(
        backbone=name, backbone_kwargs=kwargs, num_classes=num_classes, class_names=names, thing_classes=things,
        num_queries=hf.get("num_queries", 150), hidden_dim=hf.get("hidden_dim", 256), conv_dim=hf.get("conv_dim", 256),
        mask_dim=hf.get("mask_dim", 256), enc_layers=hf.get("encoder_layers", 6),
        enc_dim_feedforward=hf.get("encoder_feedforward_dim", 1024), dec_layers=hf.get("decoder_layers", 10) - 1,
        dim_feedforward=hf.get("dim_feedforward", 2048), nheads=hf.get("num_attention_heads", 8),
        dropout=float(hf.get("dropout", 0.1)), use_task_norm=hf.get("use_task_norm", True),
        task_seq_len=hf.get("task_seq_len", 77), query_dec_layers=hf.get("query_dec_layers", 2),
        use_text_mapper=bool(hf.get("is_training", False)), text_width=width,
        text_layers=hf.get("text_encoder_num_layers", 6), text_heads=max(1, width // 64),
        text_context=hf.get("text_encoder_context_length", 77), vocab_size=hf.get("text_encoder_vocab_size", 49408),
        text_proj_layers=hf.get("text_encoder_proj_layers", 2), n_ctx=hf.get("text_encoder_n_ctx", 16),
        contrastive_temperature=hf.get("contrastive_temperature") or 0.07, **kw,
    )


def load_transformers(folder: str | Path) -> tuple[OneFormerConfig, dict[str, Tensor]]:
    """(our config, our state dict) from a transformers `save_pretrained` folder (config.json +
    model.safetensors or pytorch_model.bin; preprocessor_config.json is read when present)."""
    folder = Path(folder)
    hf = json.loads((folder / "config.json").read_text())
    if hf.get("model_type") != "oneformer":
        raise ValueError(f"{folder} holds a {hf.get('model_type')!r} model, not oneformer")
    proc_path = folder / "preprocessor_config.json"
    processor = json.loads(proc_path.read_text()) if proc_path.exists() else None
    config = config_from_transformers(hf, processor)
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").exists():
        state = torch.load(str(folder / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")
    return config, convert_state_dict(state, config)
