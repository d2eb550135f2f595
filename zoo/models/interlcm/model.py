"""InterLCM's networks (Li et al., ICLR 2025, Sec. 3 and Fig. 2), built from diffusers and transformers parts.

- The frozen latent consistency model: a diffusers `UNet2DConditionModel` with the guidance embedding
  (`time_cond_proj_dim`, LCM's w-conditioning; SD1.5-sized for LCM_Dreamshaper_v7), an `AutoencoderKL`
  (latents = posterior mean x `latent_scale`, 0.18215 for SD's VAE) and LCM's schedule (diffusers
  `LCMScheduler`: scaled-linear betas, 50 original steps, c_skip / c_out boundary conditions with
  timestep_scaling 10 and sigma_data 0.5).
- The Visual Module (Sec. 3.2): a transformers `CLIPVisionModel` (ViT-B/16 at paper size), frozen, whose
  every token after the last LayerNorm (`post_layernorm`, CLIP's ln_post; no projection) goes through our
  trainable `VisualEncoder`, a 1-D conv / attention network (the official `VisualEncoder` layout: tokens
  are the conv channels, the feature axis is the length) to 77 x D prompt embeddings that take the place
  of the text embedding in every cross-attention.
- The Spatial Encoder (Sec. 3.3): a ControlNet (diffusers `ControlNetModel`) copy of the UNet, trainable,
  conditioned on the LQ image in [-1, 1], its residuals added to the UNet's skips and middle block.
  diffusers' `ControlNetModel.from_unet` refuses a UNet with `time_cond_proj_dim` (the ControlNet class has
  no guidance embedding, so copying the UNet's `time_embedding` fails on `cond_proj.weight`). We build it
  with `from_unet(..., load_weights_from_unet=False)` and copy the UNet's conv_in, time projection and
  embedding (without `cond_proj`), down and middle blocks ourselves (`spatial_encoder_from_unet`): the
  ControlNet runs without the guidance embedding, as the official one does (it is `from_unet` of SD1.5's
  UNet, which has none, and is called without `timestep_cond`, `basicsr/utils/lcm_utils.py`).
- The chain (Sec. 3.1, Eq. 6-7): the LQ latent is taken as the x0 estimate of the first LCM step (at t0 = 999),
  re-noised to t1 by the scheduler, then the remaining steps run the UNet with the ControlNet; the 4-step
  timesteps are diffusers' LCMScheduler.set_timesteps(4) = [999, 759, 499, 259] (2 steps: [999, 499]).

Graphs take and return tensors only: `encode` (image -> latents), `visual` (image -> prompt embeddings),
`denoise` (one LCM step's x0 estimate with the ControlNet residuals), `decode` (latents -> image). The
re-noising between steps is two multiply-adds the pipeline does in Python (`InterLCMModel.renoise`), so the
loop runs the same over PyTorch and ONNX Runtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# SD1.5's UNet in diffusers' layout with LCM_Dreamshaper_v7's guidance embedding (time_cond_proj_dim 256).
SD15_UNET: dict[str, Any] = {"sample_size": 64, "cross_attention_dim": 768, "time_cond_proj_dim": 256}
# CLIP ViT-B/16 vision tower (transformers CLIPVisionConfig defaults are ViT-B/32's but the patch size).
CLIP_B16: dict[str, Any] = {"patch_size": 16, "image_size": 224, "hidden_size": 768, "num_hidden_layers": 12,
                            "num_attention_heads": 12, "intermediate_size": 3072, "projection_dim": 512}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class InterLCMConfig:
    """A variant. Dicts are diffusers / transformers constructor arguments."""

    image_size: int = 64  # face crop side the networks run at (paper 512)
    unet: dict[str, Any] = field(default_factory=dict)  # UNet2DConditionModel(**unet); must set time_cond_proj_dim
    vae: dict[str, Any] = field(default_factory=dict)  # AutoencoderKL(**vae)
    latent_scale: float = 0.18215  # SD's scaling factor (micro: measured after the base stage, a buffer)
    clip: dict[str, Any] = field(default_factory=dict)  # CLIPVisionConfig(**clip)
    encoder_nf: int = 64  # VisualEncoder (official: nf 64, ch_mult (2, 4, 8), 2 res blocks, GroupNorm 32)
    encoder_mult: tuple[int, ...] = (2, 4, 8)
    encoder_blocks: int = 2
    encoder_groups: int = 32
    prompt_tokens: int = 77  # the text embedding's length the LCM was trained with
    hint_channels: tuple[int, ...] = (16, 32, 96, 256)  # ControlNet's conditioning embedding (diffusers default)
    guidance_scale: float = 8.0  # LCM's w (embedded as w - 1, the Imagen CFG form diffusers uses)
    num_steps: int = 4  # LCM steps (the paper trains one model per step count: 4 and 2)
    original_steps: int = 50  # lcm_origin_steps
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    timestep_scaling: float = 10.0

    def __post_init__(self) -> None:
        self.encoder_mult = tuple(int(m) for m in self.encoder_mult)
        self.hint_channels = tuple(int(c) for c in self.hint_channels)
        if self.unet and not self.unet.get("time_cond_proj_dim"):
            raise ValueError("InterLCM's frozen LCM UNet takes the guidance embedding: set unet['time_cond_proj_dim']")


# --------------------------------------------------------------------------- LCM schedule (diffusers LCMScheduler)


def lcm_alphas_cumprod(config: InterLCMConfig) -> list[float]:
    """alpha_bar_t of SD's scaled-linear betas (plain Python, so a meta-device build works)."""
    n = config.num_train_timesteps
    start, end = config.beta_start ** 0.5, config.beta_end ** 0.5
    out, prod = [], 1.0
    for i in range(n):
        prod *= 1.0 - (start + (end - start) * i / (n - 1)) ** 2
        out.append(prod)
    return out


def lcm_timesteps(config: InterLCMConfig, steps: int | None = None) -> list[int]:
    """The LCM timesteps of `steps` steps, as diffusers' LCMScheduler.set_timesteps gives them."""
    from diffusers import LCMScheduler

    scheduler: Any = LCMScheduler(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start,
                             beta_end=config.beta_end, beta_schedule="scaled_linear",
                             original_inference_steps=config.original_steps, timestep_scaling=config.timestep_scaling)
    scheduler.set_timesteps(int(steps or config.num_steps))
    return [int(t) for t in scheduler.timesteps]


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """LCM's guidance-scale embedding (VDM's sinusoidal embedding of 1000 w; diffusers
    LatentConsistencyModelPipeline.get_guidance_scale_embedding)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1)))
    angles = (w.float() * 1000.0)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


# --------------------------------------------------------------------------- Visual Module


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(groups, channels), num_channels=channels, eps=1e-6, affine=True)


class Upsample1D(nn.Module):
    """Nearest resize of the feature axis to `length`, then a 3-tap conv (official `Upsample_visual_encoder`,
    whose lengths 768 -> 256 -> 512 -> 768 are ours as D -> D/n -> 2D/n -> ... -> D)."""

    def __init__(self, channels: int, length: int):
        super().__init__()
        self.length = int(length)
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, size=self.length, mode="nearest"))


class ResBlock1D(nn.Module):
    """GroupNorm-swish-conv x 2 with a 1x1 shortcut when the width changes."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv1d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv1d(cout, cout, 3, padding=1)
        self.conv_out = nn.Conv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.conv_out(x) if self.conv_out is not None else x)


class AttnBlock1D(nn.Module):
    """Single-head self-attention over the feature axis, 1x1-conv q/k/v/out, residual."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q, self.k, self.v = (nn.Conv1d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)  # (B, C, L)
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * (q.shape[1] ** -0.5), dim=2)  # (B, L, L)
        return x + self.proj_out(torch.bmm(v, w.transpose(1, 2)))


class VisualEncoder(nn.Module):
    """CLIP tokens (B, N, D) -> prompt embeddings (B, 77, D) (Sec. 3.2). Conv1d over N token channels along
    the D feature axis; `blocks.*` in the official checkpoint's order: conv in, upsample, res-attn-res,
    then per level (deepest first) `res_blocks` ResBlocks (with attention at the deepest level) and an
    upsample between levels, GroupNorm, conv to 77 channels."""

    def __init__(self, tokens: int, dim: int, nf: int, mult: tuple[int, ...], res_blocks: int, groups: int, out_tokens: int = 77):
        super().__init__()
        levels = len(mult)
        if dim % levels:
            raise ValueError(f"the feature width {dim} must divide into {levels} levels (the official lengths are 768 / 3 x k)")
        width = nf * mult[-1]
        blocks: list[nn.Module] = [nn.Conv1d(tokens, width, 3, padding=1), Upsample1D(width, dim // levels),
                                   ResBlock1D(width, width, groups), AttnBlock1D(width, groups), ResBlock1D(width, width, groups)]
        for i in reversed(range(levels)):
            out = nf * mult[i]
            for _ in range(res_blocks):
                blocks.append(ResBlock1D(width, out, groups))
                width = out
                if i == levels - 1:
                    blocks.append(AttnBlock1D(width, groups))
            if i:
                blocks.append(Upsample1D(width, dim * (levels - i + 1) // levels))
        blocks += [_norm(width, groups), nn.Conv1d(width, out_tokens, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, tokens: Tensor) -> Tensor:
        x = tokens
        for block in self.blocks:
            x = block(x)
        return x


def spatial_encoder_from_unet(unet: Any, hint_channels: tuple[int, ...], copy_weights: bool = True) -> Any:
    """A diffusers ControlNetModel copy of a UNet that has the guidance embedding (module docstring):
    built with from_unet(load_weights_from_unet=False), then the UNet's weights copied but `cond_proj`."""
    from diffusers import ControlNetModel

    controlnet: Any = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(hint_channels),
                                                load_weights_from_unet=False)
    if copy_weights:
        controlnet.conv_in.load_state_dict(unet.conv_in.state_dict())
        controlnet.time_proj.load_state_dict(unet.time_proj.state_dict())
        embedding = {k: v for k, v in unet.time_embedding.state_dict().items() if not k.startswith("cond_proj.")}
        controlnet.time_embedding.load_state_dict(embedding)
        controlnet.down_blocks.load_state_dict(unet.down_blocks.state_dict())
        controlnet.mid_block.load_state_dict(unet.mid_block.state_dict())
    return controlnet


class InterLCMModel(nn.Module):
    """What an InterLCM weights file holds: `unet.*`, `vae.*`, `clip.*` (frozen), `visual_encoder.*` and
    `controlnet.*` (trained), the buffer `latent_scale`."""

    latent_scale: Tensor
    alphas_cumprod: Tensor
    guidance_emb: Tensor
    clip_mean: Tensor
    clip_std: Tensor

    def __init__(self, config: InterLCMConfig):
        super().__init__()
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPVisionConfig, CLIPVisionModel

        self.config = config
        self.unet: Any = cast(Any, UNet2DConditionModel(**config.unet))
        self.vae: Any = cast(Any, AutoencoderKL(**config.vae))
        self.clip: Any = CLIPVisionModel(CLIPVisionConfig(**config.clip))
        clip_cfg: Any = self.clip.config
        tokens = (clip_cfg.image_size // clip_cfg.patch_size) ** 2 + 1
        dim = int(self.unet.config.cross_attention_dim)
        if dim != clip_cfg.hidden_size:
            raise ValueError(f"the UNet's cross-attention width {dim} must be CLIP's token width {clip_cfg.hidden_size}")
        self.visual_encoder = VisualEncoder(tokens, dim, config.encoder_nf, config.encoder_mult, config.encoder_blocks,
                                            config.encoder_groups, config.prompt_tokens)
        self.controlnet: Any = spatial_encoder_from_unet(self.unet, config.hint_channels)
        self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if 2 ** (len(config.hint_channels) - 1) != self.factor:
            raise ValueError(f"hint_channels {config.hint_channels} downsample by {2 ** (len(config.hint_channels) - 1)}, "
                             f"the VAE by {self.factor}")
        for frozen in (self.unet, self.vae, self.clip):
            frozen.requires_grad_(False)
        for net in (self.unet, self.vae, self.controlnet):
            # diffusers blocks recompute through `_gradient_checkpointing_func`: set it (checkpointing stays off), so
            # flipping `gradient_checkpointing` (the loop's grad_checkpointing, zoo.memory's estimate) works
            net._set_gradient_checkpointing(enable=False)
        self.register_buffer("latent_scale", torch.tensor(float(config.latent_scale)))
        self.register_buffer("alphas_cumprod", torch.tensor(lcm_alphas_cumprod(config)), persistent=False)
        w = torch.tensor([config.guidance_scale - 1.0])
        self.register_buffer("guidance_emb", guidance_embedding(w, int(config.unet["time_cond_proj_dim"])), persistent=False)
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> InterLCMModel:
        super().train(mode)
        for frozen in (self.unet, self.vae, self.clip):
            frozen.eval()  # frozen parts never follow the loop's mode
        return self

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.config.image_size // self.factor
        return (int(self.unet.config.in_channels), size, size)

    # -- the four graphs' bodies ---------------------------------------------------------
    def encode(self, image: Tensor) -> Tensor:
        """Image (B, 3, H, W) in [0, 1] -> the posterior mean x latent_scale (the official `latent_dist.mean * 0.18215`)."""
        return self.vae.encode(image * 2 - 1).latent_dist.mean * self.latent_scale

    def decode(self, latents: Tensor) -> Tensor:
        """Latents -> image (B, 3, H, W) in [0, 1] (unclamped: training takes the loss on it as it is)."""
        return (self.vae.decode(latents / self.latent_scale).sample + 1) / 2

    def prompt(self, image: Tensor) -> Tensor:
        """The Visual Module: image in [0, 1] -> CLIP's preprocessing (bicubic resize to CLIP's side, its
        mean / std) -> every token after post_layernorm -> VisualEncoder -> (B, 77, D)."""
        side = int(self.clip.config.image_size)
        x = F.interpolate(image, size=(side, side), mode="bicubic", align_corners=False) if image.shape[-1] != side else image
        x = (x - self.clip_mean) / self.clip_std
        tokens = self.clip(pixel_values=x).last_hidden_state
        tokens = self.clip.post_layernorm(tokens)
        return self.visual_encoder(tokens)

    def denoise(self, latents: Tensor, timestep: Tensor, prompt: Tensor, lq: Tensor) -> Tensor:
        """One LCM step's x0 estimate with the Spatial Encoder (Eq. 7 of LCM with ControlNet residuals):
        eps = UNet(x_t, t, w; prompt, ControlNet(x_t, t; prompt, LQ)); x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t);
        denoised = c_out(t) x0 + c_skip(t) x_t. timestep: (B,) int64."""
        t = timestep.long()
        cond = lq.to(latents.dtype) * 2 - 1
        down, mid = self.controlnet(latents, t, encoder_hidden_states=prompt, controlnet_cond=cond, return_dict=False)
        w = self.guidance_emb.expand(latents.shape[0], -1).to(latents.dtype)
        eps = self.unet(latents, t, encoder_hidden_states=prompt, timestep_cond=w, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
        alpha = self.alphas_cumprod.to(latents.dtype).index_select(0, t).view(-1, 1, 1, 1)
        x0 = (latents - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        scaled = t.to(latents.dtype).view(-1, 1, 1, 1) * self.config.timestep_scaling
        c_skip = 0.25 / (scaled ** 2 + 0.25)
        c_out = scaled / (scaled ** 2 + 0.25).sqrt()
        return c_out * x0 + c_skip * latents

    # -- the chain (Sec. 3.1) -------------------------------------------------------------
    def renoise(self, denoised: Tensor, timestep: int, noise: Tensor) -> Tensor:
        """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise: LCM's multistep re-noising to the next timestep."""
        a = float(self.alphas_cumprod[int(timestep)])
        return a ** 0.5 * denoised + (1 - a) ** 0.5 * noise

    def restore_latents(self, lq: Tensor, prompt: Tensor, noises: list[Tensor], steps: int | None = None,
                        start: str = "lq", lq_latents: Tensor | None = None) -> Tensor:
        """The few-step chain, differentiable (training runs it with gradients). start "lq" (InterLCM): the
        LQ latent is step 1's x0 estimate, re-noised to t1, then UNet calls at t1 ... t_{n-1}; start "noise"
        (the ablation): plain LCM from noises[0] at t0, a UNet call at every timestep. noises: one (B, C, h, w)
        draw per re-noising (n - 1 of them; "noise" uses one more, first, as x_T)."""
        timesteps = lcm_timesteps(self.config, steps)
        batch = lq.shape[0]
        if start == "lq":
            denoised = self.encode(lq) if lq_latents is None else lq_latents
            first = 1
        elif start == "noise":
            x = noises[0]
            noises = noises[1:]
            first = 0
        else:
            raise ValueError(f"start must be 'lq' or 'noise', got {start!r}")
        for i in range(first, len(timesteps)):
            if i > 0:
                x = self.renoise(denoised, timesteps[i], noises[i - 1])
            t = torch.full((batch,), timesteps[i], dtype=torch.long, device=lq.device)
            denoised = self.denoise(x, t, prompt, lq)
        return denoised


# --------------------------------------------------------------------------- exported graphs


class EncodeGraph(nn.Module):
    def __init__(self, model: InterLCMModel):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model.encode(image)


class VisualGraph(nn.Module):
    def __init__(self, model: InterLCMModel):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model.prompt(image)


class DenoiseGraph(nn.Module):
    def __init__(self, model: InterLCMModel):
        super().__init__()
        self.model = model

    def forward(self, latents: Tensor, timestep: Tensor, prompt: Tensor, lq: Tensor) -> Tensor:
        return self.model.denoise(latents, timestep, prompt, lq)


class DecodeGraph(nn.Module):
    def __init__(self, model: InterLCMModel):
        super().__init__()
        self.model = model

    def forward(self, latents: Tensor) -> Tensor:
        return self.model.decode(latents).clamp(0, 1)
