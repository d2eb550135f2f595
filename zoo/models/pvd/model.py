"""PVD network: image + expression -> fused features and centre; one denoiser over all vertices.

Cheng, Li, Jin, Ji, Yuan, Liu, Chen. "Parallel Vertex Diffusion for Unified Visual Grounding",
AAAI 2024, arXiv:2303.07216. No official code exists; the paper text beyond its abstract and
method summary could not be read here (MODELS.md lists backbone, language encoder, vertex count
and steps as unverified), so every size below is our choice and says so.

What the paper fixes, and where it lives:
- boxes and masks are both vertex sequences, generated *in parallel* by one diffusion model; only
  the number of vertices (the noise dimension) differs: `VertexDenoiser` takes x_t (B, K, 2) for any
  K, with a vertex-slot embedding telling box corners (slots 0..1) from polygon vertices (2..N+1);
- a centre point predicted from the cross-modal features (`PVDEncoder.centre_head`);
- Center Anchor Mechanism (CAM): vertices as normalised offsets from that centre,
  x0 = (v - c) / cam_scale (`to_signal` / `from_signal`); `anchor="absolute"` is the ablation
  without CAM (x0 = 2 v - 1, image-normalised coordinates);
- few-step DDIM sampling (pipeline.py, `ddim_timesteps` / `ddim_step` here).

Our choices (the paper leaves them open or we could not verify them):
- visual backbone: a timm `features_only` model, one feature level (stride 8 micro, 32 paper);
  a 1x1 projection to d_model and a learned position embedding (the input size is fixed);
- language encoder: transformers `BertModel` built from a `BertConfig` (no pooler), WordPiece ids
  (tokenizer.py); its last hidden states projected to d_model;
- fusion: a pre-norm transformer encoder over [visual tokens; text tokens] with the text padding
  masked out (TransVG/SeqTR-style joint encoder);
- centre head: one logit per visual cell, soft-argmax over the cell centres (differentiable and
  exportable); the score of a grounding is the peak cell probability;
- denoiser: x0-prediction (DiffusionDet-style), vertex tokens = Linear(x_t) + slot embedding +
  sine embedding of the vertex's image position under the current anchor; blocks of vertex
  self-attention (all vertices see each other: the parallel generation), cross-attention to the
  fused memory, FFN, each modulated by the timestep embedding (scale/shift);
- diffusion: cosine schedule (Nichol & Dhariwal 2021), T = 1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BOX_VERTICES = 2  # a box as its two corner vertices (x0, y0), (x1, y1)
ANCHORS = ("center", "absolute")


@dataclass
class PVDConfig:
    """Sizes of one PVD variant (see the module docstring for which are the paper's)."""

    image_size: int = 96
    backbone: str = "test_resnet"  # timm model name (random init; weights come from our files)
    backbone_index: int = 2  # timm feature level used (features_only out_indices)
    backbone_stride: int = 8  # its stride: the visual grid is image_size / stride square
    # BERT-style text encoder (transformers BertConfig fields)
    vocab: str = "shapes"  # bundled WordPiece vocabulary name, or a vocab.txt path (tokenizer.py)
    vocab_size: int = 128  # >= the vocabulary's size (vocab/shapes.txt: 127 entries)
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    text_intermediate: int = 128
    text_max_positions: int = 64
    max_tokens: int = 20  # [CLS] + word pieces + [SEP], padded with [PAD] (id 0)
    # fusion and denoiser
    d_model: int = 64
    heads: int = 4
    ffn: int = 128
    fusion_layers: int = 2
    denoiser_layers: int = 2
    polygon_vertices: int = 24
    # diffusion and CAM
    anchor: str = "center"  # "center": Center Anchor Mechanism; "absolute": image coordinates (ablation)
    cam_scale: float = 0.25  # offsets divided by this (fraction of the image side) -> about unit range
    timesteps: int = 1000
    sample_steps: int = 4  # DDIM steps at inference
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")
        if self.image_size % self.backbone_stride:
            raise ValueError(f"image_size {self.image_size} must be a multiple of backbone_stride {self.backbone_stride}")

    @property
    def grid(self) -> int:
        return self.image_size // self.backbone_stride

    @property
    def slots(self) -> int:
        return BOX_VERTICES + self.polygon_vertices


def preset_config(name: str, **overrides) -> PVDConfig:
    """micro: CPU tests and demo. paper: a ResNet-101 + BERT-base configuration at the scale of the
    grounding models PVD compares with (our choice where the paper could not be verified)."""
    presets = {
        "micro": dict(),
        "paper": dict(image_size=640, backbone="resnet101", backbone_index=4, backbone_stride=32, vocab="bert-base-uncased",
                      vocab_size=30522, text_hidden=768, text_layers=12, text_heads=12, text_intermediate=3072,
                      text_max_positions=512, max_tokens=40, d_model=256, heads=8, ffn=1024, fusion_layers=6,
                      denoiser_layers=6, polygon_vertices=36, dropout=0.1),
    }
    if name not in presets:
        raise KeyError(f"unknown PVD preset {name!r}; known: {', '.join(presets)}")
    return PVDConfig(**{**presets[name], **overrides})


# --------------------------------------------------------------------------- building blocks


class Attention(nn.Module):
    """Multi-head attention with an optional additive key bias (B, Lk) (padding: -1e4)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, context: Tensor, key_bias: Tensor | None = None) -> Tensor:
        b, lq, d = x.shape
        h = self.heads
        q = self.q(x).reshape(b, lq, h, d // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if key_bias is None else key_bias[:, None, None, :].to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, lq, d))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class FusionBlock(nn.Module):
    """Pre-norm self-attention + FFN over the joint [visual; text] sequence."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ffn = FeedForward(dim, ffn, dropout)

    def forward(self, x: Tensor, pos: Tensor, key_bias: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h + pos, h + pos, key_bias)
        return x + self.ffn(self.norm2(x))


class DenoiserBlock(nn.Module):
    """Vertex self-attention (every vertex sees every other: parallel generation), cross-attention to
    the fused memory, FFN; each sub-layer's normalised input is scaled/shifted by the timestep."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim, elementwise_affine=False) for _ in range(3))
        self.self_attn = Attention(dim, heads, dropout)
        self.cross_attn = Attention(dim, heads, dropout)
        self.ffn = FeedForward(dim, ffn, dropout)
        self.film = nn.Linear(dim, 6 * dim)

    def forward(self, x: Tensor, query_pos: Tensor, temb: Tensor, memory: Tensor, memory_bias: Tensor) -> Tensor:
        s1, b1, s2, b2, s3, b3 = self.film(temb)[:, None].chunk(6, dim=-1)
        h = self.norms[0](x) * (1 + s1) + b1
        x = x + self.self_attn(h + query_pos, h + query_pos)
        h = self.norms[1](x) * (1 + s2) + b2
        x = x + self.cross_attn(h + query_pos, memory, memory_bias)
        h = self.norms[2](x) * (1 + s3) + b3
        return x + self.ffn(h)


def sine_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoids of each scalar in values (..., n) -> (..., n * dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    angles = values.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


# --------------------------------------------------------------------------- encoder (graph "encode")


class VisualBackbone(nn.Module):
    """timm `features_only` body at one level -> (B, C, g, g)."""

    def __init__(self, config: PVDConfig):
        super().__init__()
        import timm

        self.body = timm.create_model(config.backbone, pretrained=False, features_only=True, out_indices=(config.backbone_index,))
        info: Any = self.body.feature_info
        self.channels = int(info.channels()[0])
        stride = int(info.reduction()[0])
        if stride != config.backbone_stride:
            raise ValueError(f"{config.backbone} level {config.backbone_index} has stride {stride}, config says {config.backbone_stride}")

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)[0]


def build_text_encoder(config: PVDConfig) -> nn.Module:
    """A transformers BertModel from our config (random init; `convert.load_text_encoder` fills it
    from a local BERT checkpoint folder in transformers layout)."""
    from transformers import BertConfig, BertModel

    bert = BertConfig(vocab_size=config.vocab_size, hidden_size=config.text_hidden, num_hidden_layers=config.text_layers,
                      num_attention_heads=config.text_heads, intermediate_size=config.text_intermediate,
                      max_position_embeddings=config.text_max_positions, hidden_dropout_prob=config.dropout,
                      attention_probs_dropout_prob=config.dropout)
    return BertModel(bert, add_pooling_layer=False)


class PVDEncoder(nn.Module):
    """images (B, 3, S, S) normalised, tokens (B, L) WordPiece ids (0 = [PAD]) ->
    memory (B, g*g + L, d), memory_valid (B, g*g + L) 1/0, centre (B, 2) in [0, 1] (x, y),
    centre_logits (B, g*g)."""

    def __init__(self, config: PVDConfig, backbone: nn.Module, text: nn.Module, fusion: Fusion):
        super().__init__()
        self.config = config
        self.backbone, self.text, self.fusion = backbone, text, fusion

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        f: Any = self.fusion
        visual = f.visual_proj(self.backbone(images)).flatten(2).transpose(1, 2)  # (B, g*g, d)
        valid = (tokens != 0).to(visual.dtype)
        words = self.text(input_ids=tokens, attention_mask=valid.long()).last_hidden_state
        words = f.text_proj(words)
        x = torch.cat([visual, words], dim=1)
        pos = torch.cat([f.visual_pos.expand(x.shape[0], -1, -1),
                         f.text_type.expand(x.shape[0], words.shape[1], -1)], dim=1)
        memory_valid = torch.cat([torch.ones_like(visual[..., 0]), valid], dim=1)
        bias = (1.0 - memory_valid) * -1e4
        for block in f.blocks:
            x = block(x, pos, bias)
        x = f.norm(x)
        g = self.config.grid
        logits = f.centre_head(x[:, : g * g]).squeeze(-1)  # one logit per visual cell
        centre = logits.softmax(-1) @ f.cell_centres  # soft-argmax (B, 2)
        return x + pos, memory_valid, centre, logits


class Fusion(nn.Module):
    """The cross-modal fusion encoder's parameters and the centre head."""

    def __init__(self, config: PVDConfig, visual_channels: int):
        super().__init__()
        d, g = config.d_model, config.grid
        self.visual_proj = nn.Conv2d(visual_channels, d, 1)
        self.text_proj = nn.Linear(config.text_hidden, d)
        self.visual_pos = nn.Parameter(torch.randn(1, g * g, d) * 0.02)
        self.text_type = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.blocks = nn.ModuleList(FusionBlock(d, config.heads, config.ffn, config.dropout) for _ in range(config.fusion_layers))
        self.norm = nn.LayerNorm(d)
        self.centre_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        ys, xs = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        cells = torch.stack([xs.flatten(), ys.flatten()], dim=-1).float().add(0.5).div(g)
        self.register_buffer("cell_centres", cells, persistent=False)


# --------------------------------------------------------------------------- denoiser (graph "denoise")


class VertexDenoiser(nn.Module):
    """One denoising step over all K vertices at once (Sec. "parallel vertex diffusion"):
    memory, memory_valid, centre (B, 2), x_t (B, K, 2), t (B,) float timestep, slots (B, K) int
    -> predicted x0 (B, K, 2) in signal units (CAM offsets or absolute, see `to_signal`)."""

    def __init__(self, config: PVDConfig):
        super().__init__()
        d = config.d_model
        self.config = config
        self.vertex_in = nn.Linear(2, d)
        self.slot_embed = nn.Embedding(config.slots, d)
        self.pos_proj = nn.Linear(d, d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(DenoiserBlock(d, config.heads, config.ffn, config.dropout) for _ in range(config.denoiser_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 2)

    def forward(self, memory: Tensor, memory_valid: Tensor, centre: Tensor, x_t: Tensor, t: Tensor, slots: Tensor) -> Tensor:
        d = self.config.d_model
        where = from_signal(x_t.clamp(-4.0, 4.0), centre, self.config)  # the vertices' image positions now
        query_pos = self.pos_proj(sine_embedding(where * 100.0, d // 2))
        x = self.vertex_in(x_t) + self.slot_embed(slots)
        temb = self.time_mlp(sine_embedding(t[:, None], d))
        bias = (1.0 - memory_valid) * -1e4
        for block in self.blocks:
            x = block(x, query_pos, temb, memory, bias)
        return self.head(self.norm(x))


# --------------------------------------------------------------------------- Center Anchor Mechanism


def to_signal(vertices: Tensor, centre: Tensor, config: PVDConfig) -> Tensor:
    """Image-normalised vertices (B, K, 2) in [0, 1] -> the diffusion signal x0.
    CAM: offsets from the centre divided by cam_scale; absolute (ablation): 2 v - 1."""
    if config.anchor == "center":
        return (vertices - centre[:, None]) / config.cam_scale
    return vertices * 2.0 - 1.0


def from_signal(signal: Tensor, centre: Tensor, config: PVDConfig) -> Tensor:
    """Inverse of `to_signal`: x0 -> image-normalised vertices."""
    if config.anchor == "center":
        return centre[:, None] + signal * config.cam_scale
    return (signal + 1.0) * 0.5


# --------------------------------------------------------------------------- diffusion schedule


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> Tensor:
    """alpha-bar_t of the cosine schedule (Nichol & Dhariwal 2021, Eq. 17), t = 0..T-1, clipped to [1e-5, 0.9999]."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (f[1:] / f[0]).clamp(1e-5, 0.9999).float()


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """The DDIM sub-sequence, from T-1 down to 0, `steps` entries evenly spaced (steps >= 1)."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    return [int(round(v)) for v in torch.linspace(timesteps - 1, 0, steps).tolist()]


def ddim_step(x_t: Tensor, x0: Tensor, ab_t: float, ab_next: float) -> Tensor:
    """Deterministic DDIM update (eta = 0; Song et al. 2021, Eq. 12) from the predicted x0."""
    eps = (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1.0 - ab_t)
    return math.sqrt(ab_next) * x0 + math.sqrt(1.0 - ab_next) * eps


# --------------------------------------------------------------------------- the whole model


class PVDModel(nn.Module):
    """Children (counted separately by `zoo info`): backbone, text_encoder, fusion, denoiser."""

    alphas_cumprod: Tensor

    def __init__(self, config: PVDConfig):
        super().__init__()
        self.config = config
        self.backbone = VisualBackbone(config)
        self.text_encoder = build_text_encoder(config)
        self.fusion = Fusion(config, self.backbone.channels)
        self.denoiser = VertexDenoiser(config)
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(config.timesteps), persistent=False)

    def encoder(self) -> PVDEncoder:
        return PVDEncoder(self.config, self.backbone, self.text_encoder, self.fusion)

    def encode(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.encoder()(images, tokens)

    def slots(self, batch: int, polygon: bool, device: torch.device | None = None) -> Tensor:
        """(B, K) slot ids: box corners 0..1, polygon vertices 2..N+1."""
        k = self.config.polygon_vertices if polygon else BOX_VERTICES
        start = BOX_VERTICES if polygon else 0
        return torch.arange(start, start + k, device=device).expand(batch, k)
