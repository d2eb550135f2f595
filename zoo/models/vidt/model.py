"""ViDT and ViDT+ networks: Swin Transformer with the Reconfigured Attention Module (RAM), the
encoder-free deformable neck decoder and the detection heads; ViDT+'s EPFF, UQR, IoU-aware and
token-labeling heads behind config switches.

Papers: Song et al., "ViDT: An Efficient and Effective Fully Transformer-based Object Detector",
ICLR 2022 (arXiv 2110.03921), and "An Extendable, Efficient and Effective Transformer-based Object
Detector" (ViDT+, arXiv 2204.07962). Facts (sizes, formulas, module names) follow the official
code, naver-ai/vidt branch vidt-plus (Apache-2.0): `methods/swin_w_ram.py`,
`methods/vidt/detector.py`, `methods/vidt/deformable_transformer.py`, `methods/vidt/fpn_fusion.py`,
`arguments.py`. Parameter names are the official ones, so `convert.py`'s key map only drops the
official model's never-used parameters and de-duplicates its shared heads.

Data flow (ViDT Sec. 3, Fig. 3; ViDT+ by module name, since we could not check its section numbers
offline: "Efficient Pyramid Feature Fusion" (EPFF), "Unified Query Representation" (UQR), the
IoU-aware and token-labeling losses):
- backbone (`SwinRAM`): [PATCH] tokens (Swin) and 1 x Q learnable [DET] tokens go through the four
  Swin stages together. RAM (Sec. 3.1, Fig. 4) splits one shared qkv / proj Linear pair into three
  attentions: PATCH x PATCH (shifted windows + relative position bias), DET x DET (global, every
  stage) and DET x [PATCH, DET] (global, only in `cross_attention_stages`, default the last).
  Outputs the multi-scale [PATCH] maps at 1/8, 1/16, 1/32 and the last stage's extra reduction to
  `hidden_dim` channels at 1/64, the final [DET] tokens and their learnable position embedding.
- neck (Sec. 3.2): 1x1 projections + GroupNorm of all levels (ViDT) or ViDT+'s EPFF, and
  a decoder of `dec_layers` layers: DET self-attention, multi-scale deformable cross-attention to
  the [PATCH] levels (Eq. 1), FFN; reference points sigmoid(Linear(query_pos)); iterative box
  refinement (Deformable DETR, Sec. 4.2 / App. A.4).
- heads: class Linear (sigmoid focal; `num_classes` logits, no no-object logit), 3-layer box MLP,
  one prediction per decoder layer plus one from the backbone's own [DET] tokens (Sec. 3.3,
  "auxiliary decoding loss"); ViDT+: UQR vector MLP, IoU-aware MLP and token-labeling
  Linear over the [PATCH] tokens (ViDT+ IoU-aware and token-labeling losses).

Our choices where the official code is silent or does something we leave out:
- The backbone is initialised like Swin itself (truncated normal 0.02 for Linear weights), since
  the official code always loads ImageNet weights over PyTorch's defaults.
- The official model creates parameters its forward never uses (PatchMerging.expansion / norm2,
  the backbone's norm1-3, the transformer's level_embed, the top EPFF block's smoothing conv and
  first residual unit). We do not create them; `official_unused_parameters` counts them and
  `paper_param_count` reconciles our counts with the paper's table (see its docstring).
- Shared heads (class / box without box refinement, the UQR vector MLP always) are one module here
  rather than a list holding one module many times; the converter maps the duplicates.
- The token-labeling head has `num_classes` outputs (the official hard-codes COCO's 91).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from zoo.nn.deformable_attention import MSDeformAttn
from zoo.nn.position_encoding import PositionEmbeddingSine

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VARIANTS = ("micro", "nano", "tiny", "small", "base")


@dataclass
class ViDTConfig:
    """Sizes of a ViDT / ViDT+ model. Defaults are ViDT (Swin-tiny) on COCO."""

    # Swin backbone (official `swin_*` factories in methods/swin_w_ram.py)
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    # detection
    num_classes: int = 91  # sigmoid focal: one logit a class (COCO ids 0..90 like the official)
    class_names: tuple[str, ...] = ()  # index = label
    det_tokens: int = 100  # [DET] tokens = object queries (arguments.py det_token_num)
    hidden_dim: int = 256  # arguments.py reduced_dim = pos_dim (DET position embedding width)
    dec_layers: int = 6
    dec_heads: int = 8
    dec_ffn: int = 1024
    dec_points: int = 4
    num_levels: int = 4
    dropout: float = 0.1  # decoder dropout (arguments.py)
    cross_attention_stages: tuple[int, ...] = (3,)  # 0-based; (0, 1, 2, 3) = the "every stage" ablation
    aux_loss: bool = True
    box_refine: bool = True
    # ViDT+ (arXiv 2204.07962, modules named as in the paper); `plus` is the label, the switches below do the work
    plus: bool = False
    epff: bool = False  # ViDT+ "Efficient Pyramid Feature Fusion"
    uqr: bool = False  # ViDT+ "Unified Query Representation": masks as DCT vectors
    vector_dim: int = 256  # kept zig-zag DCT coefficients (arguments.py n_keep)
    vector_hidden_dim: int = 256  # hidden width of the vector MLP (arguments.py vector_hidden_dim)
    mask_size: int = 128  # side of the mask the DCT encodes (arguments.py gt_mask_len)
    iou_aware: bool = False  # ViDT+ IoU-aware loss head
    token_label: bool = False  # ViDT+ token-labeling loss head over [PATCH] tokens
    epff_bottleneck: int = 64  # channels inside EPFF's residual conv units (fixed 64 officially)
    # input
    image_size: int = 800  # the pipeline letterboxes every image to this square
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    @property
    def stage_dims(self) -> list[int]:
        return [self.embed_dim * 2**i for i in range(len(self.depths))]

    @property
    def num_predictions(self) -> int:
        """Predictions made in all: one per decoder layer plus the backbone's [DET] tokens."""
        return self.dec_layers + 1


_SWIN_SIZES = {  # embed_dim, depths, heads, drop_path_rate (official swin_nano/tiny/small/base_win7)
    "nano": (48, (2, 2, 6, 2), (3, 6, 12, 24), 0.0),
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.3),
}

# The Params column of arXiv 2204.07962 (Table of ViDT vs ViDT+; also the official README), in
# millions, as `paper_param_count` reproduces it.
PAPER_PARAMS_M = {
    ("nano", False): 15, ("tiny", False): 37, ("small", False): 60, ("base", False): 99,
    ("nano", True): 16, ("tiny", True): 38, ("small", True): 61, ("base", True): 100,
}


def preset_config(variant: str, plus: bool = False) -> ViDTConfig:
    """ViDT (`plus=False`) or ViDT+ (`plus=True`) for `variant` in micro, nano, tiny, small, base.

    Paper sizes: COCO (91 logits), 100 [DET] tokens (ViDT) or 300 (ViDT+, with EPFF, UQR, the
    IoU-aware and token-labeling heads), images letterboxed to 800. `micro` is ours, for CPU tests
    and demos on the procedural shapes data (6 classes, 128 px).
    """
    if variant == "micro":
        from zoo.data.shapes import THING_CLASSES

        cfg = ViDTConfig(
            embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4, drop_path_rate=0.0,
            num_classes=len(THING_CLASSES), class_names=tuple(THING_CLASSES), det_tokens=48 if plus else 32,
            hidden_dim=64, dec_layers=2, dec_heads=4, dec_ffn=128, dec_points=2, dropout=0.0,
            vector_dim=64, vector_hidden_dim=64, mask_size=32, epff_bottleneck=32, image_size=128,
        )
    elif variant in _SWIN_SIZES:
        embed, depths, heads, dpr = _SWIN_SIZES[variant]
        cfg = ViDTConfig(embed_dim=embed, depths=depths, num_heads=heads, drop_path_rate=dpr, det_tokens=300 if plus else 100)
    else:
        raise ValueError(f"unknown ViDT variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if plus:
        cfg.plus = cfg.epff = cfg.uqr = cfg.iou_aware = cfg.token_label = True
    return cfg


def _check_config(c: ViDTConfig) -> None:
    if len(c.depths) != len(c.num_heads):
        raise ValueError(f"depths {c.depths} and num_heads {c.num_heads} differ in length")
    if c.num_levels != len(c.depths):
        raise ValueError(f"num_levels must be {len(c.depths)} (stages 2..{len(c.depths)} + the 1/64 reduction)")
    if c.hidden_dim % 32 != 0:
        raise ValueError("hidden_dim must be a multiple of 32 (GroupNorm(32) in the projections)")
    if any(s < 0 or s >= len(c.depths) for s in c.cross_attention_stages) or not c.cross_attention_stages:
        raise ValueError(f"cross_attention_stages must name stages in 0..{len(c.depths) - 1}, got {c.cross_attention_stages}")


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """log(x / (1 - x)) with the official clamping (util/misc.py)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _resize_mask(mask: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest resize of a (B, H, W) bool padding mask, as the official `F.interpolate(mask[None].float())`."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask[None].float(), size=tuple(int(s) for s in size)).to(torch.bool)[0]


# ------------------------------------------------------------------------------------------
# Swin Transformer with RAM (methods/swin_w_ram.py)
# ------------------------------------------------------------------------------------------
class Mlp(nn.Module):
    """Swin's FFN: fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _relative_position_index(ws: int) -> Tensor:
    """(ws*ws, ws*ws) index into the (2ws-1)^2 bias table (Swin Sec. 3.2)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def _shift_window_mask(hp: int, wp: int, ws: int, shift: int) -> Tensor:
    """(nW, ws*ws, ws*ws) 0 / -100 mask for shifted windows: tokens from different regions of the
    rolled map may not attend to each other (Swin Sec. 3.2; official BasicLayer.forward)."""

    def regions(n: int) -> list[int]:
        return [0 if i < n - ws else (1 if i < n - shift else 2) for i in range(n)]

    region = torch.tensor([[h * 3 + w for w in regions(wp)] for h in regions(hp)], dtype=torch.float32)
    windows = region.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.where(diff != 0, -100.0, 0.0)


class ReconfiguredAttentionModule(nn.Module):
    """RAM (ViDT Sec. 3.1, Fig. 4): one qkv and one proj Linear shared by [PATCH] and [DET] tokens.

    - [PATCH] x [PATCH]: window attention with relative position bias (+ shift mask), as Swin;
    - [DET] x [DET]: global self-attention of the DET tokens;
    - [DET] x [PATCH, DET] (cross stages only): DET queries attend to all PATCH keys/values of the
      un-shifted map (plus sinusoidal position) and to the DET keys/values, with -100 on padding.
    [PATCH] tokens never attend to [DET] tokens, so the PATCH path is exactly Swin's.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, patch: Tensor, det: Tensor, shift_mask: Tensor | None = None,
                cross_patch: Tensor | None = None, cross_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """patch (B, Hp, Wp, C) shifted and padded to whole windows; det (B, Q, C) with its position
        added; cross_patch (B, H*W, C) normed un-shifted patches + sine position (cross stages);
        cross_mask (B, 1, 1, H*W + Q) additive. Returns projected (patch, det)."""
        b, hp, wp, c = patch.shape
        ws, nh = self.window_size, self.num_heads
        hd, n, nw = c // nh, ws * ws, (hp // ws) * (wp // ws)
        # [PATCH x PATCH] window attention
        win = patch.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nw, n, c)
        qkv = self.qkv(win).view(b, nw, n, 3, nh, hd).permute(3, 0, 1, 4, 2, 5)  # 3, B, nW, nh, N, hd
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, nh).permute(2, 0, 1)
        attn = attn + bias
        if shift_mask is not None:
            attn = attn + shift_mask[:, None]
        patch_out = (attn.softmax(-1) @ v).transpose(2, 3).reshape(b, nw, n, c)
        patch_out = self.proj(patch_out)  # per token, so before the window reverse as well as after
        patch_out = patch_out.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        # [DET x DET] or [DET x [PATCH, DET]] global attention
        nq = det.shape[1]
        dq, dk, dv = self.qkv(det).view(b, nq, 3, nh, hd).permute(2, 0, 3, 1, 4).unbind(0)
        if cross_patch is not None:
            # only keys and values of the [PATCH] tokens are needed: the k, v rows of the shared qkv
            kv = F.linear(cross_patch, self.qkv.weight[c:], self.qkv.bias[c:])
            kv = kv.view(b, -1, 2, nh, hd).permute(2, 0, 3, 1, 4)
            dk = torch.cat([kv[0], dk], dim=2)
            dv = torch.cat([kv[1], dv], dim=2)
        det_attn = (dq * self.scale) @ dk.transpose(-2, -1)
        if cross_mask is not None:
            det_attn = det_attn + cross_mask
        det_out = (det_attn.softmax(-1) @ dv).transpose(1, 2).reshape(b, nq, c)
        return patch_out, self.proj(det_out)


class SwinTransformerBlock(nn.Module):
    """A Swin block over the bound [PATCH, DET] sequence (official SwinTransformerBlock): norm1 ->
    RAM -> residual, norm2 -> MLP -> residual; the DET position (pos_dim) is projected to this
    block's width by `det_pos_linear` and added to the normed DET tokens before RAM."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
                 drop_path: float, pos_dim: int):
        super().__init__()
        self.dim, self.window_size, self.shift_size = dim, window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ReconfiguredAttentionModule(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.det_pos_linear = nn.Linear(pos_dim, dim)

    def forward(self, x: Tensor, hw: tuple[int, int], det_pos: Tensor, shift_mask: Tensor | None,
                cross: tuple[Tensor, Tensor | None] | None) -> Tensor:
        """x (B, H*W + Q, C); det_pos (1, Q, pos_dim); cross = (patch_pos (B, H, W, C), cross_mask) or None."""
        h, w = hw
        b, _, c = x.shape
        ws = self.window_size
        xn = self.norm1(x)
        patch, det = xn[:, : h * w].view(b, h, w, c), xn[:, h * w :]
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        shifted = F.pad(patch, (0, 0, 0, pad_r, 0, pad_b)) if pad_r or pad_b else patch
        if self.shift_size > 0:
            shifted = torch.roll(shifted, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        det = det + self.det_pos_linear(det_pos)
        cross_patch = cross_mask = None
        if cross is not None:
            cross_patch = (patch + cross[0]).reshape(b, h * w, c)
            cross_mask = cross[1]
        shifted, det = self.attn(shifted, det, shift_mask if self.shift_size > 0 else None, cross_patch, cross_mask)
        if self.shift_size > 0:
            shifted = torch.roll(shifted, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        if pad_r or pad_b:
            shifted = shifted[:, :h, :w]
        # residuals over the bound sequence, as the official (one drop-path draw a sample)
        x = x + self.drop_path(torch.cat([shifted.reshape(b, h * w, c), det], dim=1))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 patch merging (Swin Sec. 3.1); [DET] tokens keep their number and are repeated x4 along
    channels so they share the LayerNorm + reduction (ViDT Sec. 3.1). The last stage reduces to
    `out_dim` = pos_dim (256) for the extra 1/64 level."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, patch: Tensor, hw: tuple[int, int], det: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """patch (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), out_dim); det (B, Q, C) -> (B, Q, out_dim)."""
        h, w = hw
        b, _, c = patch.shape
        x = patch.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1).flatten(1, 2)
        n = x.shape[1]
        if det is not None:
            x = torch.cat([x, det.repeat(1, 1, 4)], dim=1)
        x = self.reduction(self.norm(x))
        return (x[:, :n], x[:, n:]) if det is not None else (x, None)


class BasicLayer(nn.Module):
    """One Swin stage: `depth` blocks alternating regular and shifted windows, then PatchMerging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 drop_path: Sequence[float], pos_dim: int, out_dim: int):
        super().__init__()
        self.dim, self.window_size = dim, window_size
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                                 drop_path[i], pos_dim)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim)

    def forward(self, x: Tensor, hw: tuple[int, int], det_pos: Tensor, cross: tuple[Tensor, Tensor | None] | None) -> Tensor:
        h, w = hw
        ws = self.window_size
        shift_mask = None
        if len(self.blocks) > 1:
            hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
            shift_mask = _shift_window_mask(hp, wp, ws, ws // 2).to(x.device, x.dtype)
        for blk in self.blocks:
            x = blk(x, hw, det_pos, shift_mask, cross)
        return x


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size x patch_size conv + LayerNorm; pads the image to whole patches."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, ceil(H/p) * ceil(W/p), C) tokens, row-major."""
        p = self.patch_size
        h, w = x.shape[-2:]
        if h % p or w % p:
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2))


class SwinRAM(nn.Module):
    """Swin Transformer with RAM and [DET] tokens (official SwinTransformer + finetune_det)."""

    def __init__(self, config: ViDTConfig):
        super().__init__()
        c = config
        dims = c.stage_dims
        self.num_stages = len(c.depths)
        self.cross_attention_stages = tuple(c.cross_attention_stages)
        # the official first resizes the mask to 1/(4 * divisor) before any cross stage
        self.mask_divisor = 2 ** (self.num_stages - len(self.cross_attention_stages))
        self.patch_embed = PatchEmbed(c.patch_size, c.embed_dim)
        self.det_token = nn.Parameter(torch.zeros(1, c.det_tokens, c.embed_dim))
        self.det_pos_embed = nn.Parameter(torch.zeros(1, c.det_tokens, c.hidden_dim))
        total = sum(c.depths)  # stochastic depth rising linearly over all blocks (Swin)
        dpr = [c.drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.layers = nn.ModuleList()
        for i in range(self.num_stages):
            start = sum(c.depths[:i])
            out_dim = dims[i + 1] if i + 1 < self.num_stages else c.hidden_dim
            self.layers.append(BasicLayer(dims[i], c.depths[i], c.num_heads[i], c.window_size, c.mlp_ratio,
                                          dpr[start : start + c.depths[i]], c.hidden_dim, out_dim))
        # channels of the levels handed to the neck: stages 2..4 and the 1/64 reduction
        self.num_channels = dims[1:] + [c.hidden_dim]
        self.apply(_swin_init)
        nn.init.trunc_normal_(self.det_token, std=0.02)
        nn.init.trunc_normal_(self.det_pos_embed, std=0.02)

    def forward(self, images: Tensor, pad_mask: Tensor | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        """images (B, 3, H, W), pad_mask (B, H, W) True = padding or None.

        Returns [PATCH] maps [(B, C_l, H_l, W_l)] at 1/8, 1/16, 1/32, 1/64; the final [DET] tokens
        (B, Q, C_last) of the last stage (before its reduction); their position embedding (1, Q, pos_dim)."""
        b = images.shape[0]
        x = self.patch_embed(images)
        p = self.patch_embed.patch_size
        h, w = -(-images.shape[-2] // p), -(-images.shape[-1] // p)
        det = self.det_token.expand(b, -1, -1)
        mask = None
        if pad_mask is not None:
            mask = _resize_mask(pad_mask, (h // self.mask_divisor, w // self.mask_divisor))
        features: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            cross = self._cross_inputs(mask, x, (h, w), layer.dim, det.shape[1]) if i in self.cross_attention_stages else None
            out = layer(torch.cat([x, det], dim=1), (h, w), self.det_pos_embed, cross)
            patch, det = out[:, : h * w], out[:, h * w :]
            if i > 0:
                features.append(patch.transpose(1, 2).reshape(b, layer.dim, h, w))
            if i + 1 < self.num_stages:
                x, det = layer.downsample(patch, (h, w), det)
            else:
                reduced, _ = layer.downsample(patch, (h, w))
                features.append(reduced.transpose(1, 2).reshape(b, -1, -(-h // 2), -(-w // 2)))
            h, w = -(-h // 2), -(-w // 2)
        return features, det, self.det_pos_embed

    @staticmethod
    def _cross_inputs(mask: Tensor | None, x: Tensor, hw: tuple[int, int], dim: int, det_tokens: int) -> tuple[Tensor, Tensor | None]:
        """Masked sinusoidal position of the [PATCH] tokens (B or 1, H, W, dim) and the additive
        cross-attention mask (B, 1, 1, H*W + Q): -100 on padded patches, 0 on the DET keys
        (official BasicLayer.forward, masked_sin_pos_encoding)."""
        h, w = hw
        if mask is None:  # no padding: one position map for the whole batch
            no_pad = torch.zeros((1, h, w), dtype=torch.bool, device=x.device)
            return PositionEmbeddingSine(dim // 2, normalize=True)(x, no_pad).permute(0, 2, 3, 1), None
        stage_mask = _resize_mask(mask, (h, w))
        pos = PositionEmbeddingSine(dim // 2, normalize=True)(x, stage_mask).permute(0, 2, 3, 1)
        cross_mask = torch.where(stage_mask.reshape(-1, 1, 1, h * w), -100.0, 0.0).to(x.dtype)
        return pos, F.pad(cross_mask, (0, det_tokens))


def _swin_init(m: nn.Module) -> None:
    """Swin's own init (trunc normal 0.02 Linear weights, zero biases; LayerNorm 1 / 0)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------
# EPFF (ViDT+ "Efficient Pyramid Feature Fusion"; methods/vidt/fpn_fusion.py, after DPT's fusion blocks)
# ------------------------------------------------------------------------------------------
class ResidualConvUnit(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(conv1x1(relu(x)))))) with a `bottleneck`-channel middle."""

    def __init__(self, features: int, bottleneck: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, bottleneck, kernel_size=1)
        self.conv2 = nn.Conv2d(bottleneck, bottleneck, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(bottleneck, features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(x))
        out = self.conv2(F.relu(out))
        out = self.conv3(F.relu(out))
        return out + x


class FeatureFusionBlock(nn.Module):
    """Top-down fusion step: upsample the coarser path (bilinear, align_corners=True), smooth it
    (1x1 conv), add the refined finer level, refine again. The top block only refines its input
    (the official also creates `smoothing` and `resConfUnit1` there but never calls them)."""

    def __init__(self, features: int, bottleneck: int, top: bool):
        super().__init__()
        if not top:
            self.smoothing = nn.Conv2d(features, features, kernel_size=1)
            self.resConfUnit1 = ResidualConvUnit(features, bottleneck)
        self.resConfUnit2 = ResidualConvUnit(features, bottleneck)

    def forward(self, path: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            path = F.interpolate(path, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            path = self.smoothing(path) + self.resConfUnit1(skip)
        return self.resConfUnit2(path)


class EPFF(nn.Module):
    """Efficient pyramid feature fusion (official FPNFusionModule): per level a 1x1 conv to
    `hidden_dim` + GroupNorm(32), then top-down fusion from the 1/64 level to the 1/8 level.
    Returns the fused levels coarsest first [1/64, 1/32, 1/16, 1/8], the official order."""

    def __init__(self, in_channels: Sequence[int], dim: int, bottleneck: int):
        super().__init__()
        self.n_block = len(in_channels)
        self.multi_scaler = nn.Module()
        for idx in range(self.n_block - 1, -1, -1):
            rn = nn.Conv2d(in_channels[idx], dim, kernel_size=1)
            nn.init.xavier_uniform_(rn.weight, gain=1)
            nn.init.zeros_(rn.bias)
            self.multi_scaler.add_module(f"layer_{idx}_rn", rn)
            self.multi_scaler.add_module(f"p_norm_{idx}", nn.GroupNorm(32, dim))
            self.multi_scaler.add_module(f"refinenet_{idx}", FeatureFusionBlock(dim, bottleneck, top=idx == self.n_block - 1))

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        ms = self.multi_scaler
        reduced = [getattr(ms, f"p_norm_{i}")(getattr(ms, f"layer_{i}_rn")(f)) for i, f in enumerate(features)]
        outs: list[Tensor] = []
        path = getattr(ms, f"refinenet_{self.n_block - 1}")(reduced[-1])
        outs.append(path)
        for idx in range(self.n_block - 2, -1, -1):
            path = getattr(ms, f"refinenet_{idx}")(path, reduced[idx])
            outs.append(path)
        return outs


# ------------------------------------------------------------------------------------------
# Encoder-free deformable neck (methods/vidt/deformable_transformer.py)
# ------------------------------------------------------------------------------------------
class MultiheadSelfAttention(nn.Module):
    """nn.MultiheadAttention's math and parameter names (in_proj_weight / in_proj_bias /
    out_proj), written out so that the exported graph is plain MatMul / Softmax."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """(B, L, C) each -> (B, L, C)."""
        b, n, c = query.shape
        nh, hd = self.num_heads, c // self.num_heads
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).view(b, n, nh, hd).transpose(1, 2)
        k = F.linear(key, wk, bk).view(b, -1, nh, hd).transpose(1, 2)
        v = F.linear(value, wv, bv).view(b, -1, nh, hd).transpose(1, 2)
        attn = self.dropout(((q * hd**-0.5) @ k.transpose(-2, -1)).softmax(-1))
        return self.out_proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class DeformableTransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: DET self-attention (q = k = tgt + pos), multi-scale deformable
    cross-attention to the [PATCH] levels (ViDT Eq. 1), FFN (ReLU)."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiheadSelfAttention(d_model, n_heads, dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference_points: Tensor, src: Tensor,
                spatial_shapes: list[tuple[int, int]], padding_mask: Tensor | None) -> Tensor:
        q = tgt + query_pos
        tgt = self.norm2(tgt + self.dropout2(self.self_attn(q, q, tgt)))
        tgt2 = self.cross_attn(tgt + query_pos, reference_points, src, spatial_shapes, None, padding_mask)
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt2 = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(tgt2))


class DeformableTransformer(nn.Module):
    """The neck: reference points from the DET position, `dec_layers` decoder layers with
    iterative box refinement, and (ViDT+) the token-labeling logits of the flattened [PATCH] tokens."""

    def __init__(self, config: ViDTConfig):
        super().__init__()
        c = config
        d = c.hidden_dim
        self.d_model = d
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(
            DeformableTransformerDecoderLayer(d, c.dec_ffn, c.dropout, c.num_levels, c.dec_heads, c.dec_points)
            for _ in range(c.dec_layers)
        )
        self.reference_points = nn.Linear(d, 2)
        self.token_label = c.token_label
        if c.token_label:
            self.enc_output = nn.Linear(d, d)
            self.enc_output_norm = nn.LayerNorm(d)
            self.token_embed = nn.Linear(d, c.num_classes)
        # official _reset_parameters: Xavier for every matrix, then MSDeformAttn's own init
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        if c.token_label:
            nn.init.constant_(self.token_embed.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, srcs: Sequence[Tensor], masks: Sequence[Tensor] | None, tgt: Tensor, query_pos: Tensor,
                bbox_embed: Sequence[nn.Module] | None, with_tokens: bool = True) -> dict[str, Any]:
        """srcs [(B, D, H_l, W_l)], masks [(B, H_l, W_l)] or None, tgt (B, Q, D), query_pos (1, Q, D).

        With `bbox_embed` (one head a prediction), boxes are refined layer by layer (Deformable
        DETR Sec. 4.2; official decoder "hack implementation"): box_l = sigmoid(bbox_embed[l](hs_l)
        + inverse_sigmoid(ref_{l-1})) is both the prediction of step l and, detached, the next
        reference. Returns hs (L+1 tensors: the backbone DET tokens then each layer), boxes (the
        refined boxes, or None), init_reference (B, Q, 2), references (the reference each hs_l was
        predicted against) and enc_tokens (token-labeling logits per level, or None)."""
        b = tgt.shape[0]
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in srcs]
        memory = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], dim=1)
        mask_flatten = torch.cat([m.flatten(1) for m in masks], dim=1) if masks is not None else None
        valid_ratios = torch.stack([self._valid_ratio(m) for m in masks], 1) if masks is not None else None
        query_pos = query_pos.expand(b, -1, -1)

        enc_tokens = None
        if self.token_label and with_tokens:
            enc_tokens = self._token_logits(memory, mask_flatten, masks, shapes)

        reference = self.reference_points(query_pos).sigmoid()
        init_reference = reference
        hs, boxes, refs = [tgt], [], [init_reference]
        if bbox_embed is not None:
            box = refine_box(bbox_embed[0](tgt), reference)
            boxes.append(box)
            reference = box.detach()
        output = tgt
        n_levels = len(shapes)
        for lid, layer in enumerate(self.decoder.layers):
            if valid_ratios is None:
                ref_input = reference[:, :, None].expand(-1, -1, n_levels, -1)
            elif reference.shape[-1] == 4:
                ref_input = reference[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
            else:
                ref_input = reference[:, :, None] * valid_ratios[:, None]
            output = layer(output, query_pos, ref_input, memory, shapes, mask_flatten)
            hs.append(output)
            refs.append(reference)
            if bbox_embed is not None:
                box = refine_box(bbox_embed[lid + 1](output), reference)
                boxes.append(box)
                reference = box.detach()
        return {"hs": hs, "boxes": boxes if bbox_embed is not None else None, "init_reference": init_reference,
                "references": refs, "enc_tokens": enc_tokens, "spatial_shapes": shapes}

    @staticmethod
    def _valid_ratio(mask: Tensor) -> Tensor:
        """(B, 2) unpadded fraction (w, h) of a level, read from its first row / column."""
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1).float() / h
        valid_w = (~mask[:, 0, :]).sum(1).float() / w
        return torch.stack([valid_w, valid_h], -1)

    def _token_logits(self, memory: Tensor, mask_flatten: Tensor | None, masks: Sequence[Tensor] | None,
                      shapes: list[tuple[int, int]]) -> list[Tensor]:
        """Token labeling (ViDT+ token-labeling loss; official gen_encoder_output_proposals + token_embed):
        zero the tokens that are padding or whose Deformable-DETR proposal (centre over the valid
        extent, side 0.05 * 2^l) leaves (0.01, 0.99), then Linear -> LayerNorm -> class Linear.
        Returns per level (B, H_l, W_l, num_classes) in the neck's level order."""
        b = memory.shape[0]
        valid = []
        for lvl, (h, w) in enumerate(shapes):
            if masks is None:
                valid_h = memory.new_full((b,), float(h))
                valid_w = memory.new_full((b,), float(w))
            else:
                valid_h = (~masks[lvl][:, :, 0]).sum(1).float()
                valid_w = (~masks[lvl][:, 0, :]).sum(1).float()
            cy = (torch.arange(h, device=memory.device, dtype=memory.dtype)[None] + 0.5) / valid_h[:, None]
            cx = (torch.arange(w, device=memory.device, dtype=memory.dtype)[None] + 0.5) / valid_w[:, None]
            side = 0.05 * 2.0**lvl
            ok_y = (cy > 0.01) & (cy < 0.99)
            ok_x = (cx > 0.01) & (cx < 0.99)
            ok = (ok_y[:, :, None] & ok_x[:, None, :]) & (0.01 < side < 0.99)
            valid.append(ok.flatten(1))
        keep = torch.cat(valid, 1)
        if mask_flatten is not None:
            keep = keep & ~mask_flatten
        out = memory.masked_fill(~keep[..., None], 0.0)
        logits = self.token_embed(self.enc_output_norm(self.enc_output(out)))
        levels, start = [], 0
        for h, w in shapes:
            levels.append(logits[:, start : start + h * w].reshape(b, h, w, -1))
            start += h * w
        return levels


def refine_box(delta: Tensor, reference: Tensor) -> Tensor:
    """sigmoid(delta + inverse_sigmoid(reference)); a 2-d reference (a point) offsets the centre only."""
    if reference.shape[-1] == 4:
        return (delta + inverse_sigmoid(reference)).sigmoid()
    return torch.cat([delta[..., :2] + inverse_sigmoid(reference), delta[..., 2:]], -1).sigmoid()


class MLP(nn.Module):
    """`num_layers` Linear layers with ReLU between (the official MLP, `.layers` names)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


# ------------------------------------------------------------------------------------------
# The detector (methods/vidt/detector.py)
# ------------------------------------------------------------------------------------------
def _proj(in_ch: int, out_ch: int) -> nn.Sequential:
    """1x1 conv (Xavier, zero bias) + GroupNorm(32), the official `input_proj` / `tgt_proj` / `query_pos_proj`."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=1)
    nn.init.xavier_uniform_(conv.weight, gain=1)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.GroupNorm(32, out_ch))


class ViDT(nn.Module):
    """ViDT / ViDT+ detector: `forward(images, pad_mask=None) -> dict` (see `forward`)."""

    def __init__(self, config: ViDTConfig):
        super().__init__()
        _check_config(config)
        self.config = c = config
        d = c.hidden_dim
        n_pred = c.num_predictions
        self.num_queries = c.det_tokens
        self.backbone = SwinRAM(c)
        self.transformer = DeformableTransformer(c)
        if c.epff:
            self.fusion = EPFF(self.backbone.num_channels, d, c.epff_bottleneck)
        else:
            self.input_proj = nn.ModuleList(_proj(ch, d) for ch in self.backbone.num_channels)
        # [DET] tokens and their position to the neck width: 1x1 conv + GroupNorm over (channels, tokens)
        self.tgt_proj = _proj(self.backbone.num_channels[-2], d)
        self.query_pos_proj = _proj(d, d)

        class_embed = nn.Linear(d, c.num_classes)
        nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))  # focal prior 0.01
        bbox_embed = MLP(d, d, 4, 3)
        nn.init.zeros_(bbox_embed.layers[-1].weight)
        nn.init.zeros_(bbox_embed.layers[-1].bias)
        if c.box_refine:
            # one head a prediction, cloned from one init; only the first has the -2 size prior (official)
            self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(n_pred))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(n_pred))
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)
        else:
            nn.init.constant_(bbox_embed.layers[-1].bias[2:], -2.0)
            self.class_embed, self.bbox_embed = class_embed, bbox_embed
        if c.uqr:
            self.vector_embed = MLP(d, c.vector_hidden_dim, c.vector_dim, 3)
            nn.init.zeros_(self.vector_embed.layers[-1].weight)
            nn.init.zeros_(self.vector_embed.layers[-1].bias)
            nn.init.constant_(self.vector_embed.layers[-1].bias[2:], -2.0)  # as the official (after zeroing)
        if c.iou_aware:
            iou_embed = MLP(d, d, 1, 3)
            self.iou_embed = nn.ModuleList(copy.deepcopy(iou_embed) for _ in range(n_pred)) if c.box_refine else iou_embed

    def _head(self, name: str, level: int) -> nn.Module:
        module = getattr(self, name)
        return module[level] if isinstance(module, nn.ModuleList) else module

    def _neck_inputs(self, images: Tensor, pad_mask: Tensor | None) -> tuple[list[Tensor], list[Tensor] | None, Tensor, Tensor]:
        features, det, det_pos = self.backbone(images, pad_mask)
        tgt = self.tgt_proj(det.transpose(1, 2)[..., None])[..., 0].transpose(1, 2)
        query_pos = self.query_pos_proj(det_pos.transpose(1, 2)[..., None])[..., 0].transpose(1, 2)
        srcs = self.fusion(features) if self.config.epff else [p(f) for p, f in zip(self.input_proj, features)]
        masks = [_resize_mask(pad_mask, s.shape[-2:]) for s in srcs] if pad_mask is not None else None
        return srcs, masks, tgt, query_pos

    def _run(self, images: Tensor, pad_mask: Tensor | None, levels: Sequence[int] | None, with_tokens: bool) -> dict[str, Any]:
        c = self.config
        srcs, masks, tgt, query_pos = self._neck_inputs(images, pad_mask)
        bbox_heads = [self._head("bbox_embed", i) for i in range(c.num_predictions)] if c.box_refine else None
        neck = self.transformer(srcs, masks, tgt, query_pos, bbox_heads, with_tokens)
        hs = neck["hs"]
        levels = range(len(hs)) if levels is None else levels
        preds = []
        for lvl in levels:
            if neck["boxes"] is not None:
                boxes = neck["boxes"][lvl]
            else:
                boxes = refine_box(self._head("bbox_embed", lvl)(hs[lvl]), neck["references"][lvl])
            p = {"pred_logits": self._head("class_embed", lvl)(hs[lvl]), "pred_boxes": boxes}
            if c.uqr:
                p["pred_vectors"] = self.vector_embed(hs[lvl])
            if c.iou_aware:
                p["pred_ious"] = self._head("iou_embed", lvl)(hs[lvl])
            preds.append(p)
        return {"preds": preds, "enc_tokens": neck["enc_tokens"], "spatial_shapes": neck["spatial_shapes"]}

    def forward(self, images: Tensor, pad_mask: Tensor | None = None) -> dict[str, Any]:
        """images (B, 3, H, W) normalised; pad_mask (B, H, W) bool, True = padding, or None (no padding).

        Returns the official output dict:
        - "pred_logits" (B, Q, num_classes), "pred_boxes" (B, Q, 4) sigmoid cxcywh: the last decoder layer;
        - ViDT+: "pred_vectors" (B, Q, vector_dim) UQR DCT coefficients, "pred_ious" (B, Q, 1) IoU logits;
        - "aux_outputs" (when aux_loss): the other `dec_layers` predictions with the same keys,
          first the backbone's [DET] tokens (through the heads of index 0), then decoder layers
          1 .. dec_layers-1 (official Detector._set_aux_loss over outputs[:-1]: 7 predictions in all
          for 6 layers);
        - "enc_tokens" (token_label): {"pred_logits": [(B, H_l, W_l, num_classes)] one a neck level,
          "spatial_shapes": [(H_l, W_l)]}; the levels are 1/8, 1/16, 1/32, 1/64 for ViDT and, with
          EPFF, coarsest first 1/64, 1/32, 1/16, 1/8 (the official order)."""
        c = self.config
        run = self._run(images, pad_mask, None if c.aux_loss else [c.dec_layers], with_tokens=True)
        preds = run["preds"]
        out: dict[str, Any] = dict(preds[-1])
        if c.aux_loss:
            out["aux_outputs"] = preds[:-1]
        if run["enc_tokens"] is not None:
            out["enc_tokens"] = {"pred_logits": run["enc_tokens"], "spatial_shapes": run["spatial_shapes"]}
        return out

    def predict_tensors(self, images: Tensor) -> tuple[Tensor, ...]:
        """The final prediction only, as a tuple: (logits, boxes[, vectors if uqr][, ious if iou_aware])."""
        pred = self._run(images, None, [self.config.dec_layers], with_tokens=False)["preds"][0]
        keys = ["pred_logits", "pred_boxes"] + (["pred_vectors"] if self.config.uqr else []) + (
            ["pred_ious"] if self.config.iou_aware else [])
        return tuple(pred[k] for k in keys)


class ViDTGraph(nn.Module):
    """Exportable graph: images (B, 3, S, S) normalised, no padding mask -> (pred_logits (B, Q, C),
    pred_boxes (B, Q, 4)); with UQR also pred_vectors (B, Q, vector_dim); with the IoU-aware head
    also pred_ious (B, Q, 1). The ViDT+ presets have both."""

    def __init__(self, model: ViDT):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return self.model.predict_tensors(images)


# ------------------------------------------------------------------------------------------
# Parameter counts and the paper's table
# ------------------------------------------------------------------------------------------
def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def official_unused_parameters(config: ViDTConfig) -> int:
    """Parameters the official model creates but its forward never reads (so they get no gradient
    and we leave them out): each PatchMerging's `expansion` Linear (no bias) and `norm2`
    LayerNorm, the backbone's `norm1..3` LayerNorms (kept "to load the pre-trained model"), the
    transformer's `level_embed` (an encoder leftover) and, with EPFF, the top fusion block's
    `smoothing` conv and `resConfUnit1`."""
    dims = config.stage_dims
    outs = dims[1:] + [config.hidden_dim]
    n = sum(d * o + 2 * d for d, o in zip(dims, outs))  # expansion + norm2
    n += sum(2 * d for d in dims[1:])  # backbone norm1..3 (out_indices [1, 2, 3])
    n += config.num_levels * config.hidden_dim  # level_embed
    if config.epff:
        f, m = config.hidden_dim, config.epff_bottleneck
        n += f * f + f + (f * m + m) + (m * m * 9 + m) + (m * f + f)
    return n


def plus_head_parameters(config: ViDTConfig) -> int:
    """Parameters of the heads that serve ViDT+'s extra losses: UQR vectors, IoU-aware, token labeling."""
    d, n = config.hidden_dim, 0
    if config.uqr:
        n += d * config.vector_hidden_dim + config.vector_hidden_dim + config.vector_hidden_dim ** 2 + \
            config.vector_hidden_dim + config.vector_hidden_dim * config.vector_dim + config.vector_dim
    if config.iou_aware:
        n += (config.num_predictions if config.box_refine else 1) * (2 * (d * d + d) + d + 1)
    if config.token_label:
        n += d * d + d + 2 * d + d * config.num_classes + config.num_classes
    return n


def paper_param_count(config: ViDTConfig) -> int:
    """The parameter count behind the paper's Params column (arXiv 2204.07962, official README).

    Reproduced from the official code: `fps_calculator.py` counts `sum(p.numel() for p in
    model.parameters())` of the model it builds and prints `math.floor(n / 1e6)` M. That model
    has every official parameter, used or not (`official_unused_parameters`), and is built with
    the script's defaults, which switch on box refinement and aux loss but not the UQR, IoU-aware
    or token-labeling heads (also visible in the README's component table: adding those heads
    leaves Params unchanged, adding EPFF raises it). So: ours + unused - ViDT+ loss heads; the
    paper's numbers are `floor` of this in millions (tested for all 8 variants)."""
    with torch.device("meta"):
        ours = count_parameters(ViDT(config))
    return ours + official_unused_parameters(config) - plus_head_parameters(config)
