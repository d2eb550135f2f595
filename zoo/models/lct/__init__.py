"""sLCT: improved latent consistency training.

Dao, Doan, Liu, Le, Metaxas. "Improved Training Technique for Latent Consistency Models",
ICLR 2025. arXiv:2502.01441. Authors' code: https://github.com/quandao10/LCT (research code;
the paper points to quandao10/sLCT, which holds only a README). Our code is our own; facts
(architecture, constants, loss forms) are taken from the authors' code and named where used.

- `model.py`: EDM's ADM U-Net and a DiT with Non-scaling LayerNorm, `LCTConfig` and presets.
- `loss.py`: the consistency-training objective in latent space with each of the paper's changes
  behind a switch (Cauchy loss, early-timestep diffusion loss, OT coupling, adaptive c).
- `train.py`: `LCTTrainConfig` (paper defaults) and `LCTTrainable` for the shared loop.

The schedules, the consistency parametrisation and the samplers are shared with other families
and live in `zoo.diffusion.consistency`.
"""

from dataclasses import replace
from pathlib import Path

from zoo.data.generation import class_names
from zoo.registry import Metric, ModelCard, OptionSpec, TrainStage, VariantSpec, register_model, sidecar_metrics

from .convert import convert_state_dict
from .model import ADMUNet, DiT, LCTConfig, build_model, preset_config
from .pipeline import LatentConsistencyModel, LatentConsistencyPipeline, LatentLCTConfig, sampling_sigmas
from .train import LatentLCTTrainConfig, LCTTrainable, LCTTrainConfig, build_latent_task

SHAPES = class_names("shapes")
# The authors' trainable counts (their DhariwalUNet / DiT built with train_lct.sh's arguments; see
# tests/models/test_lct_model.py for how they were obtained and cross-checked by formula).
ADM_PARAMS = 151_587_844
DIT_B2_PARAMS = 129_537_040
DIT_S2_PARAMS = 32_476_432


def _variant(net: str, image_size: int, autoencoder: str, conditional: bool, **net_overrides) -> LatentLCTConfig:
    names = SHAPES if conditional else ()
    return LatentLCTConfig(net=preset_config(net, num_classes=len(names), **net_overrides),
                           autoencoder_variant=autoencoder, image_size=image_size, class_names=names)


# micro: a CPU-sized run on 32 x 32 procedural shapes (8 x 8 x 4 latents of the micro-f4 autoencoder).
# The paper's lr 1e-4 and batch 128 are for 1400 epochs on a GPU; ~50 CPU minutes (12,000 steps) want lr 1e-3
# (measured in a 300-step trial: one-step samples 2x closer to the data than at 1e-4) and batch 64.
_MICRO_TRAIN = {"steps": 12000, "batch_size": 64, "lr": 1e-3, "ema_decay": 0.999, "log_every": 50,
                "ckpt_every": 500, "train_images": 8192, "val_images": 512, "eval_samples": 512}

WEIGHTS = Path(__file__).parent / "weights"
DEMO_DATA = ("512 generated images against 512 held-out procedural 32x32 shapes (split val, seed 0), "
             "FID/KID/precision/recall in zoo-shapes-classifier-v1 feature space (128-d)")


def _demo_metrics() -> tuple[Metric, ...]:
    """The bundled demo weights' own final metrics (their JSON sidecar, written by `zoo train`)."""
    return sidecar_metrics(WEIGHTS / "micro-demo.json", "micro", DEMO_DATA, lambda key: key.startswith(("fid", "precision", "recall")))


CARD = ModelCard(
    name="lct",
    task="image-generation",
    title="Improved Training Technique for Latent Consistency Models",
    year=2025,
    arxiv="2502.01441",
    repo="https://github.com/quandao10/LCT",
    license="research code (no licence file in the authors' repository)",
    summary="One- and few-step image generation by consistency training in the latent space of an "
            "autoencoder, with the paper's fixes for heavy-tailed latents: Cauchy loss, diffusion loss at "
            "early timesteps, optimal-transport coupling, adaptive scaling c and Non-scaling LayerNorm.",
    variants={
        "micro": VariantSpec(_variant("micro", 32, "micro-f4", True),
                             description="ADM U-Net, 32 channels, mults 1-2, 1 block, attention at 4x4; class-conditional on the "
                                         "6 procedural shapes; 8x8x4 latents of autoencoder-kl micro-f4 (32x32 images); CPU tests and demo",
                             demo_weights="micro-demo.safetensors"),
        "micro-dit": VariantSpec(_variant("micro-dit", 32, "micro-f4", True),
                                 description="a 2-block DiT with Non-scaling LayerNorm q/k norms on the same latents"),
        "adm": VariantSpec(_variant("adm", 256, "sd-f8", False),
                           description="the paper's network: ADM (EDM DhariwalUNet) 128 channels, mults 1-2-3-4, 4 blocks, "
                                       "attention at 16 and 8, on 32x32x4 SD-VAE latents of 256x256 images (unconditional)",
                           paper_params={"denoiser": ADM_PARAMS}),
        "dit-s2": VariantSpec(_variant("dit-s2", 256, "sd-f8", False),
                              description="the authors' DiT-S/2 with NsLN on 32x32x4 SD-VAE latents", paper_params={"denoiser": DIT_S2_PARAMS}),
        "dit-b2": VariantSpec(_variant("dit-b2", 256, "sd-f8", False),
                              description="the authors' DiT-B/2 with NsLN on 32x32x4 SD-VAE latents", paper_params={"denoiser": DIT_B2_PARAMS}),
    },
    result_type="Generation",
    inputs=(),
    options=(
        OptionSpec("seed", "int", 0, "seed of the first image (image i uses seed + i)", minimum=0, maximum=1_000_000),
        OptionSpec("steps", "int", 0, "consistency sampling steps (0: the variant's default, 1); 2 uses iCT's intermediate sigma 0.821",
                   minimum=0, maximum=16),
        OptionSpec("count", "int", 1, "images per call (seeds seed, seed + 1, ...), shown as a grid", minimum=1, maximum=64),
        OptionSpec("class_label", "label", None, "the class to generate (class-conditional variants; unset: drawn from the seed)",
                   choices=SHAPES),
    ),
    graphs=("denoise", "decode", "encode"),
    train_stages={
        "consistency": TrainStage(
            build_latent_task, LatentLCTTrainConfig,
            "improved consistency training on the frozen autoencoder's standardised latents with sLCT's Cauchy loss, "
            "early-timestep diffusion loss, OT coupling and adaptive c (each a --set switch); finalize scores 1- and "
            "2-step samples against held-out images (FID/KID/precision/recall in zoo-shapes-classifier-v1 space)",
            variant_defaults={"micro": dict(_MICRO_TRAIN), "micro-dit": dict(_MICRO_TRAIN)},
            train_graph="denoise",
        ),
    },
    examples=(),
    converter=convert_state_dict,
    metrics=_demo_metrics(),
)


@register_model(CARD)
def lct(config: LatentLCTConfig) -> LatentConsistencyPipeline:
    return LatentConsistencyPipeline(LatentConsistencyModel(config), config)


__all__ = ["CARD", "ADMUNet", "DiT", "LCTConfig", "LCTTrainConfig", "LCTTrainable", "LatentConsistencyModel",
           "LatentConsistencyPipeline", "LatentLCTConfig", "LatentLCTTrainConfig", "build_latent_task", "build_model",
           "convert_state_dict", "preset_config", "replace", "sampling_sigmas"]
