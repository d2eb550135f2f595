"""OneFormer networks: backbone, MSDeformAttn pixel decoder, task-conditioned query formulation,
masked-attention transformer decoder and the (training-only) text mapper.

Paper: Jain et al., "OneFormer: One Transformer to Rule Universal Image Segmentation", CVPR 2023
(arXiv:2211.06220). Sizes, module names and the order of operations follow the official code
(SHI-Labs/OneFormer `oneformer/oneformer_model.py`, `modeling/meta_arch/oneformer_head.py`,
`modeling/pixel_decoder/msdeformattn.py`, `modeling/transformer_decoder/{oneformer_transformer_decoder,
transformer,text_transformer}.py`, `configs/ade20k/*`), so an official checkpoint maps onto ours by
a few prefixes (see `convert.py`):

- backbone (paper Sec. 3, "backbone"): a timm model with `features_only`, res2..res5 at strides
  4/8/16/32, plus the official per-output LayerNorms (`norm0..3` of the D2 Swin / ConvNeXt
  wrappers). Swin runs the official D2 block order over timm's parameters (pad to a window
  multiple *then* roll, full window and shift at every stage, masks with -100), which timm's own
  forward does differently when a stage is not a window multiple (it rolls first, and shrinks
  windows larger than the map);
- pixel decoder (Sec. 3.2, from Mask2Former): 6 MSDeformAttn encoder layers (FFN 1024) over
  res3..res5 projected to conv_dim 256 with GroupNorm, sine positions + level embeddings, then one
  FPN level (lateral 1x1 + 3x3, GroupNorm) to res2 and a 1x1 conv to the 1/4 mask features;
- task token (Sec. 3.1): Q_task = MLP(77 -> 256 -> 256) over the 77 CLIP ids of "The task is
  {task}" read as floats (the official `self.task_mlp(tasks.float())`), LayerNorm'ed
  (`use_task_norm`, the decoder's own norm);
- query formulation (Sec. 3.1, Fig. 2): N-1 copies of the task token are the queries of a
  2-layer transformer decoder (FFN 2048, dropout 0.1) over the 1/4 mask features; the task token
  is appended, giving N task-conditioned queries Q. As in the official call
  `class_transformer(feats, None, query_embed[:-1], class_input_proj(mask_features), tasks)`,
  the attended *values* are the sine position map and the projected mask features only enter
  the keys (they are passed as the position argument);
- transformer decoder (Sec. 3.3, Mask2Former): 9 layers of masked cross-attention -> self-attention
  -> FFN 2048 over the 1/32, 1/16, 1/8 maps round robin; each layer's attention mask is the
  previous prediction resized to the next level and thresholded at sigmoid 0.5 (rows that would be
  fully masked attend everywhere); class head (num_classes + 1, last = no object) and a 3-layer
  mask MLP dotted with the mask features; 10 predictions (the queries' own + one per layer);
- text mapper (Sec. 3.2, training only): a CLIP-style text transformer (width 256, 6 layers,
  4 heads, context 77, vocab 49408, causal mask, EOT pooling), a 2-layer projector, and 16
  learnable context embeddings appended (Q_text, "texts"); logit_scale (init log(1/0.07)) of
  the query-text contrastive loss (Eq. 1) lives here too (the official keeps it in the criterion).

Pixel convention: `OneFormer.forward` and `OneFormerGraph` take images already normalised with
`config.pixel_mean` / `config.pixel_std`, which are in the detectron2 0-255 RGB convention of the
official configs; `normalize_images` turns [0, 1] RGB tensors into that input.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.nn.deformable_attention import MSDeformAttn, encoder_reference_points
from zoo.nn.position_encoding import PositionEmbeddingSine

# ADE20K panoptic, 150 classes in the contiguous order of the official
# `register_ade20k_panoptic.py` (ADE20K_150_CATEGORIES); 100 of them are things.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road, route", "bed", "window", "grass",
    "cabinet", "sidewalk, pavement", "person", "earth, ground", "door", "table", "mountain, mount",
    "plant", "curtain", "chair", "car", "water", "painting, picture", "sofa", "shelf", "house", "sea",
    "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock, stone", "wardrobe, closet, press",
    "lamp", "tub", "rail", "cushion", "base, pedestal, stand", "box", "column, pillar", "signboard, sign",
    "chest of drawers, chest, bureau, dresser", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator, icebox", "grandstand, covered stand", "path", "stairs", "runway",
    "case, display case, showcase, vitrine", "pool table, billiard table, snooker table", "pillow",
    "screen door, screen", "stairway, staircase", "river", "bridge, span", "bookcase", "blind, screen",
    "coffee table", "toilet, can, commode, crapper, pot, potty, stool, throne", "flower", "book", "hill",
    "bench", "countertop", "stove", "palm, palm tree", "kitchen island", "computer", "swivel chair", "boat",
    "bar", "arcade machine", "hovel, hut, hutch, shack, shanty", "bus", "towel", "light", "truck", "tower",
    "chandelier", "awning, sunshade, sunblind", "street lamp", "booth", "tv", "plane", "dirt track",
    "clothes", "pole", "land, ground, soil", "bannister, banister, balustrade, balusters, handrail",
    "escalator, moving staircase, moving stairway", "ottoman, pouf, pouffe, puff, hassock", "bottle",
    "buffet, counter, sideboard", "poster, posting, placard, notice, bill, card", "stage", "van", "ship",
    "fountain", "conveyer belt, conveyor belt, conveyer, conveyor, transporter", "canopy",
    "washer, automatic washer, washing machine", "plaything, toy", "pool", "stool", "barrel, cask",
    "basket, handbasket", "falls", "tent", "bag", "minibike, motorbike", "cradle", "oven", "ball",
    "food, solid food", "step, stair", "tank, storage tank", "trade name", "microwave", "pot", "animal",
    "bicycle", "lake", "dishwasher", "screen", "blanket, cover", "sculpture", "hood, exhaust hood", "sconce",
    "vase", "traffic light", "tray", "trash can", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass, drinking glass", "clock", "flag",
)
ADE20K_THING_IDS: tuple[int, ...] = (
    7, 8, 10, 12, 14, 15, 18, 19, 20, 22, 23, 24, 27, 30, 31, 32, 33, 35, 36, 37, 38, 39, 41, 42, 43, 44,
    45, 47, 49, 50, 53, 55, 56, 57, 58, 62, 64, 65, 66, 67, 69, 70, 71, 72, 73, 74, 75, 76, 78, 80, 81, 82,
    83, 85, 86, 87, 88, 89, 90, 92, 93, 95, 97, 98, 102, 103, 104, 107, 108, 110, 111, 112, 115, 116, 118,
    119, 120, 121, 123, 124, 125, 126, 127, 129, 130, 132, 133, 134, 135, 136, 137, 138, 139, 142, 143, 144,
    146, 147, 148, 149,
)


@dataclass
class OneFormerConfig:
    """Sizes of every part (defaults: the official ADE20K Swin-T config). `dec_layers` counts the
    masked-attention layers (official DEC_LAYERS 10 = 9 layers + the loss on the queries' own
    prediction), so the model makes `dec_layers + 1` predictions."""

    backbone: str = "swin_tiny_patch4_window7_224"  # timm model name
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: {"drop_path_rate": 0.3})
    num_classes: int = 150  # without the no-object class
    class_names: tuple[str, ...] = ADE20K_CLASSES
    thing_classes: tuple[int, ...] = ADE20K_THING_IDS  # contiguous label ids that are things
    num_queries: int = 150
    hidden_dim: int = 256
    conv_dim: int = 256
    mask_dim: int = 256
    enc_layers: int = 6  # MSDeformAttn encoder layers (SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS)
    enc_dim_feedforward: int = 1024  # hard-coded 1024 in the official pixel decoder
    enc_n_points: int = 4
    dec_layers: int = 9
    dim_feedforward: int = 2048
    nheads: int = 8
    dropout: float = 0.1  # pixel-decoder encoder and query transformer (the masked decoder uses 0)
    enforce_input_proj: bool = False
    use_task_norm: bool = True
    task_seq_len: int = 77
    task_mlp_layers: int = 2  # 77 -> 256 -> 256
    query_dec_layers: int = 2  # CLASS_DEC_LAYERS
    use_text_mapper: bool = True  # build the training-only text mapper (official MODEL.IS_TRAIN)
    text_width: int = 256
    text_layers: int = 6
    text_heads: int = 4  # official: width // 64
    text_context: int = 77
    vocab_size: int = 49408
    text_proj_layers: int = 2
    n_ctx: int = 16
    contrastive_temperature: float = 0.07
    image_size: int = 512  # the pipeline's square input side (ADE20K crop 512 Swin-T, 640 Swin-L/ConvNeXt-L)
    size_divisibility: int = 32
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # 0-255 RGB (detectron2)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    @property
    def num_texts(self) -> int:
        """Entries of the text list per image (num_queries - n_ctx, official `MAX_SEQ_LEN` texts)."""
        return self.num_queries - self.n_ctx


def preset_config(variant: str) -> OneFormerConfig:
    """The official ADE20K configs (`configs/ade20k/{swin,convnext}/*`), and `micro` for CPU tests:
    a 4-stage Swin with 16-d embeddings, 64-d transformer, 1 encoder / 3 decoder layers, 24 queries,
    a 1-layer text mapper and 4 context embeddings, over the 9 procedural shapes classes."""
    if variant == "micro":
        from zoo.data.shapes import categories

        cats = categories()
        return OneFormerConfig(
            backbone="swin_tiny_patch4_window7_224",
            backbone_kwargs={"embed_dim": 16, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 4, 8),
                             "window_size": 4, "drop_path_rate": 0.0},
            num_classes=len(cats),
            class_names=tuple(c["name"] for c in cats),
            thing_classes=tuple(i for i, c in enumerate(cats) if c["isthing"]),
            num_queries=24, hidden_dim=64, conv_dim=64, mask_dim=64, enc_layers=1, enc_dim_feedforward=128,
            dec_layers=3, dim_feedforward=128, nheads=4, query_dec_layers=1,
            text_width=64, text_layers=1, text_heads=1, n_ctx=4, image_size=128,
        )
    if variant == "swin-t":  # oneformer_swin_tiny_bs16_160k.yaml
        return OneFormerConfig()
    if variant == "swin-l":  # oneformer_swin_large_bs16_160k.yaml
        return OneFormerConfig(backbone="swin_large_patch4_window12_384", num_queries=250, image_size=640)
    if variant == "convnext-l":  # oneformer_convnext_large_bs16_160k.yaml (LSIT 1.0, drop path 0.4)
        return OneFormerConfig(backbone="convnext_large", backbone_kwargs={"drop_path_rate": 0.4, "ls_init_value": 1.0},
                               num_queries=250, image_size=640)
    raise KeyError(f"no OneFormer preset {variant!r} (micro, swin-t, swin-l, convnext-l)")


def normalize_images(images: Tensor, config: OneFormerConfig) -> Tensor:
    """[0, 1] RGB `(B, 3, H, W)` -> the model's input, (255 x - mean) / std (official
    `(x - pixel_mean) / pixel_std` on 0-255 images)."""
    mean = torch.tensor(config.pixel_mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(config.pixel_std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * 255.0 - mean) / std


# ---------------------------------------------------------------------------------------------
# Shared layers
# ---------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """Linear layers with ReLU between them (official `MLP`, keys `layers.{i}`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, outs))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class Attention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s parameters (`in_proj_weight`,
    `in_proj_bias`, `out_proj`), so official keys load unchanged, but batch-first and with
    `scaled_dot_product_attention` (exports to ONNX as plain MatMul/Softmax).

    `blocked` is a bool mask broadcastable to `(B, heads, Lq, Lk)`, True where a query may not look."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, blocked: Tensor | None = None) -> Tensor:
        b, lq, d = query.shape
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = F.linear(query, w_q, b_q).view(b, lq, self.heads, -1).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(b, key.shape[1], self.heads, -1).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(b, value.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if blocked is None else ~blocked,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, d))


def _xavier_(module: nn.Module) -> None:
    """Official `_reset_parameters`: Xavier-uniform on every weight with more than one dim."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def _c2_xavier_(conv: nn.Conv2d) -> None:
    """detectron2 `c2_xavier_fill`: Kaiming-uniform with a = 1, zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConvNorm(nn.Conv2d):
    """detectron2 `Conv2d` with a norm and activation after it: the weight keeps the conv's
    keys (`weight`), the norm sits under `.norm` (official `adapter_1.norm.weight`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(32, out_channels)
        self.relu = relu
        _c2_xavier_(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x) if self.relu else x


# ---------------------------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------------------------
def backbone_family(name: str) -> str:
    """"swin", "convnext" (official D2 wrappers with per-output norms) or "other" (plain timm features)."""
    lowered = name.lower()
    if lowered.startswith("swin") and "v2" not in lowered:
        return "swin"
    if lowered.startswith("convnext"):
        return "convnext"
    return "other"


def _swin_shift_mask(hp: int, wp: int, window: int, shift: int, device: torch.device) -> Tensor:
    """The official D2 Swin mask of a shifted window layer over a padded Hp x Wp map: regions
    [0, Hp - win), [Hp - win, Hp - shift), [Hp - shift, Hp) per axis; pairs of tokens from
    different regions in one window get -100. Returns `(num_windows, win*win, win*win)`."""
    rows = (torch.arange(hp, device=device) >= hp - window).long() + (torch.arange(hp, device=device) >= hp - shift).long()
    cols = (torch.arange(wp, device=device) >= wp - window).long() + (torch.arange(wp, device=device) >= wp - shift).long()
    region = (rows[:, None] * 3 + cols[None, :]).view(hp // window, window, wp // window, window)
    region = region.permute(0, 2, 1, 3).reshape(-1, window * window)
    different = region[:, None, :] != region[:, :, None]
    return different.float() * -100.0


class Backbone(nn.Module):
    """res2..res5 `(B, C_i, H/s, W/s)`, s = 4, 8, 16, 32, from a timm `features_only` model.

    Swin and ConvNeXt get the official wrappers' output LayerNorms (`norms[i]`, the D2 `norm{i}`).
    Swin is built with `always_partition=True` (full window and shift at every stage, as the
    official) and run block by block in the official order (see the module docstring)."""

    def __init__(self, name: str, kwargs: dict[str, Any] | None = None):
        super().__init__()
        import timm

        self.family = backbone_family(name)
        kw = dict(kwargs or {})
        if self.family == "swin":
            kw.setdefault("always_partition", True)
            kw.setdefault("strict_img_size", False)
        self.body = timm.create_model(name, pretrained=False, features_only=True, **kw)
        reductions = self.body.feature_info.reduction()
        channels = self.body.feature_info.channels()
        self.indices = [max(i for i, r in enumerate(reductions) if r == s) for s in (4, 8, 16, 32)]
        self.channels = [channels[i] for i in self.indices]
        if self.family == "swin":
            self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.channels)
        elif self.family == "convnext":
            from timm.layers import LayerNorm2d

            self.norms = nn.ModuleList(LayerNorm2d(c, eps=1e-6) for c in self.channels)
        else:
            self.norms = None

    def _swin_block(self, blk: nn.Module, x: Tensor) -> Tensor:
        """One official D2 Swin block over timm's parameters: x `(B, H, W, C)`."""
        from timm.models.swin_transformer import window_partition, window_reverse

        b, h, w, c = x.shape
        win, shift = blk.window_size[0], blk.shift_size[0]
        y = blk.norm1(x)
        pad_b, pad_r = (win - h % win) % win, (win - w % win) % win
        if pad_b or pad_r:
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))  # pad first, then roll (official order)
        hp, wp = h + pad_b, w + pad_r
        mask = None
        if shift > 0:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
            mask = _swin_shift_mask(hp, wp, win, shift, x.device).to(x.dtype)
        windows = window_partition(y, (win, win)).view(-1, win * win, c)
        windows = blk.attn(windows, mask=mask)
        y = window_reverse(windows.view(-1, win, win, c), (win, win), hp, wp)
        if shift > 0:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        if pad_b or pad_r:
            y = y[:, :h, :w, :]
        x = x + blk.drop_path1(y)
        return x + blk.drop_path2(blk.mlp(blk.norm2(x)))

    def _swin_forward(self, images: Tensor) -> list[Tensor]:
        ph, pw = self.body.patch_embed.patch_size
        h, w = images.shape[-2:]
        if h % ph or w % pw:
            images = F.pad(images, (0, (pw - w % pw) % pw, 0, (ph - h % ph) % ph))
        x = self.body.patch_embed(images)  # (B, H/4, W/4, C), patch norm applied
        feats = []
        for i in range(len(self.channels)):
            stage = getattr(self.body, f"layers_{i}")
            x = stage.downsample(x)  # timm merges patches at the start of a stage (official: end of the previous)
            for blk in stage.blocks:
                x = self._swin_block(blk, x)
            feats.append(self.norms[i](x).permute(0, 3, 1, 2).contiguous())
        return feats

    def forward(self, images: Tensor) -> list[Tensor]:
        if self.family == "swin":
            return self._swin_forward(images)
        feats = self.body(images)
        feats = [feats[i] for i in self.indices]
        if self.norms is not None:
            feats = [norm(f) for norm, f in zip(self.norms, feats)]
        return feats


# ---------------------------------------------------------------------------------------------
# Pixel decoder (Mask2Former MSDeformAttnPixelDecoder)
# ---------------------------------------------------------------------------------------------
class DeformEncoderLayer(nn.Module):
    """Deformable DETR encoder layer, post-norm (official `MSDeformAttnTransformerEncoderLayer`)."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        src = self.norm1(src + self.dropout1(self.self_attn(src + pos, reference_points, src, shapes)))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class DeformEncoder(nn.Module):
    """`layers`: the encoder stack (official `MSDeformAttnTransformerEncoder`)."""

    def __init__(self, layer: DeformEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))


class DeformTransformer(nn.Module):
    """Official `MSDeformAttnTransformerEncoderOnly`: level embeddings and the encoder."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, d_ffn: int, dropout: float, n_levels: int, n_points: int):
        super().__init__()
        self.encoder = DeformEncoder(DeformEncoderLayer(d_model, d_ffn, dropout, n_levels, nhead, n_points), num_layers)
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        _xavier_(self)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[Tensor], pos_embeds: list[Tensor]) -> Tensor:
        """srcs / pos `(B, C, H_l, W_l)` (pos may have batch 1) -> memory `(B, sum H_l W_l, C)`."""
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in srcs]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                         for lvl, p in enumerate(pos_embeds)], 1)
        # no padding masks (the official passes all-zero masks): valid ratios are 1, batch-independent
        ratios = torch.ones(1, len(shapes), 2, dtype=flat.dtype, device=flat.device)
        reference_points = encoder_reference_points(shapes, ratios)
        out = flat
        for layer in self.encoder.layers:
            out = layer(out, pos, reference_points, shapes)
        return out


class PixelDecoder(nn.Module):
    """Official `MSDeformAttnPixelDecoder` (Sec. 3.2): deformable encoder on res3..res5, FPN to res2.

    Returns (mask_features `(B, mask_dim, H/4, W/4)`, [1/32, 1/16, 1/8] maps `(B, conv_dim, ., .)`)."""

    def __init__(self, in_channels: list[int], config: OneFormerConfig):
        super().__init__()
        conv_dim = config.conv_dim
        self.num_levels = 3  # res3..res5 (DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in in_channels[::-1][: self.num_levels]  # res5, res4, res3
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = DeformTransformer(conv_dim, config.nheads, config.enc_layers, config.enc_dim_feedforward,
                                             config.dropout, self.num_levels, config.enc_n_points)
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_features = nn.Conv2d(conv_dim, config.mask_dim, kernel_size=1)
        _c2_xavier_(self.mask_features)
        # one extra FPN level: log2(8) - log2(common stride 4); official names adapter_1 / layer_1
        self.num_fpn_levels = len(in_channels) - self.num_levels
        for idx, c in enumerate(in_channels[: self.num_fpn_levels]):
            self.add_module(f"adapter_{idx + 1}", ConvNorm(c, conv_dim, 1))
            self.add_module(f"layer_{idx + 1}", ConvNorm(conv_dim, conv_dim, 3, relu=True))

    def forward(self, features: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        levels = features[::-1][: self.num_levels]  # low to high resolution
        srcs = [proj(x) for proj, x in zip(self.input_proj, levels)]
        pos = [self.pe_layer(x[:1]) for x in levels]  # positions do not depend on the image
        memory = self.transformer(srcs, pos)
        b = memory.shape[0]
        out = []
        for z, s in zip(memory.split([s.shape[-2] * s.shape[-1] for s in srcs], dim=1), srcs):
            out.append(z.transpose(1, 2).reshape(b, -1, s.shape[-2], s.shape[-1]))
        for idx in range(self.num_fpn_levels - 1, -1, -1):  # top-down to res2
            lateral = getattr(self, f"adapter_{idx + 1}")(features[idx])
            y = lateral + F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            out.append(getattr(self, f"layer_{idx + 1}")(y))
        return self.mask_features(out[-1]), out[: self.num_levels]


# ---------------------------------------------------------------------------------------------
# Transformer decoder (official ContrastiveMultiScaleMaskedTransformerDecoder)
# ---------------------------------------------------------------------------------------------
class QueryDecoderLayer(nn.Module):
    """DETR decoder layer, post-norm (official `transformer.TransformerDecoderLayer`)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = Attention(d_model, nhead, dropout)
        self.multihead_attn = Attention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, q, tgt)))
        tgt = self.norm2(tgt + self.dropout2(self.multihead_attn(tgt + query_pos, memory + pos, memory)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class QueryDecoder(nn.Module):
    def __init__(self, layer: QueryDecoderLayer, num_layers: int, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)


class QueryTransformer(nn.Module):
    """The query formulation transformer (official `class_transformer`: a DETR transformer with 0
    encoder layers and CLASS_DEC_LAYERS decoder layers, final LayerNorm)."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.decoder = QueryDecoder(QueryDecoderLayer(d_model, nhead, dim_feedforward, dropout), num_layers, d_model)
        _xavier_(self)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        for layer in self.decoder.layers:
            tgt = layer(tgt, memory, pos, query_pos)
        return self.decoder.norm(tgt)


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.self_attn = Attention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        _xavier_(self)

    def forward(self, tgt: Tensor, query_pos: Tensor) -> Tensor:
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, tgt))


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.multihead_attn = Attention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        _xavier_(self)

    def forward(self, tgt: Tensor, memory: Tensor, blocked: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        return self.norm(tgt + self.multihead_attn(tgt + query_pos, memory + pos, memory, blocked))


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        _xavier_(self)

    def forward(self, tgt: Tensor) -> Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class TransformerDecoder(nn.Module):
    """Task-conditioned query formulation (Sec. 3.1) + Mask2Former masked-attention decoder (Sec. 3.3).

    Official names: `class_transformer`, `transformer_{cross,self}_attention_layers`,
    `transformer_ffn_layers`, `decoder_norm`, `query_embed`, `level_embed`, `input_proj`,
    `class_input_proj`, `class_embed`, `mask_embed`."""

    def __init__(self, config: OneFormerConfig):
        super().__init__()
        d, heads = config.hidden_dim, config.nheads
        self.num_heads, self.num_layers, self.num_levels = heads, config.dec_layers, 3
        self.use_task_norm = config.use_task_norm
        self.pe_layer = PositionEmbeddingSine(d // 2, normalize=True)
        self.class_transformer = QueryTransformer(d, heads, config.query_dec_layers, config.dim_feedforward, config.dropout)
        self.transformer_self_attention_layers = nn.ModuleList(SelfAttentionLayer(d, heads) for _ in range(self.num_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(CrossAttentionLayer(d, heads) for _ in range(self.num_layers))
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(d, config.dim_feedforward) for _ in range(self.num_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.query_embed = nn.Embedding(config.num_queries, d)  # learnable query positions
        self.level_embed = nn.Embedding(self.num_levels, d)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_levels):
            if config.conv_dim != d or config.enforce_input_proj:
                conv = nn.Conv2d(config.conv_dim, d, kernel_size=1)
                _c2_xavier_(conv)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())
        self.class_input_proj = nn.Conv2d(config.mask_dim, d, kernel_size=1)
        _c2_xavier_(self.class_input_proj)
        self.class_embed = nn.Linear(d, config.num_classes + 1)
        self.mask_embed = MLP(d, d, config.mask_dim, 3)

    def prediction_heads(self, output: Tensor, mask_features: Tensor,
                         target_size: tuple[int, int] | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Class logits `(B, Q, K+1)`, mask logits `(B, Q, H/4, W/4)`, and the next layer's attention
        mask `(B, 1, Q, h*w)` (True = blocked: sigmoid < 0.5 after resizing to the next level;
        None after the last layer, where the official computes one that nothing reads)."""
        decoded = self.decoder_norm(output)
        outputs_class = self.class_embed(decoded)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        if target_size is None:
            return outputs_class, outputs_mask, None
        attn = F.interpolate(outputs_mask, size=target_size, mode="bilinear", align_corners=False)
        blocked = (attn.sigmoid().flatten(2) < 0.5).unsqueeze(1).detach()
        return outputs_class, outputs_mask, blocked

    def forward(self, features: list[Tensor], mask_features: Tensor, task: Tensor) -> dict[str, Any]:
        """features: [1/32, 1/16, 1/8] `(B, conv_dim, ., .)`; mask_features `(B, mask_dim, H/4, W/4)`;
        task `(B, hidden)` = Q_task from the task MLP."""
        b = mask_features.shape[0]
        sizes, srcs, poses = [], [], []
        for i, x in enumerate(features):
            sizes.append((int(x.shape[-2]), int(x.shape[-1])))
            poses.append(self.pe_layer(x[:1]).flatten(2).transpose(1, 2))  # (1, HW, C)
            srcs.append(self.input_proj[i](x).flatten(2).transpose(1, 2) + self.level_embed.weight[i][None, None])
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)  # (B, Q, C)

        # Sec. 3.1: Q = [Transformer(Q_task repeated N-1 times; mask features), Q_task]
        task = task.unsqueeze(1)  # (B, 1, C)
        if self.use_task_norm:
            task = self.decoder_norm(task)
        feats = self.pe_layer(mask_features[:1]).flatten(2).transpose(1, 2).expand(b, -1, -1)
        proj = self.class_input_proj(mask_features).flatten(2).transpose(1, 2)
        tgt = task.expand(-1, query_pos.shape[1] - 1, -1) if self.use_task_norm else torch.zeros_like(query_pos[:, :-1])
        # official argument order: the sine map is the memory (values), the projected features its "position"
        queries = self.class_transformer(tgt, feats, proj, query_pos[:, :-1])
        queries = torch.cat([queries, task], dim=1)  # (B, Q, C), also the contrastive query features

        output = queries
        classes, masks = [], []
        outputs_class, outputs_mask, blocked = self.prediction_heads(
            output, mask_features, sizes[0] if self.num_layers else None)
        classes.append(outputs_class)
        masks.append(outputs_mask)
        for i in range(self.num_layers):
            level = i % self.num_levels
            assert blocked is not None
            # a query whose mask is empty at this level attends everywhere (official fix-up)
            blocked = blocked & ~blocked.all(-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](output, srcs[level], blocked, poses[level], query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            last = i == self.num_layers - 1
            outputs_class, outputs_mask, blocked = self.prediction_heads(
                output, mask_features, None if last else sizes[(i + 1) % self.num_levels])
            classes.append(outputs_class)
            masks.append(outputs_mask)
        return {
            "pred_logits": classes[-1],
            "pred_masks": masks[-1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1])],
            "contrastive_logits": queries,
        }


# ---------------------------------------------------------------------------------------------
# Text mapper (training only)
# ---------------------------------------------------------------------------------------------
class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """CLIP text block, pre-norm (official `text_transformer.ResidualAttentionBlock`)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: Tensor, causal: Tensor | None) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, causal)
        return x + self.mlp(self.ln_2(x))


class TextTransformerLayers(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        proj_std, attn_std, fc_std = width ** -0.5 * (2 * layers) ** -0.5, width ** -0.5, (2 * width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class TextEncoder(nn.Module):
    """Official `TextTransformer`: token + position embeddings, causal pre-norm blocks, final
    LayerNorm, the feature at the EOT token (the largest id of each row). `causal` (default True, the
    paper and CLIP) can be switched off to reproduce transformers' port, which drops the mask."""

    def __init__(self, context_length: int, width: int, layers: int, heads: int, vocab_size: int):
        super().__init__()
        self.causal = True
        self.transformer = TextTransformerLayers(width, layers, heads)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.ln_final = nn.LayerNorm(width)
        self.token_embedding = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def forward(self, text: Tensor) -> Tensor:
        length = text.shape[1]
        x = self.token_embedding(text) + self.positional_embedding[:length]
        # causal mask, as CLIP and the official `build_attention_mask` (True = may not look ahead)
        causal = torch.ones(length, length, dtype=torch.bool, device=text.device).triu(1) if self.causal else None
        for block in self.transformer.resblocks:
            x = block(x, causal)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]


class TextMapper(nn.Module):
    """Sec. 3.2: Q_text = [projector(text encoder(T_pad)), context embeddings] `(B, N_text + n_ctx, D)`;
    `logit_scale` is the temperature of the contrastive loss (Eq. 1), init log(1 / 0.07)."""

    def __init__(self, config: OneFormerConfig):
        super().__init__()
        if config.n_ctx > 0 and config.text_width != config.hidden_dim:
            raise ValueError("the context embeddings are appended to projected texts unprojected (official): "
                             f"text_width ({config.text_width}) must equal hidden_dim ({config.hidden_dim})")
        self.text_encoder = TextEncoder(config.text_context, config.text_width, config.text_layers,
                                        config.text_heads, config.vocab_size)
        self.text_projector = MLP(config.text_width, config.hidden_dim, config.hidden_dim, config.text_proj_layers)
        self.prompt_ctx = nn.Embedding(config.n_ctx, config.text_width) if config.n_ctx > 0 else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.contrastive_temperature)))

    def forward(self, text_tokens: Tensor) -> Tensor:
        """text_tokens `(B, N, L)` int64 -> `(B, N + n_ctx, hidden)`."""
        b, n, length = text_tokens.shape
        texts = self.text_projector(self.text_encoder(text_tokens.reshape(b * n, length))).view(b, n, -1)
        if self.prompt_ctx is not None:
            texts = torch.cat([texts, self.prompt_ctx.weight.unsqueeze(0).expand(b, -1, -1)], dim=1)
        return texts


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class OneFormer(nn.Module):
    """OneFormer (Fig. 2). `backbone` (train it at 0.1 x the learning rate), `pixel_decoder`,
    `transformer_decoder`, `task_mlp`, `text_mapper` (None when `config.use_text_mapper` is off)."""

    def __init__(self, config: OneFormerConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.backbone, config.backbone_kwargs)
        self.pixel_decoder = PixelDecoder(self.backbone.channels, config)
        self.transformer_decoder = TransformerDecoder(config)
        self.task_mlp = MLP(config.task_seq_len, config.hidden_dim, config.hidden_dim, config.task_mlp_layers)
        self.text_mapper = TextMapper(config) if config.use_text_mapper else None

    def forward(self, images: Tensor, task_tokens: Tensor, text_tokens: Tensor | None = None) -> dict[str, Any]:
        """images `(B, 3, H, W)` normalised (`normalize_images`); task_tokens `(B, 77)` int64;
        text_tokens `(B, num_queries - n_ctx, 77)` int64 during training.

        Returns "pred_logits" `(B, Q, K+1)`, "pred_masks" `(B, Q, H/4, W/4)`, "aux_outputs" (the
        `dec_layers` earlier predictions, first to last), and with text tokens "contrastive_logits"
        `(B, Q, D)` (the task-conditioned queries), "texts" `(B, Q, D)` and "logit_scale" (scalar)."""
        features = self.backbone(images)
        mask_features, multi_scale = self.pixel_decoder(features)
        task = self.task_mlp(task_tokens.to(images.dtype))
        out = self.transformer_decoder(multi_scale, mask_features, task)
        contrastive = out.pop("contrastive_logits")
        if text_tokens is not None:
            if self.text_mapper is None:
                raise ValueError("text tokens given but this model has no text mapper (config.use_text_mapper=False)")
            out["contrastive_logits"] = contrastive
            out["texts"] = self.text_mapper(text_tokens)
            out["logit_scale"] = self.text_mapper.logit_scale
        return out


class OneFormerGraph(nn.Module):
    """The exportable inference graph: (normalised images `(B, 3, S, S)`, task tokens `(B, 77)` int64)
    -> (class logits `(B, Q, K+1)`, mask logits `(B, Q, S/4, S/4)`)."""

    def __init__(self, model: OneFormer):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, task_tokens: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(images, task_tokens)
        return out["pred_logits"], out["pred_masks"]


def parameter_counts(config: OneFormerConfig) -> dict[str, int]:
    """Parameters per part, counted on the meta device (no memory, any size). "inference" is the
    total without the training-only text mapper (the official test-time model)."""
    with torch.device("meta"):
        model = OneFormer(config)
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()
              if module is not None}
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["inference"] = counts["total"] - counts.get("text_mapper", 0)
    return counts
