"""OneFormer task-conditioned joint training as a `TrainTask` for the shared loop in `training/`.

One step (paper Sec. 3): each image carries a task drawn uniformly from `tasks` and the targets of
that task derived from its panoptic annotation (targets.py); the model sees "The task is {task}"
and, for the contrastive term, the image's text list; the loss is `OneFormerCriterion` (loss.py).

Defaults are the official ADE20K recipe (`configs/ade20k/Base-ADE20K-UnifiedSegmentation.yaml`,
`train_net.py`): AdamW, lr 1e-4, weight decay 0.05 (0 on normalisation layers, embeddings and
Swin's relative position tables), backbone lr x 0.1, poly schedule (power 0.9) over 160k
iterations, batch 16, full-model gradient clipping at norm 0.01. (The official optimiser wrapper
runs `nan_to_num` over a parameter iterator and then hands the exhausted iterator to
`clip_grad_norm_`, so its clipping never acts; Mask2Former's, which OneFormer copies the config
from, does clip. We keep the configured 0.01; `--set grad_clip=0` reproduces the official runs.)
COCO trains 50-100 epochs with multi-step decay instead of poly; `--set schedule=step` and
`lr_milestones` express it.

Data (`data`): "synthetic" writes procedural shapes scenes (zoo.data.shapes, COCO panoptic) under
WORKDIR/data/shapes, reused while its meta.json matches; otherwise a COCO panoptic folder:

    DATA/images/<file_name>                      (the images named in the JSON)
    DATA/annotations/panoptic_train.json          (+ panoptic_val.json for evaluation, optional)
    DATA/annotations/panoptic_train/<file_name>   (PNG segment ids, R + 256 G + 256^2 B)
    DATA/annotations/panoptic_val/<file_name>

whose categories (sorted by id) must be the model's classes. Each image is letterboxed to the
model's input side S (the inference preprocessing) and flipped horizontally with probability
`hflip`; item i shows image i mod n with a task and a flip drawn from (seed, i), so the dataset
is deterministic by index and a virtual length of `samples_per_epoch` lets images come back with
other tasks. (The official multi-scale crop augmentation is not reproduced: our graph takes one
fixed size.) `evaluate` runs the predictor's post-processing for each task on the val split:
PQ (panoptic), mIoU (semantic) and mask AP (instance), in percent as the paper reports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.data._rng import rng_for
from zoo.imageio import letterbox_masks, to_uint8_array
from zoo.trainable import TrainConfig, TrainTask

from .loss import OneFormerCriterion
from .pipeline import OneFormerPipeline, instance_inference, letterbox_image
from .targets import build_targets, choose_task, parse_tasks
from .tokenizer import task_tokens, text_tokens

NO_DECAY_PARAMS = ("relative_position_bias_table", "absolute_pos_embed")
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
              nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm)


@dataclass
class OneFormerTrainConfig(TrainConfig):
    """Official ADE20K defaults (Base-ADE20K-UnifiedSegmentation.yaml + oneformer_R50_bs16_160k.yaml)."""

    steps: int = 160_000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    schedule: str = "poly"
    lr_power: float = 0.9
    grad_clip: float = 0.01  # CLIP_TYPE full_model, CLIP_VALUE 0.01 (see the module docstring)
    ckpt_every: int = 5000
    backbone_lr_mult: float = 0.1  # SOLVER.BACKBONE_MULTIPLIER
    tasks: str = "semantic,instance,panoptic"  # joint training; one name for the single-task ablation
    contrastive_weight: float = 0.5  # 0 turns the query-text contrastive loss (and the text mapper) off
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544  # TRAIN_NUM_POINTS (112^2)
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    image_size: int = 0  # training input side; 0: the model's (config.image_size)
    hflip: float = 0.5
    train_images: int = 512  # procedural training scenes
    val_images: int = 32  # procedural validation scenes (split "val")
    samples_per_epoch: int = 10_000  # virtual dataset length (task and flip are drawn per index)
    eval_batch_size: int = 8
    object_mask_threshold: float = 0.8  # evaluation post-processing, as the predictor's defaults
    overlap_threshold: float = 0.8


class OneFormerTrainable(nn.Module):
    """The model with its criterion; `model` is what gets saved."""

    def __init__(self, model: nn.Module, config: OneFormerTrainConfig):
        super().__init__()
        self.model = model
        self.criterion = OneFormerCriterion(
            model.config.num_classes, config.class_weight, config.mask_weight, config.dice_weight,
            config.contrastive_weight, config.no_object_weight, config.num_points, config.oversample_ratio,
            config.importance_sample_ratio)

    def training_step(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        device = next(self.model.parameters()).device
        images = batch["images"].to(device)
        tasks = batch["task_tokens"].to(device)
        texts = batch["text_tokens"].to(device) if self.criterion.contrastive_on else None
        outputs = self.model(images, tasks, texts)
        targets = [{"labels": t["labels"].to(device), "masks": t["masks"].to(device)} for t in batch["targets"]]
        return self.criterion(outputs, targets)


def param_groups(module: nn.Module, config: OneFormerTrainConfig) -> list[dict[str, Any]]:
    """The official optimiser groups (`train_net.py` build_optimizer): backbone lr x backbone_lr_mult;
    no weight decay on normalisation layers, embeddings and Swin's position tables."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, sub in module.named_modules():
        for param_name, param in sub.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            backbone = "backbone" in module_name.split(".")
            no_decay = isinstance(sub, NORM_TYPES) or isinstance(sub, nn.Embedding) or param_name in NO_DECAY_PARAMS
            groups.setdefault((backbone, no_decay), []).append(param)
    return [{"params": params, "lr": config.lr * (config.backbone_lr_mult if backbone else 1.0),
             "weight_decay": 0.0 if no_decay else config.weight_decay}
            for (backbone, no_decay), params in sorted(groups.items())]


class OneFormerTrainSet(torch.utils.data.Dataset):
    """Training items from a `CocoPanoptic`: letterboxed, flipped and task-conditioned by index.

    Item: {"image" (3, S, S) normalised, "task", "task_tokens" (77,), "text_tokens" (N - N_ctx, 77),
    "labels" (M,), "masks" (M, S, S) bool}."""

    def __init__(self, panoptic: Any, model_config: Any, tasks: tuple[str, ...], seed: int, image_size: int,
                 hflip: float = 0.5, length: int | None = None):
        self.panoptic, self.config, self.tasks, self.seed = panoptic, model_config, tasks, seed
        self.image_size, self.hflip = image_size, hflip
        self.num_texts = model_config.num_queries - model_config.n_ctx
        self.class_names = panoptic.class_names
        self.length = max(length or 0, len(panoptic))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.panoptic[index % len(self.panoptic)]
        image, masks = item["image"], item["masks"]
        if rng_for(self.seed, "oneformer-flip", index).random() < self.hflip:
            image, masks = image.flip(-1), masks.flip(-1)
        image, _ = letterbox_image(image, self.image_size, self.config)
        masks = letterbox_masks(masks, self.image_size)
        task = choose_task(self.seed, index, self.tasks)
        target = build_targets(task, masks, item["labels"], item["isthing"], self.class_names, self.num_texts)
        return {"image": image, "task": task, "task_tokens": task_tokens([task], self.config.task_seq_len)[0],
                "text_tokens": text_tokens(target.texts), "labels": target.labels, "masks": target.masks}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: stacked images and tokens, per-image targets."""
    return {"images": torch.stack([it["image"] for it in items]),
            "task_tokens": torch.stack([it["task_tokens"] for it in items]),
            "text_tokens": torch.stack([it["text_tokens"] for it in items]),
            "targets": [{"labels": it["labels"], "masks": it["masks"]} for it in items],
            "tasks": [it["task"] for it in items]}


def procedural_data(workdir: Path, train_images: int, val_images: int, seed: int, image_size: int) -> Path:
    """Generate (or reuse, when its meta.json matches) procedural shapes scenes in COCO panoptic."""
    from zoo.data.shapes import GENERATOR_VERSION, generate_shapes_dataset

    root = Path(workdir) / "data" / "shapes"
    splits = {"train": train_images, "val": val_images} if val_images > 0 else {"train": train_images}
    meta = root / "meta.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if (info.get("version"), info.get("seed"), info.get("image_size"), info.get("splits")) == (GENERATOR_VERSION, seed, image_size, splits):
            return root
    generate_shapes_dataset(root, splits=splits, seed=seed, image_size=image_size)
    return root


def open_panoptic(root: Path, split: str) -> Any:
    """`CocoPanoptic` of DATA/annotations/panoptic_{split}.json, or None when that split is absent."""
    from zoo.data.coco import CocoPanoptic

    ann = Path(root) / "annotations" / f"panoptic_{split}.json"
    if not ann.is_file():
        return None
    return CocoPanoptic(Path(root) / "images", ann, Path(root) / "annotations" / f"panoptic_{split}")


def check_classes(panoptic: Any, model_config: Any) -> None:
    """The dataset's categories must be the model's classes (count and things)."""
    names, things = panoptic.class_names, tuple(panoptic.thing_labels)
    if len(names) != model_config.num_classes:
        raise ValueError(f"the data has {len(names)} categories but the model predicts {model_config.num_classes} classes")
    if tuple(int(t) for t in model_config.thing_classes) != things:
        raise ValueError(f"the data's thing classes {things} differ from the model's {tuple(model_config.thing_classes)}")


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, panoptic: Any, batch_size: int = 8, object_mask_threshold: float = 0.8,
                          overlap_threshold: float = 0.8) -> dict[str, float]:
    """PQ / SQ / RQ (panoptic task), mIoU (semantic task) and mask AP (instance task) on a
    `CocoPanoptic` split, each through the predictor's post-processing at the images' own size.
    Values in percent (the paper's unit)."""
    from zoo.data.coco import mask_bbox, mask_to_rle
    from zoo.metrics.coco import coco_ap, detections_to_coco
    from zoo.metrics.segmentation import ConfusionMatrix, PanopticQuality

    config = model.config
    pipeline = OneFormerPipeline(model, config)
    pipeline.device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    categories = panoptic.categories
    pq = PanopticQuality(categories)
    confusion = ConfusionMatrix(config.num_classes, panoptic.ignore_index)
    thing_cats = {c["id"] for c in categories if c.get("isthing", 1)}
    gt = {"images": [], "annotations": [], "categories": [c for c in categories if c["id"] in thing_cats]}
    detections: list[dict[str, Any]] = []
    for start in range(0, len(panoptic), batch_size):
        items = [panoptic[i] for i in range(start, min(start + batch_size, len(panoptic)))]
        images = [to_uint8_array(it["image"]) for it in items]
        for item, (cls, masks) in zip(items, pipeline.infer(images, "panoptic")):
            seg = pipeline.postprocess(cls, masks, "panoptic", object_mask_threshold, overlap_threshold)
            pred_map = np.where(seg.segment_map < 0, 0, seg.segment_map)
            pred_segments = [{"id": s["id"], "category_id": categories[s["label"]]["id"]} for s in seg.segments]
            pq.update(pred_map, pred_segments, item["panoptic"].numpy(), item["segments_info"])
        for item, (cls, masks) in zip(items, pipeline.infer(images, "semantic")):
            confusion.update(pipeline.postprocess(cls, masks, "semantic").segment_map, item["semantic"].numpy())
        for item, (cls, masks) in zip(items, pipeline.infer(images, "instance")):
            image_id = int(item["image_id"])
            h, w = item["panoptic"].shape
            gt["images"].append({"id": image_id, "width": w, "height": h})
            pan = item["panoptic"].numpy()
            for s in item["segments_info"]:
                if s["category_id"] in thing_cats:
                    mask = pan == s["id"]
                    gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": s["category_id"],
                                              "segmentation": mask_to_rle(mask), "area": float(mask.sum()),
                                              "bbox": mask_bbox(mask), "iscrowd": int(s.get("iscrowd", 0))})
            found = instance_inference(cls, masks, config.thing_classes, config.num_queries)
            pred_masks = found["masks"].cpu().numpy()
            boxes = np.array([_xyxy(m) for m in pred_masks], dtype=np.float64).reshape(-1, 4)
            cats = np.array([categories[int(label)]["id"] for label in found["labels"].tolist()], dtype=np.int64)
            detections += detections_to_coco(image_id, boxes, found["scores"].cpu().numpy(), cats, pred_masks)
    model.train(was_training)
    panoptic_stats = pq.compute()
    semantic = confusion.compute()
    ap = coco_ap(detections, gt, "segm") if gt["annotations"] else {"AP": 0.0, "AP50": 0.0}
    return {"pq": 100 * panoptic_stats["All"]["pq"], "sq": 100 * panoptic_stats["All"]["sq"],
            "rq": 100 * panoptic_stats["All"]["rq"], "pq_things": 100 * panoptic_stats["Things"]["pq"],
            "pq_stuff": 100 * panoptic_stats["Stuff"]["pq"], "miou": 100 * semantic["miou"],
            "mask_ap": 100 * max(ap["AP"], 0.0), "mask_ap50": 100 * max(ap["AP50"], 0.0)}


def _xyxy(mask: np.ndarray) -> list[float]:
    """Tight xyxy box of a mask in pixel-edge coordinates."""
    from zoo.data.coco import mask_bbox

    x, y, w, h = mask_bbox(mask)
    return [x, y, x + w, y + h]


def build_task(model: nn.Module, data: str, config: OneFormerTrainConfig, seed: int, workdir: Path) -> TrainTask:
    """Task-conditioned joint training on COCO panoptic data ("synthetic": procedural shapes scenes)."""
    tasks = parse_tasks(config.tasks)
    size = config.image_size or model.config.image_size
    root = procedural_data(Path(workdir), config.train_images, config.val_images, seed, size) if data == "synthetic" else Path(data)
    train = open_panoptic(root, "train")
    if train is None:
        raise FileNotFoundError(f"{root}: no annotations/panoptic_train.json (expected a COCO panoptic folder: "
                                "images/, annotations/panoptic_train.json, annotations/panoptic_train/)")
    check_classes(train, model.config)
    val = open_panoptic(root, "val")
    dataset = OneFormerTrainSet(train, model.config, tasks, seed, size, config.hflip, config.samples_per_epoch)
    module = OneFormerTrainable(model, config)

    def evaluate(module: nn.Module) -> dict[str, float]:
        if val is None or len(val) == 0:
            return {}
        return evaluate_segmentation(module.model, val, config.eval_batch_size, config.object_mask_threshold,
                                     config.overlap_threshold)

    return TrainTask(module=module, dataset=dataset, config=config, collate_fn=collate,
                     parameters=lambda m: param_groups(m, config), evaluate=evaluate, to_pipeline=lambda m: m.model,
                     extra={"data": str(root), "tasks": list(tasks), "validation": val,
                            # without the contrastive term the text mapper gets no gradient
                            "ddp_find_unused_parameters": not module.criterion.contrastive_on})
