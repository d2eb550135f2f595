"""AnyText: multilingual visual text generation and editing.

Tuo, Xiang, He, Geng, Xie. "AnyText: Multilingual Visual Text Generation and Editing", ICLR 2024.
arXiv:2311.03054. Official code: https://github.com/tyxsspa/AnyText (Apache-2.0); diffusers'
`examples/research_projects/anytext/` ports it. Our code is our own; facts (widths, strides, limits, loss
weights) come from the reference's cldm/cldm.py, cldm/embedding_manager.py, t3_dataset.py,
ldm/models/diffusion/ddpm.py and models_yaml/anytext_sd15.yaml, named where used.

- `model.py`: the auxiliary latent module (glyph, position, masked image; Sec. 3.2), the text embedding
  module (Sec. 3.3) and the whole model on diffusers' UNet2DConditionModel + ControlNetModel, our
  LatentCodec (AutoencoderKL) and transformers' CLIPTextModel.
- `recognizer.py`: a differentiable PP-OCR recogniser in PyTorch, built from rapidocr's PP-OCRv4 ONNX file,
  or running `ppocr_v3.py` (AnyText's own PP-OCRv3 network) from AnyText's `ppv3_rec.pth`.
- `glyphs.py`: prompt parsing ("quoted" lines -> `*`), glyph / position / line images, input checks.
- `loss.py`: the text-control diffusion loss and the text perceptual loss (Sec. 3.4, Eq. 3-5).
- `pipeline.py`: DDIM + classifier-free guidance over four graphs; generation and editing.
- `train.py`: the training step, procedural / AnyWord-3M data, held-out Sen.ACC / NED.
- `metrics.py`: Sen.ACC and NED read by rapidocr on the position crops.
- `convert.py`: the official checkpoint, diffusers' research-project folders and SD1.5 diffusers folders.

What we chose: see model.py (the micro trains its UNet; no hint block of ControlNet's own), train.py
(caption dropout for guidance), pipeline.py (stacked bands when no positions are given) and
recognizer.py (PP-OCRv4 for the micro; AnyText's PP-OCRv3 network loads its checkpoint).
"""

from pathlib import Path

from zoo.registry import InputSpec, ModelCard, OptionSpec, TrainStage, VariantSpec, register_model, sidecar_metrics

from .convert import convert_state_dict
from .glyphs import TextLineError, parse_prompt
from .loss import PERCEPTUAL_WEIGHT, anytext_loss, predict_x0, text_control_diffusion_loss, text_perceptual_loss
from .metrics import normalized_edit_similarity, ocr_accuracy
from .model import AnyTextConfig, AnyTextModel, AuxiliaryLatentModule, EmbeddingManager
from .pipeline import AnyTextPipeline
from .recognizer import OnnxGraphModule, TextRecognizer, line_tensor
from .train import AnyTextTrainable, AnyTextTrainConfig, WordConditionSet, build_task, evaluate_ocr

WEIGHTS = Path(__file__).parent / "weights"
EXAMPLES = Path(__file__).parent / "examples"

# Counted on the meta device: SD1.5's UNet2DConditionModel (859,520,964), SD's VAE (83,653,863), CLIP
# ViT-L/14's text transformer (123,060,480); the ControlNet = ControlNetModel.from_unet(SD1.5 UNet) without
# ControlNet's own hint block (361,279,120 - 1,086,480), as cldm.py's ControlNet has none; the auxiliary
# module from cldm.py's widths: glyph_block 350,264 + position_block 36,536 + fuse_block 933,440; the
# embedding module Linear(2560, 768) + LayerNorm(768).
SD15_PARAMS = {"unet": 859_520_964, "codec": 83_653_863, "text_encoder": 123_060_480, "controlnet": 360_192_640,
               "auxiliary": 1_320_240, "embedding": 1_968_384}

MICRO = AnyTextConfig(
    image_size=64,
    unet={"sample_size": 16, "block_out_channels": (32, 64, 64), "layers_per_block": 1, "cross_attention_dim": 32,
          "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
          "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
          "attention_head_dim": 8, "norm_num_groups": 16},
    autoencoder_variant="micro-f4",
    text_encoder={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 32},
    glyph_channels=(8, 8, 16, 16, 32), glyph_strides=(1, 2, 1, 2, 2),
    position_channels=(8, 16, 16), position_strides=(1, 2, 2),
    ocr_feature_dim=40 * 120, recognizer="ppocr-v4",  # rapidocr's PP-OCRv4 (shipped); its neck: 40 steps x 120 channels
    unet_locked=False, max_lines=2, max_chars=8, guidance_scale=3.0,
)

# micro: 64x64 procedural word images, one line; sized for a CPU (see bench/anytext.py). The bundled weights:
# these defaults, seed 0 (`zoo train anytext --variant micro --steps 6000 --seed 0`; docs/models/anytext.md).
MICRO_TRAIN = {"steps": 6000, "batch_size": 8, "lr": 5e-4, "warmup_steps": 50, "schedule": "cosine", "log_every": 25,
               "ckpt_every": 250, "eval_images": 100, "grad_clip": 1.0, "ema_decay": 0.995, "perceptual_samples": 2}
DEMO_DATA = "100 held-out procedural word images (64 px, one line), read by rapidocr PP-OCRv4 on the position crops"

CARD = ModelCard(
    name="anytext",
    task="visual text generation",
    title="AnyText: Multilingual Visual Text Generation and Editing",
    year=2024,
    arxiv="2311.03054",
    repo="https://github.com/tyxsspa/AnyText",
    license="Apache-2.0",
    summary='Writes the "quoted" text lines of a prompt at given positions (boxes or polygons), or edits them into '
            "an image: a ControlNet on a latent diffusion UNet conditioned by rendered glyphs, position masks and the "
            "masked image (auxiliary latent module), with OCR embeddings of each line in the caption (text embedding "
            "module), trained with a text perceptual loss.",
    variants={
        "micro": VariantSpec(MICRO, description="64x64 images (f4 micro autoencoder, 16x16x4 latents), up to 2 lines of 8 "
                                                "characters; PP-OCRv4 embeddings; CPU tests and demo",
                             demo_weights="micro-demo.safetensors" if (WEIGHTS / "micro-demo.safetensors").is_file() else None),
        "sd15": VariantSpec(AnyTextConfig(), description="the paper's configuration: SD1.5 UNet (locked) + ControlNet, SD VAE, CLIP "
                                                         "ViT-L/14 text, 512x512, 5 lines of 20 characters (load the official "
                                                         "checkpoint or diffusers folders with --weights)",
                            paper_params=SD15_PARAMS),
    },
    result_type="Generation",
    inputs=(
        InputSpec("prompt", "text", help='the caption; each "quoted" part is a text line to write, e.g. a sign that reads "OPEN"',
                  minimum=1, maximum=1000),
        InputSpec("boxes", "boxes", required=False, help="one box [x0, y0, x1, y1] per line, in the model's image pixels "
                  "(none: lines stacked in bands)", minimum=0, maximum=5),
        InputSpec("polygons", "polygons", required=False, help="one polygon per line instead of boxes", minimum=0, maximum=5),
        InputSpec("image", "image", required=False, help="editing: the image to write into (resized to the model's size)"),
        InputSpec("mask", "mask", required=False, help="editing: white = the region to repaint (default: the lines' positions)"),
    ),
    options=(
        OptionSpec("seed", "int", 0, "seed of the first image's noise (image i uses seed + i)", minimum=0, maximum=1_000_000),
        OptionSpec("steps", "int", None, "DDIM steps (default: the variant's, 20)", minimum=1, maximum=100),
        OptionSpec("guidance_scale", "float", None, "classifier-free guidance (default: the variant's; 9 for sd15)",
                   minimum=0.0, maximum=30.0),
        OptionSpec("count", "int", 1, "images per prompt", minimum=1, maximum=8),
        OptionSpec("negative_prompt", "str", None, "the unconditional branch's caption (default: empty)"),
    ),
    graphs=("text_encoder", "vae_encoder", "control_unet", "vae_decoder"),
    train_stages={
        "anytext": TrainStage(build_task, AnyTextTrainConfig,
                              "Eq. 5: text-control diffusion loss + 0.003 alpha_bar_t x text perceptual loss on procedural "
                              "word images (or an AnyWord-3M JSON); finalize reads held-out generations with rapidocr "
                              "(Sen.ACC, NED)", variant_defaults={"micro": dict(MICRO_TRAIN)}, train_graph="control_unet"),
    },
    examples=(str(EXAMPLES / "sign.png"),) if (EXAMPLES / "sign.png").is_file() else (),
    converter=convert_state_dict,
    metrics=sidecar_metrics(WEIGHTS / "micro-demo.json", "micro", DEMO_DATA, ("sen_acc", "ned", "ocr_feature_mse", "sen_acc_ground_truth", "sen_acc_codec")),
)


@register_model(CARD)
def anytext(config: AnyTextConfig) -> AnyTextPipeline:
    return AnyTextPipeline(AnyTextModel(config), config)


__all__ = [
    "CARD",
    "PERCEPTUAL_WEIGHT",
    "AnyTextConfig",
    "AnyTextModel",
    "AnyTextPipeline",
    "AnyTextTrainConfig",
    "AnyTextTrainable",
    "AuxiliaryLatentModule",
    "EmbeddingManager",
    "OnnxGraphModule",
    "TextLineError",
    "TextRecognizer",
    "WordConditionSet",
    "anytext",
    "anytext_loss",
    "build_task",
    "convert_state_dict",
    "evaluate_ocr",
    "line_tensor",
    "normalized_edit_similarity",
    "ocr_accuracy",
    "parse_prompt",
    "predict_x0",
    "text_control_diffusion_loss",
    "text_perceptual_loss",
]
