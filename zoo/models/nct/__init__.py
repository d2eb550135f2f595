"""NCT: Noise Consistency Training, new controls for a one-step generator learned without images.

Luo, Xue, Hu, Tang. "Noise Consistency Training: A Native Approach for One-Step Generator in Learning
Additional Controls", 2025. arXiv:2506.19741. Official code: https://github.com/Luo-Yihong/NCT (not
reachable here; everything follows the paper's Algorithm 1 and text, and every choice it leaves open
is named where it is made: the sigma_t path and the draw of k in loss.py, xi / eta / lambda in
train.py, the consistency distance in controls.py).

- `controls.py`: the control-signal models C (Canny edges, 8x low resolution, colour layout) and
  the control-consistency metric.
- `model.py`: the frozen one-step generator with a ControlNet-style adapter (zero-initialised
  injections): our sLCT one-step model (asked of the registry) with a ControlNet for its ADM U-Net, or
  a diffusers `UNet2DConditionModel` one-step generator with a diffusers `ControlNetModel`.
- `loss.py`: the noise-space process, the noise consistency and boundary losses, the dual step.
- `train.py`: the training step (noise in, no images), paper defaults, held-out control metrics.
- `convert.py`: the diffusers base (local folder: unet/, vae/, optional controlnet/) into our modules.

Three cards, one a control (so the demo has a tab per control): `nct-canny`, `nct-lowres`,
`nct-colour`. Semantic layout from our OneFormer is not a control here: at the lct base's 32 x 32
single-shape images its micro segmenter (trained on 128-px multi-shape scenes) has nothing to segment.
"""

from pathlib import Path

from zoo.data.generation import class_names
from zoo.registry import InputSpec, Metric, ModelCard, OptionSpec, TrainStage, VariantSpec, register_model, sidecar_metrics

from .controls import CONTROLS, canny_edges, colour_layout, control_consistency, extract_control, low_resolution
from .convert import convert_state_dict
from .loss import dual_update, nct_losses, noise_level, noisy_point
from .model import SD15_UNET, ADMControlAdapter, DiffusersControlModel, GenerateGraph, LCTControlModel, NCTConfig
from .pipeline import NCTPipeline
from .train import (
    DataControlTrainable,
    DataControlTrainConfig,
    NCTTrainable,
    NCTTrainConfig,
    NoiseSource,
    build_data_task,
    build_task,
    control_metrics,
    sample_controlled,
)

SHAPES = class_names("shapes")
WEIGHTS = Path(__file__).parent / "weights"
EXAMPLES = Path(__file__).parent / "examples"
# Counted with diffusers on the meta device: UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
# (SD1.5's UNet, 859,520,964) and ControlNetModel.from_unet of it (SD1.5 ControlNet, 361,279,120);
# the VAE is SD's (zoo.diffusion.autoencoder.SD_VAE_PARAMS).
SD15_UNET_PARAMS = 859_520_964
SD15_CONTROLNET_PARAMS = 361_279_120
SD_VAE_PARAMS = 83_653_863

# micro: the adapter on the bundled lct micro (8x8x4 latents of 32x32 shapes). Paper: AdamW (0.9, 0.95),
# lr 1e-5, batch 128, EMA 0.9999 for SD1.5. A CPU run of a few hundred steps needs a larger lr, a shorter
# EMA and a coarser grid: in 300-step trials (batch 32, lr 1e-3) N = 16 levels left the lowres/canny
# consistency where the base has it, N = 4 lowered the lowres one by 18 % (0.158 vs 0.193).
MICRO_TRAIN = {"steps": 600, "batch_size": 32, "lr": 1e-3, "levels": 4, "ema_decay": 0.98, "log_every": 25,
               "ckpt_every": 100, "eval_samples": 256}
DEMO_DATA = ("256 held-out seeds: controls from the frozen lct micro's outputs, generated from independent noise; "
             "consistency = mean |c - C(output)|, FID against the base's outputs in zoo-shapes-classifier-v1 space")
WHAT = {"canny": "Canny edges", "lowres": "a low-resolution image (8x super-resolution)", "colour": "a colour layout"}


def _metrics(control: str) -> tuple[Metric, ...]:
    return sidecar_metrics(WEIGHTS / f"micro-{control}.json", "micro", DEMO_DATA, ("consistency_nct", "consistency_base", "fid_vs_base"))


def _card(control: str) -> ModelCard:
    micro_weights = f"micro-{control}.safetensors"
    return ModelCard(
        name=f"nct-{control}",
        task="controllable image generation",
        title="Noise Consistency Training: A Native Approach for One-Step Generator in Learning Additional Controls",
        year=2025,
        arxiv="2506.19741",
        repo="https://github.com/Luo-Yihong/NCT",
        license="unknown (the repository was not reachable)",
        summary=f"One-step generation that follows {WHAT[control]}: a ControlNet-style adapter on a frozen one-step "
                "generator, trained without images by noise consistency in the generator's noise space, a boundary "
                "loss to the base and primal-dual weighting.",
        variants={
            "micro": VariantSpec(NCTConfig(control=control, base="lct", base_variant="micro", image_size=32,
                                           hint_channels=(16, 32, 64), class_names=SHAPES),
                                 description="a ControlNet for the lct micro one-step model (ADM U-Net on 8x8x4 latents of "
                                             "32x32 procedural shapes); CPU tests and demo",
                                 demo_weights=micro_weights if (WEIGHTS / micro_weights).is_file() else None),
            "sd15": VariantSpec(NCTConfig(control=control, base="diffusers", unet=dict(SD15_UNET), autoencoder_variant="sd-f8",
                                          image_size=512, hint_channels=(16, 32, 96, 256)),
                                description="the paper's scale: an SD1.5-architecture one-step UNet2DConditionModel (load a "
                                            "local DMD2 / Diff-Instruct-style folder with --weights) and a diffusers ControlNetModel",
                                paper_params={"unet": SD15_UNET_PARAMS, "adapter": SD15_CONTROLNET_PARAMS, "codec": SD_VAE_PARAMS}),
        },
        result_type="Generation",
        inputs=(InputSpec("image", "image", help=f"a picture to take {WHAT[control]} from (extract=true), or the control "
                                                 "image itself (extract=false)"),),
        options=(
            OptionSpec("seed", "int", 0, "seed of the first image's noise (image i of an input uses seed + i)", minimum=0, maximum=1_000_000),
            OptionSpec("count", "int", 4, "images per input (seeds seed ... seed + count - 1), all following its control",
                       minimum=1, maximum=16),
            OptionSpec("extract", "bool", True, f"take {WHAT[control]} from the input picture; false: the input is the control"),
            OptionSpec("class_label", "label", None, "the base's class (class-conditional micro base); unset: the class zoo's shapes "
                       "classifier sees in the input picture, or drawn from the seed when the input is a control", choices=SHAPES),
        ),
        graphs=("generate",),
        train_stages={
            "nct": TrainStage(build_task, NCTTrainConfig,
                              "Algorithm 1 without images: noise consistency between adjacent points of the noise-space "
                              "path sharing (z, eps), boundary loss to the frozen base, primal-dual weighting; controls from "
                              "the base's own outputs; finalize scores control consistency and FID against the base",
                              variant_defaults={"micro": dict(MICRO_TRAIN)}, train_graph="generate"),
            "controlnet-data": TrainStage(build_data_task, DataControlTrainConfig,
                                          "the baseline NCT is compared with: the same adapter trained on images (the lct "
                                          "base's procedural shapes and their controls) with the EDM denoising objective, "
                                          "sampled in 4 consistency steps; finalize scores it as the nct stage does",
                                          variant_defaults={"micro": dict(MICRO_TRAIN)}, train_graph="generate"),
        },
        # held-out procedural shapes (ClassImageSet test split, seed 7, items 3 and 2), 32 px shown at 128
        examples=tuple(str(EXAMPLES / f"{name}.png") for name in ("star", "triangle")),
        converter=convert_state_dict,
        metrics=_metrics(control),
    )


def nct(config: NCTConfig) -> NCTPipeline:
    model: LCTControlModel | DiffusersControlModel
    if config.base == "lct":
        from zoo.registry import build_pipeline

        model = LCTControlModel(config, build_pipeline("lct", config.base_variant).model)
    else:
        model = DiffusersControlModel(config)
    return NCTPipeline(model, config)


CARDS = {control: _card(control) for control in CONTROLS}
for _card_obj in CARDS.values():
    register_model(_card_obj)(nct)

__all__ = [
    "ADMControlAdapter",
    "CARDS",
    "DataControlTrainConfig",
    "DataControlTrainable",
    "DiffusersControlModel",
    "GenerateGraph",
    "LCTControlModel",
    "NCTConfig",
    "NCTPipeline",
    "NCTTrainConfig",
    "NCTTrainable",
    "NoiseSource",
    "build_data_task",
    "build_task",
    "canny_edges",
    "colour_layout",
    "control_consistency",
    "control_metrics",
    "convert_state_dict",
    "dual_update",
    "extract_control",
    "low_resolution",
    "nct",
    "nct_losses",
    "noise_level",
    "noisy_point",
    "sample_controlled",
]
