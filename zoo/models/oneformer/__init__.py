"""OneFormer: One Transformer to Rule Universal Image Segmentation.

Jain, Li, Chiu, Hassani, Orlov, Shi. CVPR 2023. arXiv:2211.06220.
Official code: https://github.com/SHI-Labs/OneFormer (MIT); transformers ports it as
`OneFormerForUniversalSegmentation` (Apache-2.0). The code here is our own; sizes, module names,
losses and post-processing follow the official code so its checkpoints load (convert.py).

One model, trained once on panoptic annotations, does semantic, instance and panoptic
segmentation: a task token ("The task is {task}", CLIP BPE ids through an MLP) initialises the
object queries (Sec. 3.1), a Mask2Former-style pixel decoder and masked-attention decoder predict
a class and a mask per query, and during training a query-text contrastive loss ties the queries
to a text description of the task's targets (Sec. 3.2-3.3). Each training image carries a task
drawn uniformly, with the targets of that task derived from its panoptic annotation.

What we chose where the paper and code leave room:
- Input: one fixed square side S per variant (`config.image_size`: 128 micro, 512 Swin-T,
  640 Swin-L / ConvNeXt-L, the ADE20K training crops), so the `segment` graph exports with static
  spatial sizes; images are letterboxed (aspect kept, padded bottom/right with the mean colour) and
  the masks are cropped and resized back, as detectron2's `sem_seg_postprocess` does.
- Results: `Segmentation` of kind semantic (class per pixel), panoptic (segment ids from 1,
  -1 void) or instance (the official demo path: top-N (query, class) pairs whose class probability
  exceeds `object_mask_threshold`, painted highest score on top, -1 background).
- Training: the official ADE20K recipe (AdamW 1e-4, weight decay 0.05, poly 0.9, backbone lr
  x 0.1, batch 16, clip 0.01) without the multi-scale crop augmentation (one input size;
  horizontal flips kept); the three tasks uniformly (the official 0.33 / 0.33 / 0.34).
- `micro`: a 4-stage Swin of width 16 and a 64-wide head over the 9 procedural shapes classes
  (zoo.data.shapes: 6 things, 3 stuff) for CPU tests and the demo; the paper sizes are
  the ADE20K configs (150 classes).
"""

from pathlib import Path

from zoo.registry import InputSpec, Metric, ModelCard, OptionSpec, TrainStage, VariantSpec, register_model

from .convert import convert_state_dict, load_transformers
from .loss import OneFormerCriterion, contrastive_loss
from .model import OneFormer, OneFormerConfig, OneFormerGraph, preset_config
from .pipeline import OneFormerPipeline
from .tokenizer import TASKS, task_tokens, text_tokens
from .train import OneFormerTrainConfig, build_task

EXAMPLES = Path(__file__).parent / "examples"
# The demo weights (2,000 steps on 256 scenes, 6,000 more at lr 5e-4 on 2,048, 8,000 more at 2.5e-4 on 4,096), scored with the paper's
# metrics (percent) on 128 held-out scenes at the official object_mask_threshold 0.8 and again at 0.4
# (bench/oneformer_quality.py; bench/results/oneformer-quality-128scenes-2026-12-08.json); the commands: the sidecar.
QUALITY_COMMAND = "python -m zoo.bench.oneformer_quality --weights zoo/models/oneformer/weights/micro-demo.safetensors --scenes 128"
DEMO_DATA = "128 held-out procedural panoptic shapes scenes (128 x 128, seed 0, split val)"

CARD = ModelCard(
    name="oneformer",
    task="segmentation",
    title="OneFormer: One Transformer to Rule Universal Image Segmentation",
    year=2023,
    arxiv="2211.06220",
    repo="https://github.com/SHI-Labs/OneFormer",
    license="MIT",
    summary="One task-conditioned transformer for semantic, instance and panoptic segmentation, trained once on "
            "panoptic annotations with a task token and a query-text contrastive loss.",
    variants={
        "micro": VariantSpec(preset_config("micro"), description="Swin width 16, 64-d head, 24 queries, 128 x 128 input, "
                                                                   "the 9 procedural shapes classes (CPU tests, demo)",
                             demo_weights="micro-demo.safetensors"),
        "swin-t": VariantSpec(preset_config("swin-t"), description="Swin-T backbone, 150 queries, ADE20K 150 classes, 512 x 512; "
                                                                     "50.7M at test time (without the 17.5M text mapper)",
                              paper_params={"total": 68_279_314, "backbone": 27_520_698, "text_mapper": 17_542_913}),
        "swin-l": VariantSpec(preset_config("swin-l"), description="Swin-L (384, window 12) backbone, 250 queries, ADE20K, 640 x 640; "
                                                                     "218.8M at test time, the paper's 219M",
                              paper_params={"total": 236_354_060, "backbone": 195_201_204, "text_mapper": 17_542_913}),
        "convnext-l": VariantSpec(preset_config("convnext-l"), description="ConvNeXt-L backbone, 250 queries, ADE20K, 640 x 640; "
                                                                             "219.8M at test time (without the text mapper)",
                                  paper_params={"total": 237_385_880, "backbone": 196_233_024, "text_mapper": 17_542_913}),
    },
    result_type="Segmentation",
    inputs=(InputSpec("image", "image", help="the image to segment"),),
    options=(
        OptionSpec("task", "str", "panoptic", "which segmentation the task token asks for", choices=TASKS),
        OptionSpec("object_mask_threshold", "float", 0.8, "keep queries whose class probability exceeds this "
                   "(panoptic; instance results too)", minimum=0.0, maximum=1.0),
        OptionSpec("overlap_threshold", "float", 0.8, "panoptic: keep a query's visible part only when it is at least "
                   "this fraction of its own mask", minimum=0.0, maximum=1.0),
    ),
    graphs=("segment",),
    train_stages={
        "universal": TrainStage(
            build_task, OneFormerTrainConfig,
            "task-conditioned joint training on COCO panoptic data (semantic, instance and panoptic targets from one "
            "annotation; CE + mask BCE + dice with Hungarian matching and the query-text contrastive loss, paper Sec. 3)",
            # micro: a CPU-sized run on procedural scenes (2,000 steps at batch 8: 1,417 s on a shared core; the
            # demo weights); from scratch lr 1e-3 (1,200 steps at 3e-4 left the thing classes near uniform)
            variant_defaults={"micro": {"steps": 2000, "batch_size": 8, "lr": 1e-3, "num_points": 3136,
                                        "train_images": 256, "val_images": 16, "samples_per_epoch": 2048,
                                        "ckpt_every": 500, "log_every": 50, "eval_every": 1000}},
        ),
    },
    examples=(str(EXAMPLES / "shapes_1.png"), str(EXAMPLES / "shapes_2.png")),
    converter=convert_state_dict,
    metrics=(
        Metric("PQ", 46.6, "micro", DEMO_DATA, QUALITY_COMMAND, "2026-12-08"),
        Metric("PQ_things", 20.4, "micro", DEMO_DATA, QUALITY_COMMAND, "2026-12-08"),
        Metric("PQ_stuff", 98.9, "micro", DEMO_DATA, QUALITY_COMMAND, "2026-12-08"),
        Metric("mIoU", 49.0, "micro", DEMO_DATA, QUALITY_COMMAND, "2026-12-08"),
        Metric("mask_AP", 23.9, "micro", DEMO_DATA, QUALITY_COMMAND, "2026-12-08"),
        Metric("PQ@0.4", 52.3, "micro", DEMO_DATA + "; object_mask_threshold 0.4", QUALITY_COMMAND, "2026-12-08"),
        Metric("PQ_things@0.4", 29.1, "micro", DEMO_DATA + "; object_mask_threshold 0.4", QUALITY_COMMAND, "2026-12-08"),
    ),
)


@register_model(CARD)
def oneformer(config: OneFormerConfig) -> OneFormerPipeline:
    return OneFormerPipeline(OneFormer(config), config)


__all__ = ["CARD", "OneFormer", "OneFormerConfig", "OneFormerCriterion", "OneFormerGraph", "OneFormerPipeline",
           "OneFormerTrainConfig", "build_task", "contrastive_loss", "convert_state_dict", "load_transformers", "preset_config",
           "task_tokens", "text_tokens"]
