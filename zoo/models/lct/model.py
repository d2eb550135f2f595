"""sLCT networks: EDM's ADM U-Net (DhariwalUNet) and a DiT, both as raw networks
F(x_in, noise_labels, class_labels) that `zoo.diffusion.consistency.ConsistencyParametrisation`
turns into the consistency function f(x, sigma).

Paper: Dao et al., "Improved Training Technique for Latent Consistency Models", ICLR 2025
(arXiv:2502.01441). Architecture facts from the authors' code (quandao10/LCT): `models/network_karras.py`
(EDM's `DhariwalUNet`, itself the ADM of Dhariwal & Nichol 2021 re-expressed by Karras et al. 2022),
`models/network_dit.py` (DiT of Peebles & Xie 2023 with their changes), `models/script_util.py`
and `scripts/train_lct.sh` (the paper's configuration). The code here is our own; module names
follow EDM's and timm's so a converter can map their state dicts by name.

ADM as the authors run it on 32 x 32 x 4 latents (train_lct.sh): 128 channels, channel
multipliers 1, 2, 3, 4, 4 residual blocks a level, self-attention at 16 x 16 and 8 x 8 with 64
channels a head, embedding width 4 x 128, dropout 0, and (sLCT) the output GroupNorm
replaced by a full LayerNorm over [C, H, W] (`out_norm="layer"`; "group" is EDM's original,
"nonscaling" the same LayerNorm without its learned scale).

Non-scaling LayerNorm (NsLN, sLCT): y = (x - mean) / std + beta, a LayerNorm whose
scale is fixed at 1 and only the shift is learned. The authors' DiT normalises queries and keys
per head with it (timm `Attention(qk_norm=True, norm_layer=NonScalingLayerNorm)`); the block and
final norms before adaLN modulation carry no affine parameters either way.

What we chose: the authors keep NsLN's unit weight as a frozen parameter; ours has no weight at
all (the counts below are of trainable parameters, and a converter drops their all-ones
`*.weight`). DiT's fixed sin-cos position table is a non-persistent buffer (theirs a frozen
parameter). Class labels are integer indices; ADM embeds them with EDM's bias-free `map_label`
(a one-hot times its weight, done as a column lookup), DiT with its table of num_classes + 1 rows
(the last is "no label", used when no label is given, as theirs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from zoo.diffusion.consistency import ConsistencyParametrisation


@dataclass
class LCTConfig:
    """Sizes of the consistency network and its noise range; `arch` picks the backbone."""

    arch: str = "adm"  # adm | dit
    latent_channels: int = 4  # SD VAE latents (sd-vae-ft-ema), 256^2 images -> 32 x 32 x 4
    latent_size: int = 32
    num_classes: int = 0  # 0: unconditional (the paper's CelebA-HQ / LSUN Church / FFHQ)
    label_dropout: float = 0.0  # probability of training without the label (classifier-free guidance)
    # ADM (EDM DhariwalUNet), train_lct.sh values
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    channel_mult_emb: int = 4
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16, 8)
    channels_per_head: int = 64
    dropout: float = 0.0
    out_norm: str = "layer"  # layer (sLCT: LayerNorm([C, H, W])) | group (EDM) | nonscaling
    # DiT (authors' network_dit.py; sizes of DiT-S/B/L/XL)
    hidden_size: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 2
    mlp_ratio: float = 4.0
    mlp_act: str = "gelu"  # gelu (tanh approximation, DiT's) | relu (authors' DiT runs) | silu
    norm: str = "nonscaling"  # query/key norm: nonscaling (NsLN) | layer
    # noise range and data scale of the consistency parametrisation
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.arch not in ("adm", "dit"):
            raise ValueError(f"arch must be 'adm' or 'dit', got {self.arch!r}")
        if self.out_norm not in ("layer", "group", "nonscaling"):
            raise ValueError(f"out_norm must be layer, group or nonscaling, got {self.out_norm!r}")
        if self.norm not in ("nonscaling", "layer"):
            raise ValueError(f"norm must be nonscaling or layer, got {self.norm!r}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)


PRESETS: dict[str, LCTConfig] = {
    # CPU tests and demos: 8 x 8 x 4 latents, two levels, one block each, attention at 4 x 4.
    "micro": LCTConfig(latent_size=8, model_channels=32, channel_mult=(1, 2), num_blocks=1,
                       attn_resolutions=(4,), channels_per_head=32),
    # The paper's network (train_lct.sh, model-type dhariwal_unet).
    "adm": LCTConfig(),
    # A DiT small enough for CPU tests.
    "micro-dit": LCTConfig(arch="dit", latent_size=8, hidden_size=64, depth=2, num_heads=2, patch_size=2),
    # The authors' DiT sizes on 32 x 32 x 4 latents (network_dit.py DiT_S_2 / DiT_B_2; their runs use ReLU MLPs).
    "dit-s2": LCTConfig(arch="dit", hidden_size=384, depth=12, num_heads=6, patch_size=2, mlp_act="relu"),
    "dit-b2": LCTConfig(arch="dit", hidden_size=768, depth=12, num_heads=12, patch_size=2, mlp_act="relu"),
}


def preset_config(name: str, **overrides) -> LCTConfig:
    """A copy of a preset ("micro", "adm", "micro-dit", "dit-s2", "dit-b2"), fields replaced by `overrides`."""
    if name not in PRESETS:
        raise KeyError(f"no sLCT preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------- shared pieces


class NonScalingLayerNorm(nn.Module):
    """NsLN (sLCT): LayerNorm over the trailing `normalized_shape` with the scale fixed
    at 1 and a learned shift, y = (x - mean) / sqrt(var + eps) + beta."""

    def __init__(self, normalized_shape, eps: float = 1e-5):
        super().__init__()
        self.normalized_shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) \
            else (int(normalized_shape),)
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, None, self.bias, self.eps)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _group_norm(channels: int) -> nn.GroupNorm:
    """EDM's GroupNorm: 32 groups, but at least 4 channels a group; eps 1e-5."""
    return nn.GroupNorm(min(32, channels // 4), channels, eps=1e-5)


# --------------------------------------------------------------------------- ADM


class UNetBlock(nn.Module):
    """EDM's ADM residual block (adaptive scale/shift from the embedding), optionally resampling
    (2x2 average pooling down, nearest up: EDM's [1, 1] resample filter) and followed by
    multi-head self-attention over all positions."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False,
                 down: bool = False, attention: bool = False, channels_per_head: int = 64,
                 dropout: float = 0.0, takes_skip: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.dropout, self.takes_skip = up, down, dropout, takes_skip
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.norm0 = _group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.affine = nn.Linear(emb_channels, 2 * out_channels)
        self.norm1 = _group_norm(out_channels)
        self.conv1 = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        if self.num_heads:
            self.norm2 = _group_norm(out_channels)
            self.qkv = nn.Conv2d(out_channels, 3 * out_channels, 1)
            self.proj = _zero(nn.Conv2d(out_channels, out_channels, 1))

    def _resample(self, x: Tensor) -> Tensor:
        if self.down:
            return F.avg_pool2d(x, 2)
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(self._resample(F.silu(self.norm0(x))))
        scale, shift = self.affine(emb).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        skip = self._resample(x)
        x = h + (self.skip(skip) if self.skip is not None else skip)
        if self.num_heads:
            b, c, height, width = x.shape
            heads = self.num_heads
            # EDM's channel layout: (head, channel, q/k/v) in the qkv output; 4-D for SDPA
            q, k, v = self.qkv(self.norm2(x)).reshape(b, heads, c // heads, 3, height * width).unbind(3)
            a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
            x = self.proj(a.transpose(-1, -2).reshape(b, c, height, width)) + x
        return x


def positional_embedding(x: Tensor, channels: int, max_positions: int = 10000) -> Tensor:
    """EDM's PositionalEmbedding (endpoint=False): [cos(x w_j), sin(x w_j)], w_j = max_positions^(-j / (C/2))."""
    half = channels // 2
    freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32, device=x.device) / half)
    args = x.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


def _run_block(owner: nn.Module, block: nn.Module, x: Tensor, cond: Tensor) -> Tensor:
    """block(x, cond); under `owner.gradient_checkpointing` while training, recomputed in the
    backward pass instead of keeping its activations (paper-size training on one GPU). The RNG
    state is preserved, so dropout masks (and sLCT's shared student/target noise) are unchanged."""
    if getattr(owner, "gradient_checkpointing", False) and owner.training and torch.is_grad_enabled():
        return checkpoint(block, x, cond, use_reentrant=False)
    return block(x, cond)


class ADMUNet(nn.Module):
    """EDM's DhariwalUNet (ADM) as sLCT trains it: F(x_in (B, C, H, W), noise_labels (B,),
    class_labels (B,) int or None) -> (B, C, H, W)."""

    def __init__(self, config: LCTConfig):
        super().__init__()
        cfg = self.config = config
        self.gradient_checkpointing = False
        ch, res0 = cfg.model_channels, cfg.latent_size
        emb = ch * cfg.channel_mult_emb
        block = dict(emb_channels=emb, channels_per_head=cfg.channels_per_head, dropout=cfg.dropout)
        self.map_layer0 = nn.Linear(ch, emb)
        self.map_layer1 = nn.Linear(emb, emb)
        self.map_label = None
        if cfg.num_classes:
            self.map_label = nn.Linear(cfg.num_classes, emb, bias=False)
            nn.init.normal_(self.map_label.weight)  # EDM: kaiming_normal x sqrt(label_dim) = N(0, 1)

        self.enc = nn.ModuleDict()
        cout = cfg.latent_channels
        for level, mult in enumerate(cfg.channel_mult):
            res = res0 >> level
            if level == 0:
                cin, cout = cout, ch * mult
                self.enc[f"{res}x{res}_conv"] = nn.Conv2d(cin, cout, 3, padding=1)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for idx in range(cfg.num_blocks):
                cin, cout = cout, ch * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in cfg.attn_resolutions,
                                                                **block)
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res = res0 >> level
            if level == len(cfg.channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), ch * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in cfg.attn_resolutions,
                                                                takes_skip=True, **block)
        if cfg.out_norm == "group":
            self.out_norm = _group_norm(cout)
        elif cfg.out_norm == "layer":
            self.out_norm = nn.LayerNorm([cout, res0, res0], eps=1e-5)
        else:
            self.out_norm = NonScalingLayerNorm([cout, res0, res0], eps=1e-5)
        self.out_conv = _zero(nn.Conv2d(cout, cfg.latent_channels, 3, padding=1))

    def embedding(self, noise_labels: Tensor, class_labels: Tensor | None, dtype: torch.dtype) -> Tensor:
        """The block conditioning: noise-level embedding (+ the class's), after its SiLU."""
        emb = positional_embedding(noise_labels, self.config.model_channels).to(dtype)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None and class_labels is not None:
            label = self.map_label.weight.t()[class_labels.long()]
            if self.training and self.config.label_dropout:
                keep = torch.rand(noise_labels.shape[0], 1, device=noise_labels.device) >= self.config.label_dropout
                label = label * keep.to(label.dtype)
            emb = emb + label.to(emb.dtype)
        return F.silu(emb)

    def encode(self, x: Tensor, emb: Tensor, hint: Tensor | None = None) -> list[Tensor]:
        """The encoder's outputs, one a module (the decoder's skips; the last feeds the middle).
        `hint` (a ControlNet's encoded condition) is added after the input convolution."""
        skips = []
        for index, module in enumerate(self.enc.values()):
            x = _run_block(self, module, x, emb) if isinstance(module, UNetBlock) else module(x)
            if index == 0 and hint is not None:
                x = x + hint
            skips.append(x)
        return skips

    def middle_blocks(self) -> list[nn.Module]:
        """The two blocks at the lowest resolution that take no skip (EDM's `in0`, `in1`)."""
        return [module for name, module in self.dec.items() if name.endswith(("_in0", "_in1"))]

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
                control: list[Tensor] | None = None) -> Tensor:
        """control: ControlNet residuals (Zhang et al. 2023), one per encoder output and one for the
        middle's output, added before the decoder reads them (diffusers' `down_block_additional_residuals`
        and `mid_block_additional_residual`); None runs the plain network."""
        emb = self.embedding(noise_labels, class_labels, x.dtype)
        skips = self.encode(x, emb)
        x = skips[-1]
        if control is not None:
            if len(control) != len(skips) + 1:
                raise ValueError(f"control needs {len(skips) + 1} residuals (encoder outputs + middle), got {len(control)}")
            skips = [skip + residual for skip, residual in zip(skips, control)]
        middle = self.middle_blocks()
        for module in self.dec.values():
            if module.takes_skip:
                x = torch.cat([x, skips.pop()], dim=1)
            x = _run_block(self, module, x, emb)
            if control is not None and module is middle[-1]:
                x = x + control[-1]
        return self.out_conv(F.silu(self.out_norm(x)))


# --------------------------------------------------------------------------- DiT


def sincos_2d(dim: int, grid: int) -> Tensor:
    """MAE / DiT fixed 2-D sin-cos table (grid*grid, dim), row-major tokens: the first half encodes
    the column (w) coordinate, the second the row (h); each half is [sin(p w_j), cos(p w_j)] with
    w_j = 10000^(-j / (dim / 4))."""
    if dim % 4:
        raise ValueError(f"hidden size must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")

    def encode(pos: Tensor) -> Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).to(torch.float32)


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """DiT's TimestepEmbedder frequencies: [cos(t f_j), sin(t f_j)], f_j = exp(-ln(max_period) j / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches to tokens (timm PatchEmbed: a strided conv, flattened)."""

    def __init__(self, in_channels: int, hidden: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with per-head query/key normalisation (timm Attention, qk_norm=True)."""

    def __init__(self, hidden: int, heads: int, norm: str):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")
        self.heads, head_dim = heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        make = (lambda: NonScalingLayerNorm(head_dim, eps=1e-5)) if norm == "nonscaling" \
            else (lambda: nn.LayerNorm(head_dim, eps=1e-5))
        self.q_norm, self.k_norm = make(), make()
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, hidden: int, inner: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(hidden, inner)
        self.act = {"gelu": nn.GELU(approximate="tanh"), "relu": nn.ReLU(), "silu": nn.SiLU()}[act]
        self.fc2 = nn.Linear(inner, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block (DiT): parameter-free LayerNorms modulated by
    shift/scale from the conditioning, gated residuals initialised at zero."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, norm: str, act: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads, norm)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio), act)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_a.unsqueeze(1) * self.attn(_modulate(self.norm1(x), shift_a, scale_a))
        return x + gate_m.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_size).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """num_classes + 1 rows; the last row is "no label" (unconditional models use only it)."""

    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding_table(labels)


class DiT(nn.Module):
    """DiT over latents as the sLCT authors run it: F(x_in, noise_labels, class_labels) -> same shape."""

    def __init__(self, config: LCTConfig):
        super().__init__()
        cfg = self.config = config
        self.gradient_checkpointing = False
        d, p = cfg.hidden_size, cfg.patch_size
        if cfg.latent_size % p:
            raise ValueError(f"latent size {cfg.latent_size} is not a multiple of the patch size {p}")
        self.x_embedder = PatchEmbed(cfg.latent_channels, d, p)
        self.register_buffer("pos_embed", sincos_2d(d, cfg.latent_size // p)[None], persistent=False)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.norm, cfg.mlp_act)
                                    for _ in range(cfg.depth))
        self.final_layer = FinalLayer(d, p, cfg.latent_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform linears with zero biases, N(0, 0.02) label table and
        timestep MLP, and zero adaLN modulations and output layer (every block starts as identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for blk in self.blocks:
            _zero(blk.adaLN_modulation[-1])
        _zero(self.final_layer.adaLN_modulation[-1])
        _zero(self.final_layer.linear)

    def unpatchify(self, x: Tensor) -> Tensor:
        p, c = self.config.patch_size, self.config.latent_channels
        g = self.config.latent_size // p
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, g * p, g * p)

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        null = torch.full((b,), self.config.num_classes, dtype=torch.long, device=x.device)
        if class_labels is None:
            labels = null
        else:
            labels = class_labels.long()
            if self.training and self.config.label_dropout:
                drop = torch.rand(b, device=x.device) < self.config.label_dropout
                labels = torch.where(drop, null, labels)
        tokens = self.x_embedder(x) + self.pos_embed.to(x.dtype)
        c = self.t_embedder(noise_labels) + self.y_embedder(labels)
        for blk in self.blocks:
            tokens = _run_block(self, blk, tokens, c)
        return self.unpatchify(self.final_layer(tokens, c))


# --------------------------------------------------------------------------- builders


def build_network(config: LCTConfig) -> nn.Module:
    """The raw network F of the config's arch."""
    return ADMUNet(config) if config.arch == "adm" else DiT(config)


def build_model(config: LCTConfig) -> ConsistencyParametrisation:
    """f(x, sigma, class_labels) = c_skip x + c_out F(c_in x, 250 ln sigma, class_labels): the graph
    that training and the samplers call (`zoo.diffusion.consistency`)."""
    model = ConsistencyParametrisation(build_network(config), sigma_data=config.sigma_data,
                                       sigma_min=config.sigma_min, boundary=True)
    model.config = config
    return model


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Parameter count (works on the meta device)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
