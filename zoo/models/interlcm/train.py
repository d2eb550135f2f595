"""InterLCM training for the shared loop in `training/`.

Stage `interlcm` (the paper's, Sec. 3.4): the Visual Encoder and the Spatial Encoder (ControlNet) learn,
everything of the LCM and CLIP stays frozen; each step degrades HQ faces with CodeFormer's pipeline, runs
the few-step chain from the LQ latent with gradients through every UNet / ControlNet call and the VAE
decoder, and takes L1 + perceptual + hinge GAN on the decoded image (loss.py). Paper defaults
(`options/interlcm.yml`): Adam lr 5e-5 betas (0.9, 0.99) for both encoders and the discriminator, batch 1
(batch_size_per_gpu 1, num_gpu 1), 15,001 iterations, the discriminator from 10,001, EMA 0.997.
Its scheduler is a cosine from 5e-5 to 2e-5 over a 150,000-iteration period, so over the 15,001
iterations trained the rate stays within 1.5 % of 5e-5: our default is the constant 5e-5.

Stage `base` (micro only, not the paper's): there is no small pretrained LCM to freeze, so this stage makes
the stand-in: the VAE first (L1 + perceptual + 1e-6 KL, LDM's objective without its discriminator), then
`latent_scale` set once to 1 / std of the latents (how SD's 0.18215 was chosen), then the UNet as an
epsilon-prediction denoiser on those latents (DDPM's simple loss over all 1000 timesteps, the empty
prompt (zeros), the guidance embedding of w = 8). LCM's x0 estimate at a timestep is then that denoiser's
posterior mean, a blurry but valid consistency function, and InterLCM's stage trains on top of it frozen.

Data: `--data synthetic` (the 200 lfw_subset faces and scikit-image's astronaut, aligned, plus procedural
faces, zoo.data.faces) or a folder of aligned face crops (FFHQ layout). Held out for `finalize`: the last 20
lfw faces and 100 procedural faces of another seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.trainable import TrainConfig, TrainTask

from .loss import PatchDiscriminator, restoration_losses
from .model import InterLCMModel

HELD_OUT_LFW = 20  # the last lfw_subset faces are never trained on
HELD_OUT_PROCEDURAL = 100


@dataclass
class InterLCMTrainConfig(TrainConfig):
    steps: int = 15_001
    batch_size: int = 1
    lr: float = 5e-5
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.99)
    schedule: str = "constant"  # the official cosine to 2e-5 over 150k iterations stays within 1.5 % over 15k
    ema_decay: float = 0.997
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0
    gan_weight: float = 0.1
    gan_start: int = 10_001  # net_d_start_iter: the GAN terms from this step on
    disc_width: int = 64
    disc_layers: int = 4
    perceptual: str = "shapes"  # zoo.diffusion.perceptual spec: shapes | random | timm:<name> (with perceptual_weights)
    perceptual_weights: str = ""
    num_steps: int = 0  # LCM steps of the chain trained through (0: the variant's)
    spatial_init: str = "unet"  # unet: the ControlNet restarts as a copy of the (loaded) UNet; keep: as loaded
    blur_sigma: tuple[float, float] = (0.1, 10.0)  # CodeFormer degradation (official "small degradation")
    downsample_range: tuple[float, float] = (1.0, 12.0)
    noise_range: tuple[float, float] = (0.0, 15.0)
    jpeg_range: tuple[float, float] = (60.0, 100.0)
    procedural_share: float = 0.5  # synthetic data: share of procedural faces among training items
    train_items: int = 1_000_000
    eval_items: int = 120

    def __post_init__(self) -> None:
        if self.spatial_init not in ("unet", "keep"):
            raise ValueError(f"spatial_init must be 'unet' or 'keep', got {self.spatial_init!r}")

    def degradation(self) -> Any:
        from zoo.data.degradation import CodeFormerDegradation

        def pair(v: tuple[float, ...]) -> tuple[float, float]:
            return float(v[0]), float(v[1])

        return CodeFormerDegradation(blur_sigma=pair(self.blur_sigma), downsample_range=pair(self.downsample_range),
                                     noise_range=pair(self.noise_range), jpeg_range=(int(self.jpeg_range[0]), int(self.jpeg_range[1])))


class InterLCMTrainable(nn.Module):
    """Visual Encoder + Spatial Encoder (+ the discriminator, its hinge loss added to the same backward:
    its gradients come only from that term). batch: {"lq", "gt"} (B, 3, S, S) in [0, 1]."""

    step: torch.Tensor

    def __init__(self, model: InterLCMModel, config: InterLCMTrainConfig, perceptual: nn.Module | None):
        super().__init__()
        self.model = model
        self.config = config
        self.discriminator = PatchDiscriminator(ndf=config.disc_width, n_layers=config.disc_layers)
        self.perceptual = perceptual
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg, model = self.config, self.model
        lq, gt = batch["lq"], batch["gt"]
        with torch.no_grad():
            lq_latents = model.encode(lq)
        prompt = model.prompt(lq)
        steps = cfg.num_steps or model.config.num_steps
        noises = [torch.randn_like(lq_latents) for _ in range(steps - 1)]
        out = model.decode(model.restore_latents(lq, prompt, noises, steps, lq_latents=lq_latents))
        gan = int(self.step) + 1 >= cfg.gan_start  # 1-based iteration, as the official loop counts
        terms = restoration_losses(out, gt, self.perceptual, self.discriminator, cfg.l1_weight, cfg.perceptual_weight,
                                   cfg.gan_weight, gan=gan)
        if "disc" in terms:
            terms["loss"] = terms["loss"] + terms["disc"]
            terms["disc"] = terms["disc"].detach()
        with torch.no_grad():
            self.step += 1
        return terms


# --------------------------------------------------------------------------- the micro base (not the paper's)


@dataclass
class BaseTrainConfig(TrainConfig):
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 50
    vae_steps: int = 1000  # the VAE alone first, then the UNet alone
    kl_weight: float = 1e-6
    perceptual_weight: float = 0.1
    perceptual: str = "shapes"
    procedural_share: float = 0.5
    train_items: int = 1_000_000
    log_every: int = 50
    ckpt_every: int = 500


class BaseTrainable(nn.Module):
    """The stand-in LCM: VAE for `vae_steps` steps, then `latent_scale`, then the epsilon-prediction UNet."""

    step: torch.Tensor

    def __init__(self, model: InterLCMModel, config: BaseTrainConfig, perceptual: nn.Module | None):
        super().__init__()
        self.model = model
        self.config = config
        self.perceptual = perceptual
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        from zoo.diffusion.autoencoder import autoencoder_loss

        cfg, model = self.config, self.model
        images = batch["gt"]
        k = int(self.step)
        with torch.no_grad():
            self.step += 1
        if k < cfg.vae_steps:
            posterior = model.vae.encode(images * 2 - 1).latent_dist
            recon = model.vae.decode(posterior.sample()).sample
            out = autoencoder_loss(images * 2 - 1, recon, posterior.mean, posterior.logvar, self.perceptual,
                                   kl_weight=cfg.kl_weight, perceptual_weight=cfg.perceptual_weight)
            return {**out, "phase": torch.tensor(0.0)}
        with torch.no_grad():
            if k == cfg.vae_steps:  # once: latents to unit standard deviation (saved with the model)
                raw = model.vae.encode(images * 2 - 1).latent_dist.mean
                model.latent_scale.fill_(1.0 / float(raw.std().clamp_min(1e-6)))
            latents = model.encode(images)
        t = torch.randint(0, model.config.num_train_timesteps, (images.shape[0],), device=images.device)
        noise = torch.randn_like(latents)
        alpha = model.alphas_cumprod.index_select(0, t).view(-1, 1, 1, 1)
        noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
        prompt = torch.zeros(images.shape[0], model.config.prompt_tokens, int(model.unet.config.cross_attention_dim))
        w = model.guidance_emb.expand(images.shape[0], -1)
        eps = model.unet(noisy, t, encoder_hidden_states=prompt, timestep_cond=w, return_dict=False)[0]
        loss = (eps - noise).pow(2).mean()
        return {"loss": loss, "eps_mse": loss.detach(), "phase": torch.tensor(1.0)}


# --------------------------------------------------------------------------- data and metrics


def face_datasets(data: str, size: int, seed: int, config: Any, items: int, eval_items: int) -> tuple[Any, Any, str]:
    """(training pairs, held-out pairs, a description) for `--data synthetic` or a face folder."""
    from zoo.data.faces import FaceFolder, FacePairs, bundled_faces

    degradation = config.degradation() if hasattr(config, "degradation") else None
    if data == "synthetic":
        faces = bundled_faces(size)
        train_faces, held_faces = faces[: len(faces) - HELD_OUT_LFW], faces[len(faces) - HELD_OUT_LFW:]
        train = FacePairs(train_faces, size, items, seed=seed, procedural_share=config.procedural_share, config=degradation)
        # held out: the last lfw faces, then procedural faces of another seed (procedural_share 1 for those)
        held: Any = _HeldOut(FacePairs(held_faces, size, HELD_OUT_LFW, seed=10_000 + seed, config=degradation),
                        FacePairs(None, size, max(0, eval_items - HELD_OUT_LFW), seed=20_000 + seed, config=degradation))
        desc = (f"synthetic: {len(train_faces)} aligned faces (astronaut + lfw_subset[:180]) and procedural faces "
                f"(share {config.procedural_share}), CodeFormer degradation, {size}px; held out: lfw_subset[180:] + "
                f"{len(held) - HELD_OUT_LFW} procedural faces")
        return train, held, desc
    folder = FaceFolder(data, size)
    n_eval = min(eval_items, max(1, len(folder) // 10))
    train = FacePairs(lambda i: folder[n_eval + i % (len(folder) - n_eval)], size, items, seed=seed, config=degradation)
    held_folder = FacePairs(lambda i: folder[i], size, n_eval, seed=10_000 + seed, config=degradation)
    return train, held_folder, f"{data}: {len(folder) - n_eval} aligned faces, {n_eval} held out, CodeFormer degradation, {size}px"


class _HeldOut(torch.utils.data.Dataset):
    def __init__(self, *parts: Any):
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, index: int) -> Any:
        for part in self.parts:
            if index < len(part):
                return part[index]
            index -= len(part)
        raise IndexError(index)


@torch.no_grad()
def restoration_metrics(model: InterLCMModel, pairs: Any, steps: int | None = None, start: str = "lq", colour_fix: bool = True,
                        seed: int = 0, batch_size: int = 16, perceptual: nn.Module | None = None) -> dict[str, float]:
    """PSNR / SSIM (zoo.metrics.image, RGB in [0, 1]) and the perceptual distance of the restored faces
    against HQ, and of the LQ input itself; seconds per face. start: "lq" (InterLCM) or "noise"."""
    import time

    from zoo.metrics.image import psnr, ssim

    from .colorfix import wavelet_color_fix

    model.eval()
    outs, lqs, gts = [], [], []
    gen = torch.Generator().manual_seed(seed)
    n = steps or model.config.num_steps
    elapsed = 0.0
    for i in range(0, len(pairs), batch_size):
        items = [pairs[j] for j in range(i, min(i + batch_size, len(pairs)))]
        lq, gt = torch.stack([it["lq"] for it in items]), torch.stack([it["gt"] for it in items])
        shape = (len(items), *model.latent_shape)
        noises = [torch.randn(shape, generator=gen) for _ in range(n)]
        began = time.perf_counter()
        prompt = model.prompt(lq)
        out = model.decode(model.restore_latents(lq, prompt, noises if start == "noise" else noises[1:], n, start=start)).clamp(0, 1)
        if colour_fix:
            out = wavelet_color_fix(out, lq)
        elapsed += time.perf_counter() - began
        outs.append(out)
        lqs.append(lq)
        gts.append(gt)
    out, lq, gt = torch.cat(outs), torch.cat(lqs), torch.cat(gts)
    result = {"psnr": psnr(out, gt), "ssim": ssim(out, gt), "psnr_lq": psnr(lq, gt), "ssim_lq": ssim(lq, gt),
              "seconds_per_face": elapsed / len(out)}
    if perceptual is not None:
        result["perceptual"] = float(perceptual(out, gt).mean())
        result["perceptual_lq"] = float(perceptual(lq, gt).mean())
    return result


def _saved_model(module: Any) -> nn.Module:
    """What a run saves: the InterLCM model (not the discriminator, not the perceptual net)."""
    return module.model


def _perceptual(spec: str, weights: str = "") -> tuple[nn.Module | None, str]:
    from zoo.diffusion.perceptual import build_perceptual

    return build_perceptual(spec, weights or None)


def _start_spatial_encoder(model: InterLCMModel) -> None:
    """ControlNet's initialisation (Zhang et al. 2023): a copy of the UNet's encoder (the loaded one), its
    zero convolutions at zero."""
    from .model import spatial_encoder_from_unet

    fresh = spatial_encoder_from_unet(model.unet, model.config.hint_channels)
    model.controlnet.load_state_dict(fresh.state_dict())


def build_task(model: InterLCMModel, data: str, config: InterLCMTrainConfig, seed: int, workdir: Any) -> TrainTask:
    """`zoo train interlcm [--weights BASE]`: the paper's stage (module docstring)."""
    if config.spatial_init == "unet":
        _start_spatial_encoder(model)
    model.unet.requires_grad_(False)
    model.vae.requires_grad_(False)
    model.clip.requires_grad_(False)
    model.visual_encoder.requires_grad_(True)
    model.controlnet.requires_grad_(True)
    size = model.config.image_size
    train, held, desc = face_datasets(data, size, seed, config, config.train_items, config.eval_items)
    perceptual, used = _perceptual(config.perceptual, config.perceptual_weights)

    def finalize(module: Any) -> dict[str, float]:
        return restoration_metrics(module.model, held, perceptual=perceptual)

    return TrainTask(module=InterLCMTrainable(model, config, perceptual), dataset=train, config=config, finalize=finalize,
                     to_pipeline=_saved_model,
                     extra={"data": desc, "perceptual": used, "ddp_find_unused_parameters": True})


def build_base_task(model: InterLCMModel, data: str, config: BaseTrainConfig, seed: int, workdir: Any) -> TrainTask:
    """`zoo train interlcm --stage base`: the micro stand-in LCM (module docstring)."""
    model.requires_grad_(False)
    model.vae.requires_grad_(True)
    model.unet.requires_grad_(True)
    size = model.config.image_size
    train, held, desc = face_datasets(data, size, seed, config, config.train_items, 120)
    perceptual, used = _perceptual(config.perceptual)

    def finalize(module: Any) -> dict[str, float]:
        from zoo.metrics.image import psnr

        images = torch.stack([held[i]["gt"] for i in range(len(held))])
        with torch.no_grad():
            recon = module.model.decode(module.model.encode(images)).clamp(0, 1)
        return {"vae_psnr": psnr(recon, images), "latent_scale": float(module.model.latent_scale)}

    return TrainTask(module=BaseTrainable(model, config, perceptual), dataset=train, config=config, finalize=finalize,
                     to_pipeline=_saved_model, extra={"data": desc, "perceptual": used})
