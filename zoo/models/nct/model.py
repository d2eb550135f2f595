"""NCT's controlled one-step generator f_{theta,phi}(z, c): a frozen one-step generator f_theta and a
ControlNet-style adapter phi whose injections start at zero, so that f_{theta,phi}(z, c) = f_theta(z)
before training (Luo et al. 2025, Sec. 3; the adapter is ControlNet's, Zhang et al. 2023).

Two bases, one interface (`noise_shape`, `base_generate(z, labels)`, `generate(z, control, labels)`,
`decode(latents)`):

- `LCTControlModel`: our sLCT family's one-step model (asked of the registry, `create_model("lct")`):
  x = f(sigma_max z, sigma_max) in the frozen autoencoder's latent space, then the decoder. The adapter
  `ADMControlAdapter` is ControlNet for EDM's ADM U-Net: a trainable copy of the base's embedding,
  encoder and middle blocks, initialised from the base; the control image enters through a small
  strided-conv hint encoder (ControlNet's "input hint block") whose last conv is zero, added after the
  copy's input conv; each encoder output and the middle output leave through a zero 1x1 conv and are
  added to the frozen network's skips and middle (`ADMUNet.forward(control=...)`).
- `DiffusersControlModel`: a diffusers one-step generator in `UNet2DConditionModel` layout (SD-Turbo /
  DMD2 style: one UNet call at timestep 999 on z ~ N(0, I), x0 from the epsilon or v prediction) with a
  diffusers `ControlNetModel` (made with `ControlNetModel.from_unet`) as its adapter, and an
  `AutoencoderKL`. It runs with an empty prompt: the prompt embedding is a buffer (zeros unless a
  local text encoder's embedding of "" is given); prompts are not an input of this family.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from .controls import CONTROLS

# The paper's base (SD1.5 made one-step with Diff-Instruct) in diffusers' layout: UNet2DConditionModel's
# defaults are SD1.5's except the text width (768) and the latent size (64 for 512 px).
SD15_UNET = {"sample_size": 64, "cross_attention_dim": 768}


@dataclass
class NCTConfig:
    """A variant: which control, which base generator, and the adapter's sizes."""

    control: str = "canny"
    base: str = "lct"  # lct: our sLCT family's one-step model | diffusers: UNet2DConditionModel + ControlNetModel
    base_variant: str = "micro"  # the lct variant (base "lct")
    image_size: int = 32
    hint_channels: tuple[int, ...] = (16, 32, 64)  # ControlNet's hint encoder widths (one stride-2 conv between each)
    # base "diffusers": UNet2DConditionModel / AutoencoderKL configs (dicts as diffusers takes them)
    unet: dict[str, Any] = field(default_factory=dict)
    autoencoder_variant: str = "sd-f8"  # zoo.diffusion.autoencoder preset of the diffusers base's VAE
    timestep: int = 999  # the one-step generator's timestep (SD-Turbo, DMD2)
    prediction_type: str = "epsilon"  # epsilon | v_prediction
    beta_start: float = 0.00085  # SD's scaled-linear betas, for x0 from the UNet's prediction
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    class_names: tuple[str, ...] = ()  # the base's classes (class-conditional lct bases)

    def __post_init__(self) -> None:
        if self.control not in CONTROLS:
            raise ValueError(f"control must be one of {', '.join(CONTROLS)}, got {self.control!r}")
        if self.base not in ("lct", "diffusers"):
            raise ValueError(f"base must be 'lct' or 'diffusers', got {self.base!r}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be epsilon or v_prediction, got {self.prediction_type!r}")
        self.hint_channels = tuple(int(c) for c in self.hint_channels)
        self.class_names = tuple(self.class_names)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class HintEncoder(nn.Module):
    """ControlNet's input hint block: control image (B, 3, H, W) -> (B, out, H / 2^(n-1), W / 2^(n-1)),
    convs of `channels` widths with a stride-2 conv between each, SiLU, and a zero final conv."""

    def __init__(self, channels: tuple[int, ...], out_channels: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1), nn.SiLU()]
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(cin, cin, 3, padding=1), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1, stride=2), nn.SiLU()]
        layers.append(_zero(nn.Conv2d(channels[-1], out_channels, 3, padding=1)))
        self.layers = nn.Sequential(*layers)

    def forward(self, control: Tensor) -> Tensor:
        return self.layers(control)


class ADMControlAdapter(nn.Module):
    """ControlNet for our ADM U-Net (see the module docstring): adapter(x_in, noise_labels, class_labels,
    control) -> residuals, one per encoder output and one for the middle, as `ADMUNet.forward(control=)`
    takes them. `copy` is the base network with its decoder (but the middle blocks) and output removed."""

    def __init__(self, net: Any, hint_channels: tuple[int, ...], factor: int):
        super().__init__()
        if not hasattr(net, "middle_blocks"):
            raise ValueError(f"NCT's ADM adapter needs an ADM U-Net base, got {type(net).__name__} "
                             "(the lct family's DiT variants take no ControlNet)")
        if 2 ** (len(hint_channels) - 1) != factor:
            raise ValueError(f"the hint encoder downsamples by {2 ** (len(hint_channels) - 1)}, the autoencoder by {factor}")
        self.copy: Any = copy.deepcopy(net)
        for name in [n for n in self.copy.dec if not n.endswith(("_in0", "_in1"))]:
            del self.copy.dec[name]
        self.copy.out_norm, self.copy.out_conv = nn.Identity(), nn.Identity()
        self.copy.requires_grad_(True)
        first = next(iter(self.copy.enc.values()))
        self.hint = HintEncoder(hint_channels, first.out_channels)
        widths = [m.out_channels for m in self.copy.enc.values()] + [self.copy.middle_blocks()[-1].out_channels]
        self.zero_convs = nn.ModuleList(_zero(nn.Conv2d(c, c, 1)) for c in widths)

    def forward(self, x_in: Tensor, noise_labels: Tensor, class_labels: Tensor | None, control: Tensor) -> list[Tensor]:
        emb = self.copy.embedding(noise_labels, class_labels, x_in.dtype)
        outputs = self.copy.encode(x_in, emb, hint=self.hint(control.to(x_in.dtype)))
        x = outputs[-1]
        for block in self.copy.middle_blocks():
            x = block(x, emb)
        return [conv(h) for conv, h in zip(self.zero_convs, [*outputs, x])]


class LCTControlModel(nn.Module):
    """What an lct-based NCT weights file holds: `base.*` (the frozen consistency model f_theta),
    `codec.*` (its frozen autoencoder) and `adapter.*` (phi, the only trainable part)."""

    def __init__(self, config: NCTConfig, base: Any):
        super().__init__()
        self.config = config
        lct = base.config
        self.net_config: Any = lct.net
        self.base: Any = base.denoiser
        self.codec: Any = base.codec
        self.base.requires_grad_(False)
        self.codec.requires_grad_(False)
        self.adapter = ADMControlAdapter(self.base.net, config.hint_channels, self.codec.factor)

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        return tuple(self.net_config.latent_shape)

    @property
    def num_classes(self) -> int:
        return int(self.net_config.num_classes)

    def base_generate(self, z: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """f_theta(z): the frozen one-step generator (sLCT's one-step sample from noise z ~ N(0, I))."""
        sigma_max = self.net_config.sigma_max
        return self.base(z * sigma_max, torch.full((z.shape[0],), sigma_max, device=z.device), class_labels)

    def generate(self, z: Tensor, control: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """f_{theta,phi}(z, c): the same call with the adapter's residuals."""
        sigma_max = self.net_config.sigma_max
        return self.base(z * sigma_max, torch.full((z.shape[0],), sigma_max, device=z.device), class_labels,
                         adapter=self.adapter, condition=control)

    def decode(self, latents: Tensor) -> Tensor:
        return self.codec.decode(latents).clamp(0, 1)


class DiffusersControlModel(nn.Module):
    """A diffusers one-step generator with a diffusers ControlNetModel adapter (module docstring).
    `unet.*`, `codec.*` frozen; `adapter.*` (the ControlNetModel) trainable."""

    prompt_embeds: Tensor

    def __init__(self, config: NCTConfig):
        super().__init__()
        from diffusers import ControlNetModel, UNet2DConditionModel

        from zoo.diffusion.autoencoder import LatentCodec, build_autoencoder
        from zoo.diffusion.autoencoder import preset_config as autoencoder_preset

        self.config = config
        self.unet: Any = cast(Any, UNet2DConditionModel(**config.unet))  # diffusers is untyped for mypy
        vae = autoencoder_preset(config.autoencoder_variant)
        # SD's latent convention (latents = z * scaling_factor), which the one-step UNet was trained on
        self.codec: Any = LatentCodec(build_autoencoder(vae), scaling=vae.scaling_factor, shift=0.0)
        factor = self.codec.factor
        hint = tuple(config.hint_channels)
        if 2 ** (len(hint) - 1) != factor:
            raise ValueError(f"hint_channels {hint} downsample by {2 ** (len(hint) - 1)}, the autoencoder by {factor}")
        self.adapter: Any = ControlNetModel.from_unet(self.unet, conditioning_embedding_out_channels=hint)
        self.unet.requires_grad_(False)
        self.codec.requires_grad_(False)
        cross = self.unet.config.cross_attention_dim
        self.register_buffer("prompt_embeds", torch.zeros(1, 77, int(cross)))
        self.alpha, self.sigma = one_step_scalings(config)

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        size = self.config.image_size // self.codec.factor
        return (int(self.unet.config.in_channels), size, size)

    num_classes = 0

    def _x0(self, z: Tensor, prediction: Tensor) -> Tensor:
        if self.config.prediction_type == "epsilon":
            return (z - self.sigma * prediction) / self.alpha
        return self.alpha * z - self.sigma * prediction  # v-prediction

    def _unet(self, z: Tensor, **residuals: Any) -> Tensor:
        t = torch.full((z.shape[0],), self.config.timestep, device=z.device, dtype=torch.long)
        prompt = self.prompt_embeds.expand(z.shape[0], -1, -1).to(z.dtype)
        return self.unet(z, t, encoder_hidden_states=prompt, return_dict=False, **residuals)[0]

    def base_generate(self, z: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """f_theta(z): x0 of the one UNet call at `timestep` (raw latents, scaled as the codec's)."""
        return self._x0(z, self._unet(z))

    def generate(self, z: Tensor, control: Tensor, class_labels: Tensor | None = None) -> Tensor:
        t = torch.full((z.shape[0],), self.config.timestep, device=z.device, dtype=torch.long)
        prompt = self.prompt_embeds.expand(z.shape[0], -1, -1).to(z.dtype)
        down, mid = self.adapter(z, t, encoder_hidden_states=prompt, controlnet_cond=control.to(z.dtype), return_dict=False)
        return self._x0(z, self._unet(z, down_block_additional_residuals=down, mid_block_additional_residual=mid))

    def decode(self, latents: Tensor) -> Tensor:
        return self.codec.decode(latents).clamp(0, 1)


def one_step_scalings(config: NCTConfig) -> tuple[float, float]:
    """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) at the one-step timestep of SD's scaled-linear betas
    (plain Python: the model may be built on the meta device)."""
    n = config.num_train_timesteps
    start, end = config.beta_start ** 0.5, config.beta_end ** 0.5
    alpha_bar = 1.0
    for i in range(config.timestep + 1):
        beta = (start + (end - start) * i / (n - 1)) ** 2
        alpha_bar *= 1.0 - beta
    return alpha_bar ** 0.5, (1.0 - alpha_bar) ** 0.5


class GenerateGraph(nn.Module):
    """The exported graph: (noise (B, C, h, w), control (B, 3, H, W) in [0, 1], [class_label (B,)]) ->
    image (B, 3, H, W) in [0, 1]: generator and adapter in one forward pass, then the decoder."""

    def __init__(self, model: Any):
        super().__init__()
        self.model: Any = model

    def forward(self, noise: Tensor, control: Tensor, class_label: Tensor | None = None) -> Tensor:
        return self.model.decode(self.model.generate(noise, control, class_label))



# Either base, as training, the pipeline and the metrics take it.
ControlModel = LCTControlModel | DiffusersControlModel
