"""PVD: Parallel Vertex Diffusion for unified visual grounding (referring boxes and masks).

Cheng, Li, Jin, Ji, Yuan, Liu, Chen. "Parallel Vertex Diffusion for Unified Visual Grounding",
AAAI 2024, arXiv:2303.07216. No official code was released. Facts used (MODELS.md, verified from
the paper's abstract and method summary): boxes and masks as vertex sequences generated in parallel
by one diffusion model (only the noise dimension differs), a centre predicted from cross-modal
features, the Center Anchor Mechanism (vertices as normalised offsets from the centre), the Angle
Summation Loss (a point-in-polygon descriptor from summed angles compared at sampled points),
few-step sampling. Backbone, language encoder, vertex count and step count are unverified: our
choices, named in model.py.

- `model.py`: timm backbone, transformers BERT text encoder, fusion, centre head, CAM, the vertex denoiser.
- `loss.py`: diffusion (point) loss, centre loss, Angle Summation Loss.
- `tokenizer.py`: offline WordPiece (a vocabulary trained with `tokenizers` on the procedural expressions).
- `train.py`: `PVDTrainConfig` / `PVDTrainable`, `evaluate` (Acc@0.5, mIoU, oIoU).
- `pipeline.py`: image + expression -> `Grounding`, DDIM over the "denoise" graph.
- `convert.py`: transformers BERT checkpoints for the text encoder; PVD checkpoints saved elsewhere.
"""

from pathlib import Path

from zoo.registry import InputSpec, Metric, ModelCard, OptionSpec, TrainStage, VariantSpec, register_model, sidecar_metrics

from .convert import convert_state_dict, load_text_encoder
from .loss import angle_descriptor, angle_sum, angle_summation_loss, centre_loss, diffusion_loss, winding_angle_sum
from .model import PVDConfig, PVDModel, VertexDenoiser, preset_config
from .pipeline import EXPRESSION_INPUT, PVDPipeline
from .train import PVDTrainable, PVDTrainConfig, build_task, evaluate

WEIGHTS = Path(__file__).parent / "weights"
EXAMPLES = Path(__file__).parent / "examples"
# Reference counts of the paper variant's encoders (how obtained: tests/models/test_pvd_model.py):
# timm resnet101 without its classifier (torchvision/timm ResNet-101: 44,549,160 with the 1000-class fc of
# 2,049,000) and Google's BERT-base uncased without the pooler (109,482,240 with the 590,592-parameter pooler).
RESNET101_FEATURES = 42_500_160
BERT_BASE_NO_POOLER = 108_891_648
DEMO_DATA = "held-out procedural referring expressions (zoo.data.referring, split val, seed 0, 96x96)"


def _demo_metrics() -> tuple[Metric, ...]:
    """The bundled demo weights' own final metrics (their JSON sidecar, written by `zoo train`)."""
    return sidecar_metrics(WEIGHTS / "micro-demo.json", "micro", DEMO_DATA, ("acc@0.5", "acc@0.5_relation", "mIoU", "oIoU"))


CARD = ModelCard(
    name="pvd",
    task="visual-grounding",
    title="Parallel Vertex Diffusion for Unified Visual Grounding",
    year=2024,
    arxiv="2303.07216",
    repo="(no official code)",
    license="our implementation (no official code released)",
    summary="Referring boxes and masks from one diffusion model that denoises all vertices of a box (2 corners) or a "
            "polygon (N vertices) in parallel, anchored at a predicted centre (Center Anchor Mechanism) and trained with "
            "the Angle Summation Loss.",
    variants={
        "micro": VariantSpec(preset_config("micro"),
                             description="test_resnet (timm) at stride 8, 2-layer 64-d BERT, 2+2 layers d 64, 24-vertex polygons, "
                                         "96x96 input, WordPiece vocabulary of the procedural expressions (CPU tests, demo)",
                             demo_weights="micro-demo.safetensors"),
        "paper": VariantSpec(preset_config("paper"),
                             description="ResNet-101 + BERT-base (12 layers, 768), 6 fusion + 6 denoiser layers d 256, 36-vertex "
                                         "polygons, 640x640 (encoder sizes our choice: the paper's could not be verified here)",
                             paper_params={"backbone": RESNET101_FEATURES, "text_encoder": BERT_BASE_NO_POOLER}),
    },
    result_type="Grounding",
    inputs=(InputSpec("image", "image", help="the picture"),
            EXPRESSION_INPUT),
    options=(
        OptionSpec("steps", "int", 0, "DDIM sampling steps (0: the variant's default, 4)", minimum=0, maximum=50),
        OptionSpec("seed", "int", 0, "seed of the starting noise (the same for every expression)", minimum=0, maximum=1_000_000),
    ),
    graphs=("encode", "denoise"),
    train_stages={
        "grounding": TrainStage(
            build_task, PVDTrainConfig,
            "joint referring detection and segmentation on RefCOCO-style data (procedural or the user's): centre loss, "
            "diffusion loss on box corners and polygon vertices through the Center Anchor Mechanism, Angle Summation "
            "Loss; finalize scores Acc@0.5, mIoU and oIoU on the val split",
            # micro: a CPU-sized run; from scratch, lr 1e-3, clip 1.0, EMA 0.99 (0.999 over a 1,000-step run kept 37 % of the
            # random init in the average: Acc@0.5 0.002 for the EMA weights vs 0.40 for the raw ones, measured)
            variant_defaults={"micro": {"steps": 6000, "batch_size": 32, "lr": 1e-3, "grad_clip": 1.0, "train_images": 1500,
                                        "val_images": 100, "log_every": 50, "ckpt_every": 500, "ema_decay": 0.99}},
            train_graph="denoise",
        ),
    },
    examples=(str(EXAMPLES / "shapes_1.png"),),
    notes="Inputs: an image and a referring expression (example for the bundled image: "
          "examples/shapes_1.txt). Not the authors' code: no official PVD code or weights exist.",
    converter=convert_state_dict,
    metrics=_demo_metrics(),
)


@register_model(CARD)
def pvd(config: PVDConfig) -> PVDPipeline:
    return PVDPipeline(PVDModel(config), config)


__all__ = ["CARD", "PVDConfig", "PVDModel", "PVDPipeline", "PVDTrainConfig", "PVDTrainable", "VertexDenoiser", "angle_descriptor",
           "angle_sum", "angle_summation_loss", "build_task", "centre_loss", "convert_state_dict", "diffusion_loss", "evaluate",
           "load_text_encoder", "preset_config", "winding_angle_sum"]
