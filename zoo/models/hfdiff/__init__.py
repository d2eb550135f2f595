"""HF-Diff: one-step x4 diffusion super-resolution with a high-frequency perceptual loss and
distribution matching in DINOv2 space.

Sami, Hasan, Nasrabadi, Rao. "HF-Diff: High-Frequency Perceptual Loss and Distribution Matching for
One-Step Diffusion-Based Image Super-Resolution", 2024. arXiv:2411.13548. Code:
https://github.com/shoaib-sami/Multi-Granular-High-Frequency-Perceptual-Loss-MGHF- (no licence file;
`configs/HF-Diff.yaml`, `gaussian_diffusion.py`). It builds on SinSR (Wang et al., CVPR 2024: one-step
distillation of ResShift) and ResShift (Yue et al., NeurIPS 2023, https://github.com/zsyOAOA/ResShift,
S-Lab licence 1.0), whose Swin-UNet, schedule and VQGAN f4 it keeps. Our code is our own; facts from
those repositories are named where used.

- model.py: ResShift's `UNetModelSwin` (official module names) for the one-step student and the 15-step
  teacher, the latent codec (ResShift's VQGAN f4 as diffusers `VQModel` for the paper variant; the spine's
  autoencoder-kl micro-f4 for `micro`), the graphs.
- zoo.diffusion.resshift: the residual-shifting schedule (kappa 2.0, exponential power 0.3, etas_end 0.99,
  min_noise 0.04, 15 steps, x0-prediction) and sampler, shared with any later ResShift-based family.
- invertible.py: our INN (Haar wavelet + affine couplings; the paper's INN is not public).
- loss.py: ResShift's loss, SinSR's distillation losses as HF-Diff's code computes them, the HF
  perceptual loss (0.2 MSE of INN detail features), JS divergence of softmax-normalised DINOv2 CLS
  embeddings (our reading; the paper's form is unverified).
- train.py: stages inn -> teacher -> distill -> hf -> dino; pipeline.py: tiled x4 inference.

What we chose where the paper is silent: the INN and its pretraining objective (invertible.py); the JS
form and weight 0.1 (loss.py); the micro variant's sizes and CPU schedule; the one-step graph takes its
noise as an input so a seed reproduces an image on every runtime.
"""

from pathlib import Path

from zoo.registry import InputSpec, Metric, ModelCard, OptionSpec, TrainStage, VariantSpec, register_model, sidecar_metrics

from .convert import convert_state_dict, load_official, merge_official
from .invertible import InvertibleConfig, InvertibleNet
from .model import HFDiffConfig, HFDiffModel, SwinUNet, SwinUNetConfig, VQConfig
from .pipeline import SAMPLERS, HFDiffPipeline
from .train import (
    DinoTrainConfig,
    DistillTrainConfig,
    HFTrainConfig,
    INNTrainConfig,
    TeacherTrainConfig,
    build_distill_task,
    build_inn_task,
    build_teacher_task,
)

WEIGHTS = Path(__file__).parent / "weights"
EXAMPLES = Path(__file__).parent / "examples"

# Counted on the meta device from the official classes: ResShift's first-release `models/unet.py`
# UNetModelSwin (commit ccfad91, the one SinSR / HF-Diff use; in_channels 6) built with configs/HF-Diff.yaml's
# `model.params`, and `ldm.models.autoencoder.VQModelTorch` with its `autoencoder.params`; the current
# ResShift U-Net (lq_size 64, identity feature extractor) counts the same. Our modules are asserted equal
# in tests/test_every_model.py and tests/models/test_hfdiff_model.py.
UNET_PARAMS = 118_593_583
VQ_F4_PARAMS = 55_322_782


def micro_config() -> HFDiffConfig:
    """CPU size: 32 channels, mults 1-2, one block a level, Swin (embed 32, 2 heads, window 4) at both
    levels; on the 4-channel latents of autoencoder-kl micro-f4; trained on 64x64 GT crops (LR 16),
    predicting on 32x32 LR tiles (overlap 8)."""
    unet = SwinUNetConfig(image_size=16, latent_channels=4, model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
                          attention_resolutions=(16, 8), swin_depth=2, swin_embed_dim=32, window_size=4, mlp_ratio=2.0,
                          num_head_channels=16, norm_groups=8)
    return HFDiffConfig(unet=unet, autoencoder_kind="kl", autoencoder_variant="micro-f4",
                        inn=InvertibleConfig(channels=4, blocks=2, hidden=16), tile=32, overlap=8)


def paper_config() -> HFDiffConfig:
    """configs/HF-Diff.yaml: UNetModelSwin 160 channels, 1-2-2-4, 2 blocks, Swin at 64/32/16/8 (depth 2, embed 192,
    window 8), VQGAN f4 (z 3, codebook 8192); 64x64 latents (256x256 GT), tiles of 64 LR pixels."""
    return HFDiffConfig(unet=SwinUNetConfig(), autoencoder_kind="vq", autoencoder=VQConfig(), inn=InvertibleConfig(channels=3),
                        tile=64, overlap=16)


DEMO_DATA = "32 held-out 64x64 GT crops (bundled photographs + textures, Real-ESRGAN degradation, seed 10007)"


def _demo_metrics() -> tuple[Metric, ...]:
    """The bundled demo weights' final metrics (their JSON sidecar, written by `zoo train`)."""
    return sidecar_metrics(WEIGHTS / "micro-demo.json", "micro", DEMO_DATA, lambda key: key.split("_")[0] in ("bicubic", "student"))


# micro: CPU-sized stages on 64x64 GT crops; lr 1e-3 / 5e-4 to move in minutes (the paper's 2.5e-5 is for
# 500k GPU steps), batch 16, EMA 0.99 so short runs' EMA follows the weights.
_MICRO = {"batch_size": 16, "gt_size": 64, "log_every": 25, "ckpt_every": 500, "val_images": 32, "train_images": 100_000}
_MICRO_STAGES = {
    "inn": {**_MICRO, "steps": 200, "lr": 1e-3},
    "teacher": {**_MICRO, "steps": 500, "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.99, "schedule": "cosine"},
    # the distillation stages run the teacher's 15-step chain every step: batch 8
    "distill": {**_MICRO, "batch_size": 8, "steps": 200, "lr": 5e-4, "ema_decay": 0.99},
    "hf": {**_MICRO, "batch_size": 8, "steps": 200, "lr": 5e-4, "ema_decay": 0.99},
    "dino": {**_MICRO, "batch_size": 8, "steps": 200, "lr": 2e-4, "ema_decay": 0.99, "dino_size": 56},
}


def _stage(build, cls, text, name):  # type: ignore[no-untyped-def]
    return TrainStage(build, cls, text, variant_defaults={"micro": dict(_MICRO_STAGES[name])}, train_graph="teacher_step")


CARD = ModelCard(
    name="hfdiff",
    task="super-resolution",
    title="HF-Diff: High-Frequency Perceptual Loss and Distribution Matching for One-Step Diffusion-Based Image Super-Resolution",
    year=2024,
    arxiv="2411.13548",
    repo="https://github.com/shoaib-sami/Multi-Granular-High-Frequency-Perceptual-Loss-MGHF-",
    license="no licence file (ResShift backbone: S-Lab License 1.0)",
    summary="x4 super-resolution in one network call: ResShift's Swin-UNet distilled SinSR-style from the 15-step "
            "residual-shifting teacher, with a high-frequency perceptual loss on invertible-network features and "
            "Jensen-Shannon distribution matching in DINOv2 space.",
    variants={
        "micro": VariantSpec(micro_config(), description="32-channel Swin-UNet (1-2, window 4) on autoencoder-kl micro-f4 latents; "
                                                         "CPU tests and demo; 32x32 LR tiles -> 128x128",
                             demo_weights="micro-demo.safetensors"),
        "paper": VariantSpec(paper_config(), description="configs/HF-Diff.yaml: UNetModelSwin 160 ch, 1-2-2-4, Swin 192 / window 8, "
                                                         "VQGAN f4 (8192 x 3); student and teacher; 64x64 LR tiles -> 256x256",
                             paper_params={"unet": UNET_PARAMS, "teacher": UNET_PARAMS, "codec": VQ_F4_PARAMS}),
    },
    result_type="ImageResult",
    inputs=(InputSpec("image", "image", help="a low-resolution image (any size; upscaled x4 in overlapping tiles)"),),
    options=(
        OptionSpec("seed", "int", 0, "seed of the starting noise x_T (and of the teacher's step noise)", minimum=0, maximum=2**31 - 1),
        OptionSpec("sampler", "str", "one-step", "one-step: the distilled student (HF-Diff, one network call); "
                   "teacher: the 15-step ResShift teacher", choices=SAMPLERS),
    ),
    graphs=("sr", "teacher_step", "encode_lr", "decode"),
    train_stages={
        "inn": _stage(build_inn_task, INNTrainConfig, "pretrain our invertible network (Haar + affine couplings) on the codec's "
                      "latents: low-pass guidance + reconstruction from the base alone", "inn"),
        "teacher": _stage(build_teacher_task, TeacherTrainConfig, "the 15-step ResShift teacher: x0-prediction MSE on "
                          "residual-shifted latents of Real-ESRGAN-degraded pairs", "teacher"),
        "distill": _stage(build_distill_task, DistillTrainConfig, "SinSR one-step distillation of the frozen teacher "
                          "(teacher x0, inverse x_T, GT consistency), student initialised from the teacher", "distill"),
        "hf": _stage(build_distill_task, HFTrainConfig, "distill + HF-Diff's high-frequency perceptual loss "
                     "(0.2 MSE of INN detail features)", "hf"),
        "dino": _stage(build_distill_task, DinoTrainConfig, "hf + Jensen-Shannon distribution matching of DINOv2 embeddings "
                       "(--set dino=FOLDER: local transformers weights)", "dino"),
    },
    examples=(str(EXAMPLES / "lr.png"),),
    converter=convert_state_dict,
    metrics=_demo_metrics(),
)


@register_model(CARD)
def hfdiff(config: HFDiffConfig) -> HFDiffPipeline:
    return HFDiffPipeline(HFDiffModel(config), config)


__all__ = ["CARD", "HFDiffConfig", "HFDiffModel", "HFDiffPipeline", "InvertibleNet", "SwinUNet", "SwinUNetConfig",
           "convert_state_dict", "load_official", "merge_official", "micro_config", "paper_config"]
