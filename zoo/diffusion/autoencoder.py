"""The latent stage: KL autoencoders (diffusers `AutoencoderKL`), their training, and the codec
that turns images into standardised latents and back.

Architecture: the LDM / Stable Diffusion KL autoencoder (Rombach et al., "High-Resolution Image
Synthesis with Latent Diffusion Models", CVPR 2022, Sec. 3.1 and App. G), built from diffusers'
`AutoencoderKL` rather than rewritten, so that Stable Diffusion's VAE folders load unchanged.

- `sd-f8`: Stable Diffusion's VAE config (channels 128-256-512-512, 2 res blocks a level, 4 latent
  channels, 8x downsampling, mid-block attention, scaling factor 0.18215): 83,653,863 parameters.
- `micro-f4`: 32-64-64 channels, 1 res block a level, 4x downsampling: a 32x32 RGB image becomes an
  8x8x4 latent (the compression of SD's f8 at 256 px is 48x; this one is 12x). For CPU training
  and the latent consistency family's demos.
- `micro-f8`: 32-64-64-64, 8x downsampling (64x64 -> 8x8x4).

Objective (`autoencoder_loss`), LDM's `LPIPSWithDiscriminator` before its discriminator starts
(the reference configs start it at step 50,001): images in [-1, 1],
    L = sum_pixels(|x - x_hat| + w_p * d_perc(x, x_hat)) / B + w_KL * sum_latents KL(q(z|x) || N(0, I)) / B
with w_p = 1 (its default `perceptual_weight`) and w_KL = 1e-6 (the `kl_weight` of every LDM KL
autoencoder config), the reconstruction decoded from a posterior sample. (The card's micro variants
train with w_p = 0.1: our uncalibrated perceptual distance is an order of magnitude larger than
LPIPS-calibrated values; see zoo/models/autoencoder/__init__.py for the pilot.) We divide L by the number
of pixel values 3HW so logged numbers read as per-pixel errors (Adam does not see a constant
factor). Left out, and why: the PatchGAN term (it starts after 50k steps, beyond our CPU runs) and
the learned scalar log-variance of the NLL (initialised at 0, it leaves the loss as above).
The perceptual term is an LPIPS-style distance in a frozen local network (`perceptual.py`), since
LPIPS' VGG weights cannot be downloaded here.

Latent standardisation (`LatentCodec`), as sLCT (Dao et al., ICLR 2025) does for the SD VAE's
latents: per-channel mean and standard deviation of the posterior means over training images,
then z_std = sigma_data * (z - mean) / std with sigma_data = 0.5. The codec stores this as
`latents = (z - shift) * scaling` (shift = mean, scaling = sigma_data / std, buffers saved with the
weights). In a diffusers folder it is written as diffusers' own latent fields: `scaling_factor` =
sigma_data, `latents_mean`, `latents_std` (latents = (z - mean) * scaling_factor / std, the SDXL
convention). A VAE whose config has no statistics (SD 1.x: `scaling_factor` 0.18215 alone, chosen
so that scaled latents have unit variance) gets scaling = scaling_factor * sigma_data and shift 0
until `codec.fit(images)` measures its statistics.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.trainable import TrainConfig, TrainTask

SD_VAE_PARAMS = 83_653_863  # Stable Diffusion v1 VAE (runwayml / CompVis configs), counted by diffusers
SIGMA_DATA = 0.5  # sLCT / iCT: latents standardised to standard deviation 0.5


@dataclass
class AutoencoderConfig:
    """An `AutoencoderKL` architecture plus how its latents are scaled (see the module docstring)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    image_channels: int = 3
    sample_size: int = 32  # the training image side (diffusers' `sample_size`; any multiple of `factor` runs)
    mid_block_add_attention: bool = True
    scaling_factor: float = 1.0  # diffusers' field; used only while the latent statistics are unmeasured
    sigma_data: float = SIGMA_DATA

    @property
    def factor(self) -> int:
        """Downsampling factor: 2 ** (number of levels - 1)."""
        return 2 ** (len(self.block_out_channels) - 1)

    def diffusers_config(self) -> dict[str, Any]:
        """Keyword arguments of `diffusers.AutoencoderKL`."""
        levels = len(self.block_out_channels)
        return {
            "in_channels": self.image_channels, "out_channels": self.image_channels,
            "down_block_types": ("DownEncoderBlock2D",) * levels, "up_block_types": ("UpDecoderBlock2D",) * levels,
            "block_out_channels": tuple(self.block_out_channels), "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels, "norm_num_groups": self.norm_num_groups,
            "sample_size": self.sample_size, "mid_block_add_attention": self.mid_block_add_attention,
            "scaling_factor": self.scaling_factor,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AutoencoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown autoencoder config fields {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @classmethod
    def from_diffusers(cls, config: dict[str, Any]) -> AutoencoderConfig:
        """Our config from an `AutoencoderKL` config (a `config.json` or `vae.config`)."""
        for key in ("down_block_types", "up_block_types"):
            kinds = set(config.get(key, ()))
            if kinds - {"DownEncoderBlock2D", "UpDecoderBlock2D"}:
                raise ValueError(f"unsupported {key} {sorted(kinds)}: only DownEncoderBlock2D / UpDecoderBlock2D")
        return cls(block_out_channels=tuple(config["block_out_channels"]), layers_per_block=int(config["layers_per_block"]),
                   latent_channels=int(config["latent_channels"]), norm_num_groups=int(config["norm_num_groups"]),
                   image_channels=int(config["in_channels"]), sample_size=int(_first(config.get("sample_size", 32))),
                   mid_block_add_attention=bool(config.get("mid_block_add_attention", True)),
                   scaling_factor=float(config.get("scaling_factor") or 1.0))


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


PRESETS: dict[str, AutoencoderConfig] = {
    "micro-f4": AutoencoderConfig(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16, sample_size=32),
    "micro-f8": AutoencoderConfig(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=16, sample_size=64),
    # Stable Diffusion v1's VAE (kl-f8; sd-vae-ft-mse has the same architecture)
    "sd-f8": AutoencoderConfig(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                               sample_size=512, scaling_factor=0.18215),
}


def preset_config(name: str) -> AutoencoderConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown autoencoder preset {name!r}; presets: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def build_autoencoder(config: AutoencoderConfig) -> Any:
    """A randomly initialised `diffusers.AutoencoderKL` of this config."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**config.diffusers_config())


# ---------------------------------------------------------------------------------------------- codec
def _per_channel(value: Any, channels: int) -> Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float32).flatten()
    if tensor.numel() == 1:
        tensor = tensor.repeat(channels)
    if tensor.numel() != channels:
        raise ValueError(f"expected 1 or {channels} values (one a latent channel), got {tensor.numel()}")
    return tensor.clone()


class LatentCodec(nn.Module):
    """Images in [0, 1] <-> standardised latents: `latents = (z - shift) * scaling`, per channel.

    vae: a diffusers `AutoencoderKL`; scaling / shift: floats or (C,) tensors; None takes them from
    the VAE's config (see the module docstring). `fit(images)` measures them on training images.
    The codec is what a trained autoencoder saves: `vae.*` weights plus the `scaling` and `shift` buffers."""

    def __init__(self, vae: Any, scaling: Any = None, shift: Any = None, sigma_data: float = SIGMA_DATA) -> None:
        super().__init__()
        self.vae = vae
        self.sigma_data = float(sigma_data)
        c = self.latent_channels
        default_scaling, default_shift = _config_statistics(vae.config, self.sigma_data)
        self.register_buffer("scaling", _per_channel(default_scaling if scaling is None else scaling, c))
        self.register_buffer("shift", _per_channel(default_shift if shift is None else shift, c))

    @classmethod
    def from_config(cls, config: AutoencoderConfig) -> LatentCodec:
        return cls(build_autoencoder(config), sigma_data=config.sigma_data)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # -- the two halves (tensor in, tensor out) ------------------------------------------------
    def posterior(self, images: Tensor) -> Any:
        """q(z | x) (diffusers' DiagonalGaussianDistribution) of images in [0, 1]."""
        return self.vae.encode(images * 2 - 1).latent_dist

    def posterior_mean(self, images: Tensor) -> Tensor:
        """The mean of q(z | x), unscaled: encoder -> quant_conv -> first half of the moments."""
        h = self.vae.encoder(images * 2 - 1)
        if self.vae.quant_conv is not None:
            h = self.vae.quant_conv(h)
        return h[:, : self.latent_channels]

    def standardise(self, z: Tensor) -> Tensor:
        return (z - self.shift.view(1, -1, 1, 1)) * self.scaling.view(1, -1, 1, 1)

    def unstandardise(self, latents: Tensor) -> Tensor:
        return latents / self.scaling.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)

    def decode_raw(self, z: Tensor) -> Tensor:
        """Unscaled latents -> images in [-1, 1] (unclamped): post_quant_conv -> decoder."""
        if self.vae.post_quant_conv is not None:
            z = self.vae.post_quant_conv(z)
        return self.vae.decoder(z)

    def encode(self, images: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Images (B, 3, H, W) in [0, 1], H and W multiples of `factor` -> standardised latents
        (B, C, H/f, W/f): the posterior mean, or a posterior sample with `sample=True`."""
        z = self.posterior(images).sample(generator) if sample else self.posterior_mean(images)
        return self.standardise(z)

    def decode(self, latents: Tensor) -> Tensor:
        """Standardised latents -> images in [0, 1] (clamped)."""
        return ((self.decode_raw(self.unstandardise(latents)) + 1) / 2).clamp(0, 1)

    # -- statistics ---------------------------------------------------------------------------
    @torch.no_grad()
    def measure(self, batches: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
        """Per-channel mean and standard deviation of the posterior means over image batches in [0, 1]."""
        device = self.scaling.device
        total = sq = None
        count = 0
        for images in batches:
            z = self.posterior_mean(images.to(device)).double()
            s, s2 = z.sum(dim=(0, 2, 3)), z.pow(2).sum(dim=(0, 2, 3))
            total = s if total is None else total + s
            sq = s2 if sq is None else sq + s2
            count += z.shape[0] * z.shape[2] * z.shape[3]
        if not count:
            raise ValueError("no images to measure latent statistics on")
        mean = total / count
        var = (sq / count - mean.pow(2)).clamp_min(0) * count / max(count - 1, 1)
        return mean.float(), var.sqrt().float()

    @torch.no_grad()
    def set_statistics(self, mean: Any, std: Any) -> None:
        std_t = _per_channel(std, self.latent_channels)
        if not bool((std_t > 0).all()):
            raise ValueError(f"latent standard deviations must be positive, got {std_t.tolist()}")
        self.shift.copy_(_per_channel(mean, self.latent_channels))
        self.scaling.copy_(self.sigma_data / std_t)

    def fit(self, batches: Iterable[Tensor]) -> LatentCodec:
        """Measure the latent statistics on these image batches and standardise with them (sLCT)."""
        self.set_statistics(*self.measure(batches))
        return self

    def statistics(self) -> dict[str, list[float]]:
        """What standardises the latents: mean (= shift), std (= sigma_data / scaling), sigma_data."""
        return {"mean": self.shift.tolist(), "std": (self.sigma_data / self.scaling).tolist(), "sigma_data": self.sigma_data}

    # -- diffusers folders ----------------------------------------------------------------------
    def diffusers_statistics(self) -> dict[str, Any]:
        """The statistics as diffusers' config fields: (z - latents_mean) * scaling_factor / latents_std."""
        stats = self.statistics()
        return {"scaling_factor": self.sigma_data, "latents_mean": stats["mean"], "latents_std": stats["std"]}

    def save_pretrained(self, folder: str | Path) -> Path:
        """A diffusers `AutoencoderKL` folder (opens in plain diffusers), the statistics in its config."""
        from .interop import save_diffusers

        self.vae.register_to_config(**self.diffusers_statistics())
        return save_diffusers(self.vae, folder)


def _config_statistics(config: Any, sigma_data: float) -> tuple[Any, Any]:
    """(scaling, shift) from a diffusers VAE config (see the module docstring)."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    factor = float(get("scaling_factor", None) or 1.0)
    mean, std = get("latents_mean", None), get("latents_std", None)
    if mean is not None and std is not None:
        std_t = torch.as_tensor(std, dtype=torch.float32)
        return factor / std_t, torch.as_tensor(mean, dtype=torch.float32)
    shift = get("shift_factor", None) or 0.0
    return factor * sigma_data, shift


# ---------------------------------------------------------------------------------------------- graphs
class EncoderGraph(nn.Module):
    """image (B, 3, H, W) in [0, 1] -> latents (B, C, H/f, W/f), the posterior mean standardised."""

    def __init__(self, codec: LatentCodec | Any) -> None:
        super().__init__()
        self.codec = codec if isinstance(codec, LatentCodec) else LatentCodec(codec)

    def forward(self, image: Tensor) -> Tensor:
        return self.codec.standardise(self.codec.posterior_mean(image))


class DecoderGraph(nn.Module):
    """latents (B, C, h, w), standardised -> image (B, 3, h*f, w*f) in [0, 1]."""

    def __init__(self, codec: LatentCodec | Any) -> None:
        super().__init__()
        self.codec = codec if isinstance(codec, LatentCodec) else LatentCodec(codec)

    def forward(self, latents: Tensor) -> Tensor:
        return self.codec.decode(latents)


# ---------------------------------------------------------------------------------------------- loss
def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over all but the batch axis, (B,):
    0.5 * sum(mean^2 + exp(logvar) - 1 - logvar) (VAE, Kingma & Welling 2014, App. B)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


def autoencoder_loss(images: Tensor, recon: Tensor, mean: Tensor, logvar: Tensor, perceptual: nn.Module | None = None,
                     kl_weight: float = 1e-6, perceptual_weight: float = 1.0, pixel_weight: float = 1.0) -> dict[str, Tensor]:
    """LDM's autoencoder objective without the discriminator (module docstring), per pixel value.

    images, recon: (B, 3, H, W) in [-1, 1]; mean, logvar: the posterior's (B, C, h, w).
    Returns loss, l1 (mean absolute error), perceptual (mean per image), kl (sum over latents, mean per image)."""
    l1 = (images - recon).abs().mean()
    if perceptual is not None and perceptual_weight > 0:
        p = perceptual((recon + 1) / 2, (images + 1) / 2).mean()
    else:
        p = images.new_zeros(())
    kl = kl_divergence(mean, logvar).mean()
    pixels = images[0].numel()
    loss = pixel_weight * l1 + perceptual_weight * p + kl_weight * kl / pixels
    return {"loss": loss, "l1": l1.detach(), "perceptual": p.detach(), "kl": kl.detach()}


# ---------------------------------------------------------------------------------------------- training
@dataclass
class AutoencoderTrainConfig(TrainConfig):
    """LDM's KL-autoencoder recipe (`configs/autoencoder/autoencoder_kl_*.yaml`, `ldm/models/autoencoder.py`):
    Adam betas (0.5, 0.9), base learning rate 4.5e-6 scaled by the batch (12 a GPU, one GPU: 5.4e-5),
    kl_weight 1e-6, perceptual_weight 1.0. The micro variants override steps, batch and lr on the card."""

    steps: int = 100_000
    batch_size: int = 12
    lr: float = 5.4e-5
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.5, 0.9)
    ckpt_every: int = 5_000
    kl_weight: float = 1e-6
    perceptual_weight: float = 1.0
    pixel_weight: float = 1.0
    perceptual_net: str = "shapes"  # "shapes" | "random" | "none" | "timm:<name>" (with perceptual_weights)
    perceptual_weights: str = ""  # local weights file of a timm perceptual network
    dataset: str = "shapes"  # ClassImageSet kind for --data synthetic ("shapes" | "textures")
    image_size: int = 0  # training image side; 0: the variant's sample_size
    train_images: int = 100_000  # procedural training images (each a pure function of its index)
    val_images: int = 256  # held-out images for the final PSNR / SSIM
    stats_images: int = 1024  # training images the latent statistics are measured on
    sample_posterior: bool = True  # decode a posterior sample (LDM) rather than the mean


class AutoencoderTrainable(nn.Module):
    """The codec plus its training step; `codec` is what gets saved."""

    def __init__(self, codec: LatentCodec, config: AutoencoderTrainConfig, perceptual: nn.Module | None = None) -> None:
        super().__init__()
        self.codec = codec
        self.perceptual = perceptual
        self.config = config

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        images = batch["image"] if isinstance(batch, dict) else batch
        device = self.codec.scaling.device
        x = images.to(device) * 2 - 1
        posterior = self.codec.vae.encode(x).latent_dist
        z = posterior.sample() if self.config.sample_posterior else posterior.mean
        recon = self.codec.decode_raw(z)
        return autoencoder_loss(x, recon, posterior.mean, posterior.logvar, self.perceptual, self.config.kl_weight,
                                self.config.perceptual_weight, self.config.pixel_weight)


def _batches(dataset: Any, count: int, batch_size: int = 64) -> Iterable[Tensor]:
    count = min(count, len(dataset))
    for start in range(0, count, batch_size):
        yield torch.stack([_image(dataset[i]) for i in range(start, min(start + batch_size, count))])


def _image(item: Any) -> Tensor:
    return item["image"] if isinstance(item, dict) else item


@torch.no_grad()
def reconstruction_metrics(codec: LatentCodec, dataset: Any, batch_size: int = 64) -> dict[str, float]:
    """PSNR / SSIM of encode -> decode (posterior mean) over a dataset of images in [0, 1]."""
    from zoo.metrics.image import psnr, ssim

    was_training = codec.training
    codec.eval()
    device = codec.scaling.device
    preds, targets = [], []
    for images in _batches(dataset, len(dataset), batch_size):
        images = images.to(device)
        preds.append(codec.decode(codec.encode(images)).cpu())
        targets.append(images.cpu())
    codec.train(was_training)
    pred, target = torch.cat(preds), torch.cat(targets)
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "l1": float((pred - target).abs().mean())}


class _Subset(torch.utils.data.Dataset):
    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]


def image_datasets(data: str, config: AutoencoderTrainConfig, size: int, seed: int) -> tuple[Any, Any, str]:
    """(train, held-out, description). "synthetic": `ClassImageSet` (splits "train" / "val");
    a folder: `ImageFolderSet`, every 10th image (indices 9, 19, ...) held out."""
    from zoo.data.generation import ClassImageSet, ImageFolderSet

    if data == "synthetic":
        train = ClassImageSet(config.dataset, size=size, count=config.train_images, seed=seed, split="train")
        val = ClassImageSet(config.dataset, size=size, count=config.val_images, seed=seed, split="val")
        return train, val, f"procedural {config.dataset} {size}x{size} (zoo.data.generation.ClassImageSet, seed {seed})"
    folder = ImageFolderSet(data, size=size)
    held = [i for i in range(len(folder)) if i % 10 == 9]
    if not held:
        raise ValueError(f"{data}: {len(folder)} images; at least 10 are needed (every 10th is held out for PSNR / SSIM)")
    kept = [i for i in range(len(folder)) if i % 10 != 9]
    return _Subset(folder, kept), _Subset(folder, held), f"{data} ({len(kept)} train, {len(held)} held out, {size}x{size})"


def build_autoencoder_task(model: LatentCodec, data: str, config: AutoencoderTrainConfig, seed: int, workdir: Path) -> TrainTask:
    """Train the codec's VAE with `autoencoder_loss`; `finalize` measures the latent statistics on
    `stats_images` training images and reports reconstruction PSNR / SSIM on the held-out split
    (plus the statistics themselves, `latent_mean_c` / `latent_std_c`)."""
    size = config.image_size or int(_first(model.vae.config.sample_size))
    if size % model.factor:
        raise ValueError(f"image_size {size} is not a multiple of the downsampling factor {model.factor}")
    train, val, description = image_datasets(data, config, size, seed)
    perceptual, used = build_perceptual_from(config)
    module = AutoencoderTrainable(model, config, perceptual)

    def evaluate(module: nn.Module) -> dict[str, float]:
        return reconstruction_metrics(module.codec, val)

    def finalize(module: nn.Module) -> dict[str, float]:
        module.codec.fit(_batches(train, config.stats_images))
        metrics = reconstruction_metrics(module.codec, val)
        stats = module.codec.statistics()
        for c, (m, s) in enumerate(zip(stats["mean"], stats["std"])):
            metrics[f"latent_mean_{c}"], metrics[f"latent_std_{c}"] = m, s
        return metrics

    return TrainTask(module=module, dataset=train, config=config, evaluate=evaluate if config.eval_every > 0 else None,
                     finalize=finalize,
                     to_pipeline=lambda m: m.codec,
                     extra={"data": description, "perceptual_net": used, "validation": val})


def build_perceptual_from(config: AutoencoderTrainConfig) -> tuple[nn.Module | None, str]:
    from .perceptual import build_perceptual

    if config.perceptual_weight <= 0:
        return None, "none"
    return build_perceptual(config.perceptual_net, config.perceptual_weights or None)


# ---------------------------------------------------------------------------------------------- loading
def load_autoencoder(path: str | Path, config: AutoencoderConfig | str | None = None, device: str | torch.device = "cpu") -> LatentCodec:
    """A `LatentCodec` from a local path:

    - our weights: a `.safetensors` file with its JSON sidecar (`zoo train` output), or the run folder;
    - a diffusers `AutoencoderKL` folder (`config.json` + `diffusion_pytorch_model.safetensors`);
    - a Stable Diffusion pipeline folder (`model_index.json`, the VAE in `vae/`);
    - an original LDM / Stable Diffusion checkpoint file (`.ckpt`, `.safetensors`; the VAE keys,
      optionally under `first_stage_model.`), which needs `config` (a preset name or an
      `AutoencoderConfig`, e.g. "sd-f8").
    Nothing is downloaded; the error names what is missing."""
    from zoo.weights import FORMAT_TAG, WeightsError, load_into, read_metadata

    path = Path(path).expanduser()
    if isinstance(config, str):
        config = preset_config(config)
    if not path.exists():
        raise FileNotFoundError(f"autoencoder weights {path}: no such file or folder")
    if path.is_dir() and (path / "model.safetensors").is_file() and (path / "model.json").is_file():
        path = path / "model.safetensors"
    if path.is_dir():
        from .interop import load_diffusers

        vae = load_diffusers(path, "AutoencoderKL", subfolder="vae")
        return LatentCodec(vae).to(device).eval()
    from zoo.weights import read_state

    state, ours = read_state(path)
    if ours:
        meta = read_metadata(path)
        if "config" not in meta and config is None:
            raise WeightsError(f"{path}: no JSON sidecar {path.with_suffix('.json').name} with the config; pass config=")
        codec = LatentCodec.from_config(config or AutoencoderConfig.from_dict(meta["config"]))
        load_into(codec, state)
        return codec.to(device).eval()
    if config is None:
        raise WeightsError(f"{path}: not one of our weight files (no '{FORMAT_TAG}' header); a foreign checkpoint needs "
                           "config= (e.g. 'sd-f8'), or load a diffusers folder instead")
    codec = LatentCodec.from_config(config)
    load_into(codec, convert_vae_state_dict(state, config, codec))
    return codec.to(device).eval()


LDM_PREFIXES = ("first_stage_model.", "vae.")


def convert_vae_state_dict(state: dict[str, Tensor], config: AutoencoderConfig, codec: LatentCodec | None = None) -> dict[str, Tensor]:
    """A foreign VAE state dict -> our codec's (`vae.*` + `scaling`, `shift`).

    Accepts diffusers' `AutoencoderKL` names (`encoder.down_blocks.0...`), the original LDM names
    (`encoder.down.0.block.0...`, also under `first_stage_model.` as in a full SD checkpoint; mapped
    by diffusers' own `convert_ldm_vae_checkpoint`), and ours. Statistics the checkpoint lacks come
    from `config` (see the module docstring). Mismatches raise `WeightsMismatchError` at load."""
    state = dict(state)
    for prefix in ("state_dict.", "module."):  # a Lightning / DataParallel wrapper (flattened by zoo.weights)
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if any(k.startswith("first_stage_model.") for k in state):  # a whole SD checkpoint: its VAE part
        state = {k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")}
    if "scaling" not in state and all(k.startswith("vae.") for k in state):
        state = {k[len("vae."):]: v for k, v in state.items()}
    if any(k.startswith(("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")) for k in state):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = convert_ldm_vae_checkpoint(state, config.diffusers_config())
    out = {k if k.startswith("vae.") or k in ("scaling", "shift") else f"vae.{k}": v for k, v in state.items()}
    if "scaling" not in out or "shift" not in out:
        if codec is None:
            scaling, shift = _config_statistics(config.diffusers_config(), config.sigma_data)
            c = config.latent_channels
            codec_stats = {"scaling": _per_channel(scaling, c), "shift": _per_channel(shift, c)}
        else:
            codec_stats = {"scaling": codec.scaling.clone(), "shift": codec.shift.clone()}
        for key, value in codec_stats.items():
            out.setdefault(key, value)
    return out


def count_parameters(config: AutoencoderConfig) -> int:
    """Parameters of `build_autoencoder(config)`, counted on the meta device."""
    with torch.device("meta"):
        vae = build_autoencoder(config)
    return sum(p.numel() for p in vae.parameters())


__all__ = ["AutoencoderConfig", "AutoencoderTrainConfig", "AutoencoderTrainable", "DecoderGraph", "EncoderGraph",
           "LatentCodec", "PRESETS", "SD_VAE_PARAMS", "SIGMA_DATA", "autoencoder_loss", "build_autoencoder",
           "build_autoencoder_task", "convert_vae_state_dict", "count_parameters", "kl_divergence", "load_autoencoder",
           "preset_config", "reconstruction_metrics"]

