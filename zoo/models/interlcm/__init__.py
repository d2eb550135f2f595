"""InterLCM: blind face restoration with the low-quality image as an intermediate state of a latent
consistency model.

Li, Zhang, Wang, Qin, Zhang, Hou, Cheng, Wang (Senmao Li et al.). "InterLCM: Low-Quality Images as
Intermediate States of Latent Consistency Models for Effective Blind Face Restoration", ICLR 2025.
arXiv:2502.02215. Official code: https://github.com/sen-mao/InterLCM (CC BY-NC 4.0); facts (architecture,
key names, hyperparameters) are taken from it and named where used; the code here is our own.

- `model.py`: the frozen LCM (diffusers UNet2DConditionModel with the guidance embedding, AutoencoderKL, LCM's
  schedule checked against diffusers' LCMScheduler), the Visual Module (transformers CLIPVisionModel + our
  VisualEncoder to 77 x D prompt embeddings), the Spatial Encoder (a diffusers ControlNetModel copy of the
  UNet; how `from_unet`'s refusal of `time_cond_proj_dim` is handled is in its docstring), the chain with
  the LQ latent as step 1's x0 estimate, and the four exported graphs.
- `loss.py`: L1 + perceptual + hinge GAN on the decoded image (Eq. 9), the PatchGAN discriminator.
- `train.py`: the paper's stage (Visual + Spatial Encoder through the few-step chain) and, for the micro
  variant only, a `base` stage that makes a small stand-in LCM (there is no small pretrained one).
- `faces.py`: MTCNN detection, five-point alignment, paste-back; `colorfix.py`: the wavelet colour fix.
- `convert.py`: LCM diffusers folders, CLIP transformers folders, the official visual / spatial encoders.

What we chose where the paper or code leaves it open, or could not be followed offline: the perceptual term
is LPIPS' form over a local network (loss.py); MTCNN replaces RetinaFace (faces.py); the official cosine
schedule is the constant rate it amounts to over 15k iterations (train.py); the micro variant's LCM is our
own small epsilon-prediction stand-in (train.py, stage `base`), and its degradations are the paper's ranges
scaled to 64-px crops (blur sigma and downsampling cut where a 64-px face would vanish; see MICRO_TRAIN).
"""

from pathlib import Path

from zoo.registry import InputSpec, ModelCard, OptionSpec, TrainStage, VariantSpec, register_model, sidecar_metrics

from .colorfix import wavelet_color_fix, wavelet_split
from .convert import basicsr_params, clip_state, convert_state_dict, load_official
from .faces import FFHQ_TEMPLATE_512, Face, FaceSearch, align_face, find_faces, mtcnn_detect, paste_face, similarity_transform
from .loss import PatchDiscriminator, hinge_discriminator_loss, hinge_generator_loss, restoration_losses
from .model import (
    CLIP_B16,
    SD15_UNET,
    InterLCMConfig,
    InterLCMModel,
    VisualEncoder,
    guidance_embedding,
    lcm_alphas_cumprod,
    lcm_timesteps,
    spatial_encoder_from_unet,
)
from .pipeline import InterLCMPipeline
from .train import BaseTrainable, BaseTrainConfig, InterLCMTrainable, InterLCMTrainConfig, build_base_task, build_task, restoration_metrics

WEIGHTS = Path(__file__).parent / "weights"
EXAMPLES = Path(__file__).parent / "examples"
# Counted with diffusers / transformers on the meta device (tests/models/test_interlcm.py): SD1.5's UNet with
# LCM_Dreamshaper_v7's guidance embedding (time_cond_proj_dim 256: 859,520,964 + 81,920), SD's VAE, CLIP ViT-B/16's
# vision tower, ControlNetModel.from_unet of SD1.5's UNet (the official Spatial Encoder, hint 16-32-96-256).
SD15_UNET_PARAMS = 859_602_884
SD_VAE_PARAMS = 83_653_863
CLIP_B16_PARAMS = 85_799_424
SD15_CONTROLNET_PARAMS = 361_279_120


def micro_config(num_steps: int = 4, image_size: int = 64) -> InterLCMConfig:
    """64-px faces (or `image_size`), a 32-64 UNet on 16x16x4 latents of an f4 VAE, a 2-layer 48-wide CLIP on 32-px inputs.

    Every network but CLIP (which sees the face resized to 32 px) is convolutional, so `micro-128` is the same
    networks at 128-px crops: the same weights load into either.
    """
    from zoo.diffusion.autoencoder import preset_config

    vae = preset_config("micro-f4").diffusers_config() | {"sample_size": image_size}
    return InterLCMConfig(
        image_size=image_size,
        unet=dict(sample_size=image_size // 4, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                  cross_attention_dim=48, attention_head_dim=8, norm_num_groups=16, time_cond_proj_dim=32),
        vae=vae, latent_scale=1.0,
        clip=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                  projection_dim=48),
        encoder_nf=16, encoder_mult=(1, 2, 4), encoder_blocks=1, encoder_groups=8, hint_channels=(16, 32, 64), num_steps=num_steps)


def sd15_config(num_steps: int = 4) -> InterLCMConfig:
    from zoo.diffusion.autoencoder import preset_config

    return InterLCMConfig(image_size=512, unet=dict(SD15_UNET), vae=preset_config("sd-f8").diffusers_config(), latent_scale=0.18215,
                          clip=dict(CLIP_B16), num_steps=num_steps)


# micro (CPU): the paper's betas and L1 weight; lr 5e-4, not 5e-5 (a few hundred CPU steps, not 15,001: side by side
# from the same base, the paper's 5e-5 had training L1 0.207 at step 350 where 5e-4 had 0.166 at step 125);
# batch 8 (paper 1 at 512 px); no GAN and no EMA in the micro defaults: in a 600-step run (GAN from step 401, as
# the paper's 10,001 of 15,001, EMA 0.997) the discriminator won within 25 steps and the raw weights' held-out PSNR
# fell from 23.8 dB (step 250) to 18.0 dB (step 500), and the EMA lagged (19.5 / 20.9 dB); `--set gan_start=N` turns
# the GAN on; perceptual weight 0.1, not 1.0: our uncalibrated LPIPS-form distance reads ~4.7 on these faces
# against L1's ~0.44 and would drown the L1 term (the autoencoder family's pilot chose 0.1 for the same distance).
# 2,100 steps: the bundled weights' run (held-out PSNR 24.5 dB after 600 steps, 27.6 after 2,100, on the 32.6-dB base).
# Degradations: the paper's noise and JPEG ranges; blur sigma 0.1-2 and
# downsampling 1-4 (the paper's 10 px sigma and 12x at 512 px would leave a 64-px face a 5-px smudge).
MICRO_TRAIN = {"steps": 2100, "batch_size": 8, "lr": 5e-4, "gan_start": 1_000_000, "perceptual_weight": 0.1, "ema_decay": 0.0,
               "log_every": 25, "ckpt_every": 250, "blur_sigma": (0.1, 2.0), "downsample_range": (1.0, 4.0), "eval_items": 120}
# micro base: the VAE for 3,000 steps, then the UNet for 3,000 (the totals of the bundled weights' runs: 600 VAE steps
# held faces at 19.6 dB PSNR and capped the restoration below its input; 3,000 reach 32.6 dB)
MICRO_BASE = {"steps": 6000, "vae_steps": 3000, "batch_size": 16, "log_every": 50, "ckpt_every": 250}
# micro-128: the micro's networks at 128-px crops (issue #15: the 64-px crop held the bundled photo's 90-px face
# at ~32 px, so the pasted face carried less detail than its input). Fine-tuned from the micro's weights
# (`--weights micro-demo.safetensors`, the ControlNet kept, not restarted) at batch 4; degradations scaled with the
# crop (blur sigma to 3, downsampling to 6: the photo's x3 at 256 px is ~x2 on the 128-px aligned crop).
MICRO_128_TRAIN = {**MICRO_TRAIN, "steps": 600, "batch_size": 4, "spatial_init": "keep", "blur_sigma": (0.1, 3.0),
                   "downsample_range": (1.0, 6.0)}
DEMO_DATA = ("120 held-out aligned 64-px faces (lfw_subset[180:] and 100 procedural faces of another seed), CodeFormer "
             "degradation at the micro ranges; PSNR / SSIM on RGB, perceptual = LPIPS-form distance in zoo's shapes net")
DEMO_DATA_128 = DEMO_DATA.replace("64-px", "128-px").replace("micro ranges", "micro-128 ranges")
RESTORATION_METRICS = ("psnr", "ssim", "perceptual", "psnr_lq", "ssim_lq", "perceptual_lq")


def _card(name: str, steps: int) -> ModelCard:
    micro_weights = "micro-demo.safetensors" if steps == 4 else f"micro-{steps}step.safetensors"
    micro_128_weights = micro_weights.replace("micro-", "micro-128-")
    sidecar = WEIGHTS / micro_weights.replace(".safetensors", ".json")
    sidecar_128 = WEIGHTS / micro_128_weights.replace(".safetensors", ".json")

    def bundled(file: str) -> str | None:
        return file if (WEIGHTS / file).is_file() else None
    return ModelCard(
        name=name,
        # the demo restores photos at 128-px crops where those weights are bundled (the 64-px micro blurs a larger face)
        default_variant="micro-128" if bundled(micro_128_weights) else "micro",
        task="face restoration",
        title="InterLCM: Low-Quality Images as Intermediate States of Latent Consistency Models for Effective Blind Face Restoration",
        year=2025,
        arxiv="2502.02215",
        repo="https://github.com/sen-mao/InterLCM",
        license="CC BY-NC 4.0 (the official code and checkpoints); our code Apache-2.0",
        summary=f"Blind face restoration in {steps} LCM steps: the LQ face's latent is taken as the first step's x0 estimate, "
                "re-noised and finished by a frozen latent consistency model guided by a CLIP Visual Module (prompt "
                "embeddings from the face) and a ControlNet Spatial Encoder on the LQ image; faces found by MTCNN, aligned, "
                "restored and pasted back, with the wavelet colour fix.",
        variants={
            "micro": VariantSpec(micro_config(steps),
                                 description="64-px faces: UNet 32-64 (guidance embedding 32) on 16x16x4 latents of an f4 VAE, 2-layer CLIP "
                                             "on 32 px, VisualEncoder nf 16; a stand-in LCM trained by the base stage; CPU tests and demo",
                                 demo_weights=bundled(micro_weights)),
            "micro-128": VariantSpec(micro_config(steps, image_size=128),
                                     description="the micro's networks at 128-px face crops (32x32x4 latents), fine-tuned there "
                                                 "from the micro's weights; the demo's photo restorations",
                                     demo_weights=bundled(micro_128_weights)),
            "sd15": VariantSpec(sd15_config(steps),
                                description="the paper's: LCM_Dreamshaper_v7 (SD1.5 UNet with guidance embedding, SD VAE), CLIP ViT-B/16, "
                                            "VisualEncoder nf 64 mult 2-4-8, ControlNet of SD1.5's UNet; 512-px faces; load with "
                                            "zoo.models.interlcm.load_official or weights=FOLDER",
                                paper_params={"unet": SD15_UNET_PARAMS, "vae": SD_VAE_PARAMS, "clip": CLIP_B16_PARAMS,
                                              "controlnet": SD15_CONTROLNET_PARAMS}),
        },
        result_type="ImageResult",
        inputs=(InputSpec("image", "image", help="a photo with faces, or an aligned face crop (mode=aligned)"),),
        options=(
            OptionSpec("steps", "int", 0, f"LCM steps (0: the variant's {steps}; the LQ latent stands in for the first)", minimum=0, maximum=8),
            OptionSpec("seed", "int", 0, "seed of the re-noising (face k of an image uses seed + k)", minimum=0, maximum=1_000_000),
            OptionSpec("colour_fix", "bool", True, "the wavelet colour fix against the LQ face"),
            OptionSpec("mode", "str", "auto", "auto: detected faces, else the whole image as one face; aligned: the input is an "
                       "aligned face; detect: faces only, a photo without faces comes back unchanged", choices=("auto", "aligned", "detect")),
            OptionSpec("max_faces", "int", 16, "restore at most this many faces (the largest)", minimum=1, maximum=64),
            OptionSpec("start", "str", "lq", "lq: the LQ image as the intermediate state (InterLCM); noise: the same networks "
                       "from pure noise (the paper's ablation)", choices=("lq", "noise")),
        ),
        graphs=("encode", "visual", "denoise", "decode"),
        train_stages={
            "interlcm": TrainStage(build_task, InterLCMTrainConfig,
                                   "the paper's stage: Visual Encoder + Spatial Encoder (ControlNet, restarted as a copy of the "
                                   "loaded UNet) through the few-step chain from the LQ latent; L1 + perceptual + hinge GAN; "
                                   "finalize scores held-out faces (PSNR / SSIM / perceptual, LQ for reference)",
                                   variant_defaults={"micro": {**MICRO_TRAIN, "num_steps": steps},
                                                     "micro-128": {**MICRO_128_TRAIN, "num_steps": steps}}, train_graph="denoise"),
            "base": TrainStage(build_base_task, BaseTrainConfig,
                               "micro only, not the paper's: the stand-in LCM (VAE, then latent scale, then an epsilon-prediction "
                               "UNet with the guidance embedding) on the same faces; run it first, then --stage interlcm "
                               "--weights BASE", variant_defaults={"micro": dict(MICRO_BASE)}, train_graph="decode"),
        },
        examples=(str(EXAMPLES / "astronaut-degraded.png"),) if (EXAMPLES / "astronaut-degraded.png").is_file() else (),
        converter=convert_state_dict,
        metrics=(sidecar_metrics(sidecar, "micro", DEMO_DATA, RESTORATION_METRICS)
                 + sidecar_metrics(sidecar_128, "micro-128", DEMO_DATA_128, RESTORATION_METRICS)),
        notes="Needs facenet-pytorch for photos (pip install --no-deps facenet-pytorch==2.6.0: its MTCNN weights ship in the "
              "wheel); without it a photo is restored as one aligned face.",
    )


def interlcm(config: InterLCMConfig) -> InterLCMPipeline:
    return InterLCMPipeline(InterLCMModel(config), config)


CARD = _card("interlcm", 4)
register_model(CARD)(interlcm)

__all__ = [
    "CARD", "CLIP_B16", "FFHQ_TEMPLATE_512", "MICRO_128_TRAIN", "MICRO_BASE", "MICRO_TRAIN", "SD15_UNET", "BaseTrainConfig", "BaseTrainable", "Face", "FaceSearch",
    "InterLCMConfig", "InterLCMModel", "InterLCMPipeline", "InterLCMTrainConfig", "InterLCMTrainable", "PatchDiscriminator",
    "VisualEncoder", "align_face", "basicsr_params", "build_base_task", "build_task", "clip_state", "convert_state_dict",
    "find_faces", "guidance_embedding", "hinge_discriminator_loss", "hinge_generator_loss", "interlcm", "lcm_alphas_cumprod",
    "lcm_timesteps", "load_official", "micro_config", "mtcnn_detect", "paste_face", "restoration_losses", "restoration_metrics",
    "sd15_config", "similarity_transform", "spatial_encoder_from_unet", "wavelet_color_fix", "wavelet_split",
]
