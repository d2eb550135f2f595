"""KL autoencoder: the latent stage of latent diffusion and latent consistency models.

Rombach, Blattmann, Lorenz, Esser, Ommer. "High-Resolution Image Synthesis with Latent Diffusion
Models", CVPR 2022. arXiv:2112.10752. Official code: https://github.com/CompVis/latent-diffusion
(MIT; `ldm/models/autoencoder.py`, `ldm/modules/losses/contperceptual.py`,
`configs/autoencoder/autoencoder_kl_*.yaml`). The network is diffusers' `AutoencoderKL` (Apache-2.0),
the layout Stable Diffusion's VAE ships in, so SD folders load as they are; the objective, the codec
and the graphs are ours (`zoo.diffusion.autoencoder`, where the equations and weights are cited).

Variants:
- `micro-f4` (= `micro`, the name the registry-driven tests use): 32-64-64 channels, f4, trained on
  32x32 procedural shapes -> 8x8x4 latents; the latent consistency family trains on its latents.
- `micro-f8`: 32-64-64-64, f8 (64x64 -> 8x8x4).
- `sd-f8`: Stable Diffusion's VAE config (83,653,863 parameters), random until `weights=` points
  at an SD VAE (a diffusers folder, an SD pipeline folder through `load_autoencoder`, or the
  original `.ckpt`).

What we chose: the discriminator (LDM starts it at step 50,001) and the learned NLL log-variance
are left out; the perceptual term is an LPIPS-style distance in zoo's shipped shapes classifier
instead of LPIPS' VGG (no weights can be downloaded); micro runs use lr 1e-3 (LDM: 4.5e-6 x batch)
to train in minutes on a CPU, and perceptual weight 0.1 (LDM: 1.0 with calibrated LPIPS; see
`_MICRO_TRAIN` for the pilot behind it). The latents are standardised per channel (mean / std over training
images, x0.5: sigma_data = 0.5), as sLCT does for the SD VAE's.

The prediction is the reconstruction (encode -> decode through the posterior mean), with its PSNR
in `info`; `encode` / `decode` are the two exported graphs.
"""

from pathlib import Path

from zoo.diffusion.autoencoder import (
    SD_VAE_PARAMS,
    AutoencoderConfig,
    AutoencoderTrainConfig,
    LatentCodec,
    build_autoencoder_task,
    load_autoencoder,
    preset_config,
)
from zoo.registry import InputSpec, Metric, ModelCard, OptionSpec, TrainStage, VariantSpec, register_model

from .convert import convert_state_dict
from .pipeline import AutoencoderPipeline

EXAMPLES = Path(__file__).parent / "examples"
DEMO_WEIGHTS = "micro-f4.safetensors"
# The demo weights: this command with OMP_NUM_THREADS=1 on a shared CPU core, 549 s (3000 steps,
# batch 16); finalize measured the latent statistics on 1024 training images and PSNR / SSIM on the
# 256 held-out images below (posterior mean, encode -> decode). weights/micro-f4.json holds the rest.
DEMO_COMMAND = "zoo train autoencoder-kl --variant micro-f4 --steps 3000 --out runs/ae-micro-f4-3k --no-progress"
DEMO_DATA = "256 held-out procedural shapes, 32x32 (ClassImageSet kind shapes, split val, seed 0)"

# CPU-sized runs of the micro variants: LDM's Adam betas and KL weight kept; lr 1e-3 with a cosine
# decay to train in ~15 CPU minutes; perceptual weight 0.1, not LDM's 1.0: our uncalibrated
# LPIPS-style distance (no learned per-channel weights) measures 1-3 on early reconstructions, an
# order of magnitude above L1, and at 1.0 it held held-out PSNR to 14.3 dB after 300 steps against
# 17.2 dB at 0.1 and 15.9 dB without it (pilot runs, one seed each, batch 16, 128 held-out images).
_MICRO_TRAIN = {"steps": 3000, "batch_size": 16, "lr": 1e-3, "schedule": "cosine", "warmup_steps": 100,
                "perceptual_weight": 0.1, "log_every": 50, "ckpt_every": 250, "train_images": 100_000,
                "val_images": 256, "stats_images": 1024}

CARD = ModelCard(
    name="autoencoder-kl",
    task="latent-autoencoder",
    title="High-Resolution Image Synthesis with Latent Diffusion Models (KL autoencoder)",
    year=2022,
    arxiv="2112.10752",
    repo="https://github.com/CompVis/latent-diffusion",
    license="MIT",
    summary="The KL-regularised autoencoder of latent diffusion (diffusers AutoencoderKL): images to "
            "standardised latents (sigma_data 0.5) and back; trained with L1 + perceptual + 1e-6 KL.",
    variants={
        "micro-f4": VariantSpec(preset_config("micro-f4"), description="32-64-64 channels, f4: 32x32 RGB -> 8x8x4 latents (CPU tests, demo, latent consistency)",
                                demo_weights=DEMO_WEIGHTS),
        "micro": VariantSpec(preset_config("micro-f4"), description="the same as micro-f4 (the name registry-wide tests use)",
                             demo_weights=DEMO_WEIGHTS),
        "micro-f8": VariantSpec(preset_config("micro-f8"), description="32-64-64-64 channels, f8: 64x64 RGB -> 8x8x4 latents"),
        "sd-f8": VariantSpec(preset_config("sd-f8"), description="Stable Diffusion's VAE config (kl-f8, scaling 0.18215); random until weights= an SD VAE",
                             paper_params={"total": SD_VAE_PARAMS, "vae": SD_VAE_PARAMS}),
    },
    result_type="ImageResult",
    inputs=(InputSpec("image", "image", help="an RGB image to encode and reconstruct"),),
    options=(OptionSpec("size", "int", 0, "resize to size x size first (0: keep the size; the micro variants were trained at 32)", minimum=0, maximum=1024),),
    graphs=("encode", "decode"),
    train_stages={
        "autoencoder": TrainStage(
            build_autoencoder_task, AutoencoderTrainConfig,
            "L1 + perceptual + 1e-6 KL on images (LDM's objective without its late-starting discriminator); "
            "finalize measures the latent statistics and held-out PSNR / SSIM",
            variant_defaults={"micro-f4": dict(_MICRO_TRAIN), "micro": dict(_MICRO_TRAIN), "micro-f8": dict(_MICRO_TRAIN)},
        ),
    },
    examples=(str(EXAMPLES / "shapes.png"), str(EXAMPLES / "texture.png")),  # held-out ClassImageSet items (test split, seed 7, 64 px)
    converter=convert_state_dict,
    metrics=(
        Metric("psnr", 26.51, "micro-f4", DEMO_DATA, DEMO_COMMAND, "2026-12-07"),
        Metric("ssim", 0.805, "micro-f4", DEMO_DATA, DEMO_COMMAND, "2026-12-07"),
        Metric("l1", 0.0306, "micro-f4", DEMO_DATA, DEMO_COMMAND, "2026-12-07"),
    ),
    default_variant="micro-f4",
)


@register_model(CARD)
def autoencoder_kl(config: AutoencoderConfig) -> AutoencoderPipeline:
    return AutoencoderPipeline(LatentCodec.from_config(config), config)


__all__ = ["CARD", "AutoencoderConfig", "AutoencoderPipeline", "AutoencoderTrainConfig", "LatentCodec",
           "build_autoencoder_task", "convert_state_dict", "load_autoencoder", "preset_config"]
