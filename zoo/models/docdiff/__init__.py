"""DocDiff: Document Enhancement via Residual Diffusion Models.

Yang, Liu, Xiong, Yi, Wu, Tang, Liu, Zhou, Zhang. ACM Multimedia 2023. arXiv:2305.03892.
Official code: https://github.com/Royalvice/DocDiff (MIT). We follow it for widths, module
names (its `init_predictor` / `denoiser` checkpoints load by prefix, see convert.py), the
schedule, the losses and the deterministic sampler; the code here is our own.

A Coarse Predictor (CP) U-Net regresses the clean page; a High-Frequency Residual Refinement
(HRR) U-Net diffuses the residual GT - CP(x) (T = 100, scaled linear betas, x_0-prediction) and
restores it with deterministic DDIM sampling; output = CP(x) + r_0.

What we chose where the paper leaves room:
- Variants: the paper trains one model per task with one architecture; `deblur`, `denoise`,
  `watermark` and `seal` are that same paper-size config (CP 4.03M + HRR 4.18M parameters,
  counted from the reference layout) with the task recorded, which selects the procedural data
  `zoo train` generates. `micro` (base 8, mults 1-2-2-4, ~0.22M a U-Net) trains on all four
  degradations mixed, for CPU tests and the demo; `micro-deblur`, `micro-denoise`,
  `micro-watermark` and `micro-seal` are the same size with one task each (the paper's one model
  per task), their demo weights the mixed demo fine-tuned on that task's pages for ~6 CPU minutes.
- Sampling: `steps` = 0 uses the variant's default: all T = 100 steps for the paper variants
  (the reference sampler), 4 for the micro variants (measured against 100 in bench/docdiff_quality.py);
  fewer steps pick evenly spaced timesteps (DDIM jump steps, on the reference's to-do list).
- Pages of any size run as overlapping 128 x 128 tiles (the training crop size) padded white,
  blended with a linear ramp so no seam shows; r_T is drawn per page from `seed`.
- The EMA of the shared loop updates every step (the reference: every 100 steps after 2 000).
"""

from pathlib import Path

from zoo.registry import InputSpec, Metric, ModelCard, OptionSpec, TrainStage, VariantSpec, register_model

from .convert import convert_state_dict, load_official, merge_official
from .model import DocDiff, DocDiffConfig, preset_config, sample, sampling_timesteps
from .pipeline import DocDiffPipeline
from .train import DocDiffTrainConfig, build_task

EXAMPLES = Path(__file__).parent / "examples"
DEMO_COMMAND = "zoo train docdiff --variant micro --steps 600 --out runs/docdiff-micro"
# bench/results/docdiff-quality-docdiff-micro-2026-11-29.json (the demo weights, 4 sampling steps)
BENCH_COMMAND = ("python -m bench.docdiff_quality --run runs/docdiff-micro --pages 4 --size 256 "
                 "--steps 1,2,4,10,100 --plain-steps 200")
BENCH_DATA = "4 held-out procedural 256x256 pages (seed 123; deblur, denoise, watermark, seal)"

# micro-TASK demo weights: the mixed demo fine-tuned on one task (350 steps, batch 8, cosine lr 1e-3,
# EMA 0.98: the variant's defaults), then benched on 4 held-out pages of that task;
# bench/results/docdiff-quality-docdiff-micro-TASK-2026-11-29.json.
TASK_TRAIN_COMMAND = ("zoo train docdiff --variant micro-{task} --weights zoo/models/docdiff/weights/micro-demo.safetensors "
                      "--out runs/docdiff-micro-{task}")
TASK_BENCH_COMMAND = ("python -m bench.docdiff_quality --run runs/docdiff-micro-{task} --task {task} --pages 4 --size 256 "
                      "--steps 1,2,4,10 --plain-steps 200")


def _task_command(task: str) -> str:
    """The two commands behind a micro-TASK metric: the fine-tuning run, then the bench."""
    return f"{TASK_TRAIN_COMMAND.format(task=task)} && {TASK_BENCH_COMMAND.format(task=task)}"


def _task_data(task: str) -> str:
    """The held-out pages behind a micro-TASK metric."""
    return f"4 held-out procedural 256x256 {task} pages (seed 123, split bench), 4 sampling steps"


PAPER_PARAMS = {"total": 8_208_358, "init_predictor": 4_031_459, "denoiser": 4_176_899}
_TASK_TEXT = {
    "deblur": "document deblurring (motion and defocus blur)",
    "denoise": "document denoising (Gaussian, speckle, salt-and-pepper noise, stains)",
    "watermark": "watermark removal",
    "seal": "red seal (stamp) removal",
}

CARD = ModelCard(
    name="docdiff",
    task="document-enhancement",
    title="DocDiff: Document Enhancement via Residual Diffusion Models",
    year=2023,
    arxiv="2305.03892",
    repo="https://github.com/Royalvice/DocDiff",
    license="MIT",
    summary="Coarse Predictor U-Net plus a residual diffusion U-Net (HRR) that restores the high "
            "frequencies regression smooths away; deblurring, denoising, watermark and seal removal.",
    variants={
        "micro": VariantSpec(preset_config("micro"), description="base width 8, mults 1-2-2-4, all four degradations mixed; 4 sampling steps by default (CPU tests, demo)",
                             demo_weights="micro-demo.safetensors"),
        **{f"micro-{task}": VariantSpec(preset_config(f"micro-{task}"), description=f"micro size for {text} alone (the paper's one model per task); "
                                                                                     "fine-tuned from the mixed micro demo",
                                        demo_weights=f"micro-{task}.safetensors")
           for task, text in _TASK_TEXT.items()},
        **{task: VariantSpec(preset_config(task), description=f"paper size (base 32, mults 1-2-3-4, T=100) for {text}",
                             paper_params=dict(PAPER_PARAMS))
           for task, text in _TASK_TEXT.items()},
    },
    result_type="ImageResult",
    inputs=(InputSpec("image", "image", help="a document page (a photo or a scan)"),),
    options=(
        OptionSpec("steps", "int", 0, "sampling steps (0: the variant's default, all T=100 for paper variants, 4 for the micro variants)", minimum=0, maximum=100),
        OptionSpec("tile", "bool", True, "run overlapping 128x128 tiles (the training size) and blend them; off: the whole page at once"),
        OptionSpec("seed", "int", 0, "seed of the initial noise r_T", minimum=0),
    ),
    graphs=("coarse", "refine_step"),
    train_stages={
        "joint": TrainStage(
            build_task, DocDiffTrainConfig, "CP and HRR jointly with L_diff + 50 L_CP / T on paired pages (paper Sec. 3, training objective)",
            # micro: a CPU-sized run; batch 8 and a faster EMA so the saved EMA weights move
            variant_defaults={"micro": {"steps": 600, "batch_size": 8, "lr": 1e-3, "ema_decay": 0.995,
                                        "ckpt_every": 500, "pages": 96, "log_every": 50},
                              # micro-TASK: ~6 CPU minutes fine-tuning the mixed demo (--weights) on one task;
                              # a cosine decay to 0 settles the short run, the EMA window (~50 steps) follows it
                              **{f"micro-{task}": {"steps": 350, "batch_size": 8, "lr": 1e-3, "schedule": "cosine",
                                                   "ema_decay": 0.98, "ckpt_every": 500, "pages": 96, "log_every": 50}
                                 for task in _TASK_TEXT}},
        ),
    },
    # real scans (scikit-image's), clean and with each task's degradation (bench/examples.py; checked by zoo bench demo-check)
    examples=("skimage:page", "skimage:text") + tuple(str(EXAMPLES / f"{stem}.png") for stem in ("page-blurred", "text-noisy", "page-watermark", "page-seal")),
    converter=convert_state_dict,
    metrics=(
        Metric("psnr_input", 23.61, "micro", BENCH_DATA, BENCH_COMMAND, "2026-11-29"),
        Metric("psnr_cp", 19.97, "micro", BENCH_DATA, BENCH_COMMAND, "2026-11-29"),
        Metric("psnr_cp_hrr", 21.40, "micro", BENCH_DATA, BENCH_COMMAND, "2026-11-29"),
        Metric("ssim_cp_hrr", 0.849, "micro", BENCH_DATA, BENCH_COMMAND, "2026-11-29"),
        Metric("laplacian_error_cp", 0.449, "micro", BENCH_DATA, BENCH_COMMAND, "2026-11-29"),
        Metric("laplacian_error_cp_hrr", 0.440, "micro", BENCH_DATA, BENCH_COMMAND, "2026-11-29"),
        Metric("psnr_input", 15.73, "micro-deblur", _task_data("deblur"), _task_command("deblur"), "2026-11-29"),
        Metric("psnr_cp", 16.68, "micro-deblur", _task_data("deblur"), _task_command("deblur"), "2026-11-29"),
        Metric("psnr_cp_hrr", 15.81, "micro-deblur", _task_data("deblur"), _task_command("deblur"), "2026-11-29"),
        Metric("ssim_input", 0.642, "micro-deblur", _task_data("deblur"), _task_command("deblur"), "2026-11-29"),
        Metric("ssim_cp", 0.726, "micro-deblur", _task_data("deblur"), _task_command("deblur"), "2026-11-29"),
        Metric("ssim_cp_hrr", 0.716, "micro-deblur", _task_data("deblur"), _task_command("deblur"), "2026-11-29"),
        Metric("psnr_input", 20.3, "micro-denoise", _task_data("denoise"), _task_command("denoise"), "2026-11-29"),
        Metric("psnr_cp", 25.84, "micro-denoise", _task_data("denoise"), _task_command("denoise"), "2026-11-29"),
        Metric("psnr_cp_hrr", 25.76, "micro-denoise", _task_data("denoise"), _task_command("denoise"), "2026-11-29"),
        Metric("ssim_input", 0.688, "micro-denoise", _task_data("denoise"), _task_command("denoise"), "2026-11-29"),
        Metric("ssim_cp", 0.957, "micro-denoise", _task_data("denoise"), _task_command("denoise"), "2026-11-29"),
        Metric("ssim_cp_hrr", 0.961, "micro-denoise", _task_data("denoise"), _task_command("denoise"), "2026-11-29"),
        Metric("psnr_input", 26.41, "micro-watermark", _task_data("watermark"), _task_command("watermark"), "2026-11-29"),
        Metric("psnr_cp", 28.67, "micro-watermark", _task_data("watermark"), _task_command("watermark"), "2026-11-29"),
        Metric("psnr_cp_hrr", 28.8, "micro-watermark", _task_data("watermark"), _task_command("watermark"), "2026-11-29"),
        Metric("ssim_input", 0.927, "micro-watermark", _task_data("watermark"), _task_command("watermark"), "2026-11-29"),
        Metric("ssim_cp", 0.935, "micro-watermark", _task_data("watermark"), _task_command("watermark"), "2026-11-29"),
        Metric("ssim_cp_hrr", 0.936, "micro-watermark", _task_data("watermark"), _task_command("watermark"), "2026-11-29"),
        Metric("psnr_input", 22.15, "micro-seal", _task_data("seal"), _task_command("seal"), "2026-11-29"),
        Metric("psnr_cp", 38.87, "micro-seal", _task_data("seal"), _task_command("seal"), "2026-11-29"),
        Metric("psnr_cp_hrr", 39.12, "micro-seal", _task_data("seal"), _task_command("seal"), "2026-11-29"),
        Metric("ssim_input", 0.941, "micro-seal", _task_data("seal"), _task_command("seal"), "2026-11-29"),
        Metric("ssim_cp", 0.993, "micro-seal", _task_data("seal"), _task_command("seal"), "2026-11-29"),
        Metric("ssim_cp_hrr", 0.994, "micro-seal", _task_data("seal"), _task_command("seal"), "2026-11-29"),
    ),
)


@register_model(CARD)
def docdiff(config: DocDiffConfig) -> DocDiffPipeline:
    return DocDiffPipeline(DocDiff(config), config)


__all__ = ["CARD", "DocDiff", "DocDiffConfig", "DocDiffPipeline", "DocDiffTrainConfig", "convert_state_dict",
           "load_official", "merge_official", "preset_config", "sample", "sampling_timesteps"]
