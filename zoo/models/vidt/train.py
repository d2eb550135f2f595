"""ViDT / ViDT+ training as a `TrainTask` for the shared loop in `training/` (official `main.py`, `engine.py`).

Defaults follow the official training commands (README) and `main.py`: AdamW, lr 1e-4, weight
decay 1e-4, gradient clipping 0.1, batch 16 (2 per GPU x 8), 50 COCO epochs, cosine decay
("warmupcos" with no warm-up, to min-lr 1e-7, ~0 here). `main.py` gives the backbone the *same*
rate as the rest (its `--lr_backbone 1e-5` and `--lr_drop 40` are DETR leftovers that only the
optional "step" scheduler and checkpoint interval read), and no weight decay to the backbone's
biases, 1-D parameters and its [DET] tokens / [DET] position embedding. `backbone_lr` and
`schedule` are fields: `--set backbone_lr=1e-5 --set schedule=step` gives the DETR-style recipe
(lr x 0.1 at 40 of 50 epochs through `lr_milestones`).

Data (`data`):
- "synthetic": procedural shapes scenes (`zoo.data.shapes.generate_shapes_dataset`) written in
  COCO format under WORKDIR/data (reused when its meta.json matches);
- a folder in COCO layout: `images/` + `annotations/instances_train.json` and
  `annotations/instances_val.json` (`file_name` relative to `images/`; polygon or RLE
  segmentations, needed for ViDT+). Labels: a model with more classes than the largest
  category id (the paper's 91-way COCO head) uses category ids as labels, as the official code
  does; otherwise labels are the categories' contiguous indices, sorted by id (our `micro`: 6).

Items are deterministic functions of the index: the image letterboxed to the model's
`image_size` exactly as the pipeline does (boxes normalised to that canvas, no padding mask),
and the dataset lists every image twice, the second time flipped horizontally (our light
augmentation in place of the official multi-scale resize and random crop).
Evaluation: COCO box AP (and mask AP for ViDT+, masks decoded from the UQR vectors) on the val
split through the pipeline's postprocessing, boxes and masks in original image pixels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.imageio import letterbox_masks
from zoo.nn.box_ops import box_xyxy_to_cxcywh
from zoo.trainable import TrainConfig, TrainTask

from .loss import ViDTCriterion
from .pipeline import IMAGENET_MEAN, IMAGENET_STD, letterbox_scaled, postprocess_image

COCO_TRAIN_STEPS = 50 * 7393  # 50 epochs of COCO train2017 (118 287 images) at batch 16


@dataclass
class ViDTTrainConfig(TrainConfig):
    """Official recipe (README training commands, main.py, arguments.py) plus our data fields."""

    steps: int = COCO_TRAIN_STEPS
    batch_size: int = 16
    lr: float = 1e-4
    backbone_lr: float = 1e-4  # main.py uses args.lr for the backbone groups too
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"  # --sched warmupcos, warmup 0
    lr_milestones: tuple[float, ...] = (0.8,)  # read by schedule=step only: lr_drop 40 of 50 epochs
    grad_clip: float = 0.1
    ckpt_every: int = 5000
    hflip: bool = True  # list every image a second time, flipped
    train_images: int = 512  # procedural training scenes
    val_images: int = 32  # procedural validation scenes (split "val")
    scene_size: int = 128  # procedural scene side in pixels
    min_objects: int = 2
    max_objects: int = 6
    eval_batch_size: int = 8
    eval_max_detections: int = 100  # official PostProcess keeps the top 100 pairs


class ViDTTrainable(nn.Module):
    """Wraps the model with its criterion; `model` is what gets saved."""

    def __init__(self, model: nn.Module, criterion: ViDTCriterion):
        super().__init__()
        self.model = model
        self.criterion = criterion

    def training_step(self, batch: tuple[Tensor, list[dict[str, Tensor]]]) -> dict[str, Tensor]:
        images, targets = batch
        outputs = self.model(images, None)
        losses = self.criterion(outputs, targets)
        # Log the total, the last prediction's terms and the class error; aux terms only enter the total.
        return {k: (v if k == "loss" else v.detach()) for k, v in losses.items()
                if k in ("loss", "class_error") or not k.rpartition("_")[2].isdigit()}


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    """main.py: backbone biases, 1-D parameters and `no_weight_decay()` names ([DET] token and its pos embed)."""
    last = name.rsplit(".", 1)[-1]
    return param.ndim <= 1 or name.endswith(".bias") or last in ("det_token", "det_pos_embed")


def param_groups(module: nn.Module, config: ViDTTrainConfig) -> list[dict[str, Any]]:
    """Three groups as main.py: non-backbone (lr, wd), backbone no-decay (backbone_lr, wd 0), backbone (backbone_lr, wd)."""
    head, bb_decay, bb_no_decay = [], [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if "backbone" not in name:
            head.append(param)
        elif _is_no_decay(name, param):
            bb_no_decay.append(param)
        else:
            bb_decay.append(param)
    groups = [{"params": head, "lr": config.lr},
              {"params": bb_no_decay, "lr": config.backbone_lr, "weight_decay": 0.0},
              {"params": bb_decay, "lr": config.backbone_lr}]
    return [g for g in groups if g["params"]]


# ---------------------------------------------------------------------------- data


class ViDTDataset(torch.utils.data.Dataset):
    """COCO instances -> (letterboxed normalised image (3, S, S), target dict), deterministic by index.

    Target: labels (T,), boxes (T, 4) cxcywh normalised to the S x S canvas, masks (T, S, S) bool
    (when `with_masks`), image_id, orig_size (h, w), scale (sy, sx). Indices >= len(coco) are the
    same images flipped horizontally (when `hflip`).
    """

    def __init__(self, coco: Any, image_size: int, label_offset: bool, hflip: bool = False, with_masks: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.coco = coco
        self.image_size = int(image_size)
        self.label_offset = label_offset  # True: labels are COCO category ids (official 91-way head)
        self.hflip = hflip
        self.with_masks = with_masks
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.coco) * (2 if self.hflip else 1)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        n = len(self.coco)
        item = self.coco[index % n]
        flip = self.hflip and index >= n
        image = item["image"]
        h, w = image.shape[-2:]
        boxes = item["boxes"].clone()
        masks = item.get("masks")
        if flip:
            image = image.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
            masks = masks.flip(-1) if masks is not None else None
        boxed, (sy, sx) = letterbox_scaled(image, self.image_size, self.mean, self.std)
        s = self.image_size
        boxes = boxes * boxes.new_tensor([sx, sy, sx, sy]) / s
        labels = item["category_ids"] if self.label_offset else item["labels"]
        target: dict[str, Any] = {"labels": labels.long(), "boxes": box_xyxy_to_cxcywh(boxes).clamp(0, 1),
                                  "image_id": item["image_id"], "orig_size": (int(h), int(w)), "scale": (sy, sx)}
        if self.with_masks and masks is not None:
            target["masks"] = letterbox_masks(masks, s)
        return boxed, target


def collate(items: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, list[dict[str, Any]]]:
    """Same-size letterboxed images stacked (B, 3, S, S); targets as a list."""
    return torch.stack([im for im, _ in items]), [t for _, t in items]


def _procedural(workdir: Path, config: ViDTTrainConfig, seed: int) -> Path:
    """Generate (or reuse, when its meta.json matches) procedural shapes scenes in COCO format."""
    from zoo.data.shapes import GENERATOR_VERSION, generate_shapes_dataset

    root = workdir / "data"
    splits = {"train": config.train_images, "val": config.val_images}
    meta = root / "meta.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if (info.get("version"), info.get("seed"), info.get("image_size"), info.get("splits"), info.get("min_objects"),
                info.get("max_objects")) == (GENERATOR_VERSION, seed, config.scene_size, splits, config.min_objects,
                                             config.max_objects):
            return root
    generate_shapes_dataset(root, splits=splits, seed=seed, image_size=config.scene_size,
                            min_objects=config.min_objects, max_objects=config.max_objects)
    return root


def _coco_split(root: Path, split: str, with_masks: bool) -> Any:
    from zoo.data.coco import CocoDetection

    ann = root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise FileNotFoundError(f"{ann} is missing: a COCO folder needs images/ and annotations/instances_{{train,val}}.json")
    return CocoDetection(root / "images", ann, with_masks=with_masks)


def label_mode(coco: Any, num_classes: int) -> bool:
    """True when labels are COCO category ids (they all fit the head), False for contiguous indices.

    Raises ValueError when the dataset's categories fit neither way."""
    ids = [c["id"] for c in coco.categories]
    if ids and max(ids) < num_classes and len(ids) < num_classes:
        return True
    if len(ids) <= num_classes:
        return False
    raise ValueError(f"the dataset has {len(ids)} categories but the model predicts {num_classes} classes; "
                     f"choose a variant with enough classes")


# ---------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_coco(model: nn.Module, dataset: ViDTDataset, batch_size: int = 8, max_detections: int = 100) -> dict[str, float]:
    """COCO box AP (and mask AP when the model predicts UQR vectors) of `model` on `dataset` (no flips)."""
    from zoo.metrics.coco import coco_ap, detections_to_coco

    was_training = model.training
    model.eval()
    config = model.config
    device = next(model.parameters()).device
    coco = dataset.coco
    label_to_cat = {i: c["id"] for i, c in enumerate(coco.categories)}
    with_masks = bool(getattr(config, "uqr", False))
    preds: list[dict[str, Any]] = []
    n = len(coco)
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        images = torch.stack([im for im, _ in items]).to(device)
        out = model(images, None)
        for b, (_, target) in enumerate(items):
            h, w = target["orig_size"]
            det = postprocess_image(out["pred_logits"][b].cpu(), out["pred_boxes"][b].cpu(), input_size=dataset.image_size,
                                    scale=target["scale"], height=h, width=w, max_detections=max_detections,
                                    vectors=out["pred_vectors"][b].cpu() if with_masks else None,
                                    mask_size=int(getattr(config, "mask_size", 128)))
            labels = det["labels"].tolist()
            keep = [i for i, lab in enumerate(labels) if dataset.label_offset or lab in label_to_cat]
            cats = [lab if dataset.label_offset else label_to_cat[lab] for lab in (labels[i] for i in keep)]
            masks = det["masks"][keep].numpy() if with_masks else None
            preds += detections_to_coco(target["image_id"], det["boxes"][keep].numpy(), det["scores"][keep].numpy(),
                                        cats, masks)
    model.train(was_training)
    gt = coco.coco
    metrics = {f"box_{k}": v for k, v in coco_ap(preds, gt, "bbox").items() if k in ("AP", "AP50", "AP75")}
    if with_masks:
        metrics.update({f"mask_{k}": v for k, v in coco_ap(preds, gt, "segm").items() if k in ("AP", "AP50", "AP75")})
    return metrics


def evaluation_set(root: Path, model_config: Any, label_offset: bool | None = None, split: str = "val") -> ViDTDataset:
    """A COCO folder's `split` as `evaluate_coco` reads it (no flips; mask AP reads the annotations' masks).
    `label_offset` None: decided from the split's categories (`label_mode`)."""
    coco = _coco_split(Path(root), split, False)
    offset = label_mode(coco, int(model_config.num_classes)) if label_offset is None else label_offset
    return ViDTDataset(coco, int(model_config.image_size), offset, hflip=False, with_masks=False,
                       mean=tuple(getattr(model_config, "pixel_mean", IMAGENET_MEAN)),
                       std=tuple(getattr(model_config, "pixel_std", IMAGENET_STD)))


# ---------------------------------------------------------------------------- the task


def build_task(model: nn.Module, data: str, config: ViDTTrainConfig, seed: int, workdir: Path) -> TrainTask:
    """ViDT / ViDT+ detection training on COCO instances ("synthetic": procedural shapes scenes)."""
    workdir = Path(workdir)
    mc = model.config
    root = _procedural(workdir, config, seed) if data == "synthetic" else Path(data)
    with_masks = bool(getattr(mc, "uqr", False) or getattr(mc, "token_label", False))
    train_coco = _coco_split(root, "train", with_masks)
    offset = label_mode(train_coco, int(mc.num_classes))
    mean = tuple(getattr(mc, "pixel_mean", IMAGENET_MEAN))
    std = tuple(getattr(mc, "pixel_std", IMAGENET_STD))
    dataset = ViDTDataset(train_coco, int(mc.image_size), offset, hflip=config.hflip, with_masks=with_masks, mean=mean, std=std)
    val_set = None
    if (root / "annotations" / "instances_val.json").is_file():
        val_set = evaluation_set(root, mc, offset) or None
    module = ViDTTrainable(model, ViDTCriterion(mc))

    def evaluate(module: nn.Module) -> dict[str, float]:
        if val_set is None:
            return {}
        return evaluate_coco(module.model, val_set, config.eval_batch_size, config.eval_max_detections)

    return TrainTask(module=module, dataset=dataset, config=config, collate_fn=collate,
                     parameters=lambda m: param_groups(m, config), evaluate=evaluate,
                     to_pipeline=lambda m: m.model,
                     extra={"data": str(root), "validation": val_set, "labels": "category ids" if offset else "contiguous"})
