"""SeaBird's two training stages for the shared loop (official `scripts_training.sh`,
`experiments/pbev_seabird_kitti360_val_stage1.ini` and `..._val.ini`).

- `segmentation` (stage 1): the BEV segmentation head alone, dice loss x 35 (sigmoid foreground
  classes, official `use_dice_loss = 1`), SGD lr 0.005.
- `detection` (stage 2): from the stage-1 weights (`zoo train seabird --stage detection --weights
  RUN/model.safetensors`, official `init_segmentor`), dice x 35 plus the six CenterNet / BBAVectors
  terms x 7 each (heatmap focal, offset, wh, h3d, y3d smooth-L1, cls_theta BCE), SGD lr 0.0025.
Both: SGD momentum 0.9 (official also Nesterov; the shared loop's SGD has none), weight decay
1e-4, 20 epochs with the lr scaled at epochs 10 and 15 (official multigamma 0.5, 0.2; the loop's
step schedule gives 0.5, 0.25), batch 2, gradient clipping (norm 10, our value: the config says
only `clip_gradient = true`).

`seg_loss` switches the segmentation objective for the ablation: "dice" (SeaBird), "l1"
(regression-trained segmentation) or "none" (no segmentation: the detector sees zeros instead
of the occupancy, official SeaBird's baseline without the head). The transformer's auxiliary
vertical/flat losses of PanopticBEV (vf 1, region 10) need front-view semantic labels; they are
not used here (our procedural data has them only as vertical / flat, and the claim under test is
the dice head's).

Data: a KITTI-format folder (zoo.data.kitti: SPLIT/image_2, label_2, calib, bev_2) or "synthetic":
procedural scenes (zoo.data.scenes3d) written in that format under WORKDIR/data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.data.kitti import KittiDataset, KittiObject, camera_from_p2
from zoo.data.scenes3d import LARGE_TYPES
from zoo.trainable import TrainConfig, TrainTask

from .loss import DET_TERMS, DET_WEIGHT, SEM_WEIGHT, detection_losses, dice_loss, l1_seg_loss
from .model import SeaBird, SeaBirdConfig, clip_sigmoid, split_heads

KITTI360_EPOCH = 24_000 // 2  # KITTI-360 train_det frames / batch 2 (order of magnitude: for the step defaults)


@dataclass
class SeaBirdTrainConfig(TrainConfig):
    steps: int = 20 * KITTI360_EPOCH
    batch_size: int = 2
    lr: float = 0.005
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.5
    grad_clip: float = 10.0
    ckpt_every: int = 2000
    stage: str = "segmentation"  # segmentation | detection
    seg_loss: str = "dice"  # dice | l1 | none
    sem_weight: float = SEM_WEIGHT
    det_weight: float = DET_WEIGHT
    max_objects: int = 64
    train_scenes: int = 512
    val_scenes: int = 100
    eval_batch_size: int = 8
    eval_score_threshold: float = 0.05

    def __post_init__(self) -> None:
        if self.stage not in ("segmentation", "detection"):
            raise ValueError(f"stage must be segmentation or detection, got {self.stage!r}")
        if self.seg_loss not in ("dice", "l1", "none"):
            raise ValueError(f"seg_loss must be dice, l1 or none, got {self.seg_loss!r}")


@dataclass
class SeaBirdDetectionConfig(SeaBirdTrainConfig):
    """Stage 2 defaults (official val.ini: base_lr 0.0025, det_* weights 7)."""

    lr: float = 0.0025
    stage: str = "detection"


# ---------------------------------------------------------------------------- targets


def class_index(kind: str, class_names: tuple[str, ...]) -> int:
    """A KITTI type -> a class of the model (-1: not one of them); "Large" gathers bus/truck/trailer/building."""
    if kind in class_names:
        return class_names.index(kind)
    if "Large" in class_names and kind in LARGE_TYPES:
        return class_names.index("Large")
    return -1


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius (its `gaussian_radius`, the smallest of the three overlap cases)."""
    a1, b1, c1 = 1, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def bba_vectors(length: float, width: float, ry: float) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """BBAVectors of a BEV rectangle in grid cells (columns x right, rows z down the map):
    (tt, rr) edge-midpoint vectors (bb = -tt, ll = -rr), external (w, h) and cls_theta.
    tt: the half-extent vector pointing most upwards; rr: the other one pointing right.
    cls_theta = 1 (rotated: decode from the vectors) when the box fills < 95 % of its axis-aligned hull."""
    a = np.array([math.cos(ry), math.sin(ry)]) * length / 2
    b = np.array([-math.sin(ry), math.cos(ry)]) * width / 2
    cand = [a, -a, b, -b]
    tt = min(cand, key=lambda v: (v[1], -v[0]))
    rest = [v for v in cand if not (np.allclose(v, tt) or np.allclose(v, -tt))]
    rr = max(rest, key=lambda v: v[0]) if rest else np.array([width / 2, 0.0])
    ext_w = 2 * (abs(a[0]) + abs(b[0]))
    ext_h = 2 * (abs(a[1]) + abs(b[1]))
    ratio = length * width / max(ext_w * ext_h, 1e-9)
    return tt, rr, ext_w, ext_h, float(ratio < 0.95)


def encode_targets(objects: list[KittiObject], config: SeaBirdConfig, max_objects: int = 64) -> dict[str, Tensor]:
    """KITTI objects -> CenterNet / BBAVectors targets on the L_det grid (rows z far -> near, cols x left -> right)."""
    rows, cols = int(config.bev_size[0] / config.tfm_scales[0]), int(config.bev_size[1] / config.tfm_scales[0])
    cell = config.det_cell
    x0, x1, z0, z1 = config.bev_extent
    hm = np.zeros((config.num_classes, rows, cols), np.float32)
    t: dict[str, np.ndarray] = {"ind": np.zeros(max_objects, np.int64), "mask": np.zeros(max_objects, np.float32), "reg": np.zeros((max_objects, 2), np.float32),
         "wh": np.zeros((max_objects, 10), np.float32), "cls_theta": np.zeros((max_objects, 1), np.float32),
         "h3d": np.zeros((max_objects, 1), np.float32), "y3d": np.zeros((max_objects, 1), np.float32)}
    k = 0
    yy, xx = np.mgrid[0:rows, 0:cols]
    for obj in objects:
        c = class_index(obj.type, config.class_names)
        x, y, z = obj.location
        if c < 0 or not (x0 <= x < x1 and z0 <= z < z1) or k >= max_objects:
            continue
        h3, w3, l3 = obj.dimensions
        col, row = (x - x0) / cell, (z1 - z) / cell
        ci, ri = min(int(col), cols - 1), min(int(row), rows - 1)
        tt, rr, ew, eh, rot = bba_vectors(l3 / cell, w3 / cell, obj.rotation_y)
        radius = max(0, int(gaussian_radius(eh, ew)))
        sigma = (2 * radius + 1) / 6
        g = np.exp(-((xx - ci) ** 2 + (yy - ri) ** 2) / (2 * sigma * sigma))
        g[np.abs(xx - ci) > radius] = 0
        g[np.abs(yy - ri) > radius] = 0
        hm[c] = np.maximum(hm[c], g)
        hm[c, ri, ci] = 1.0
        t["ind"][k] = ri * cols + ci
        t["mask"][k] = 1
        t["reg"][k] = (col - ci, row - ri)
        t["wh"][k] = (*tt, *rr, *(-tt), *(-rr), ew, eh)
        t["cls_theta"][k] = rot
        t["h3d"][k] = h3
        t["y3d"][k] = y
        k += 1
    out = {key: torch.from_numpy(v) for key, v in t.items()}
    out["hm"] = torch.from_numpy(hm)
    return out


# ---------------------------------------------------------------------------- data


class SeaBirdDataset(torch.utils.data.Dataset):
    """KITTI-format frames -> (image (3, H, W) normalised, camera (4,), BEV masks (C, Zb, Xb), det targets)."""

    def __init__(self, kitti: KittiDataset, config: SeaBirdConfig, max_objects: int = 64):
        self.kitti = kitti
        self.config = config
        self.max_objects = max_objects

    def __len__(self) -> int:
        return len(self.kitti)

    def __getitem__(self, i: int) -> dict[str, Any]:
        c = self.config
        item = self.kitti[i]
        image = torch.from_numpy(np.array(item["image"])).permute(2, 0, 1).float() / 255
        h0, w0 = image.shape[-2:]
        hh, ww = c.image_size
        image = F.interpolate(image[None], size=(hh, ww), mode="bilinear", align_corners=False, antialias=True)[0]
        image = (image - torch.tensor(c.pixel_mean).view(3, 1, 1)) / torch.tensor(c.pixel_std).view(3, 1, 1)
        fx, fy, cx, cy = camera_from_p2(item["P2"])
        camera = torch.tensor([fx * ww / w0, fy * hh / h0, cx * ww / w0, cy * hh / h0], dtype=torch.float32)
        objects = [o for o in item["objects"] if class_index(o.type, c.class_names) >= 0]
        return {"image": image, "camera": camera, "bev": torch.from_numpy(bev_map_classes(objects, c)),
                "targets": encode_targets(objects, c, self.max_objects),
                "boxes": np.stack([o.box7 for o in objects]) if objects else np.zeros((0, 7), np.float32),
                "labels": np.array([class_index(o.type, c.class_names) for o in objects], np.int64)}


def bev_map_classes(objects: list[KittiObject], config: SeaBirdConfig) -> np.ndarray:
    """(C, Zb, Xb) float masks of the model's classes on its full-resolution BEV grid."""
    from PIL import Image, ImageDraw

    from zoo.data.scenes3d import footprint

    x0, x1, z0, z1 = config.bev_extent
    rows, cols = config.bev_size
    res = config.bev_resolution
    out = np.zeros((config.num_classes, rows, cols), np.float32)
    for c in range(config.num_classes):
        canvas = Image.new("L", (cols, rows), 0)
        pen = ImageDraw.Draw(canvas)
        for obj in objects:
            if class_index(obj.type, config.class_names) == c:
                pen.polygon([((x - x0) / res, (z1 - z) / res) for x, z in footprint(obj.box7)], fill=1)
        out[c] = np.asarray(canvas, np.float32)
    return out


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: torch.stack([it[k] for it in items]) for k in ("image", "camera", "bev")}
    out["targets"] = {k: torch.stack([it["targets"][k] for it in items]) for k in items[0]["targets"]}
    out["boxes"] = [it["boxes"] for it in items]
    out["labels"] = [it["labels"] for it in items]
    return out


# ---------------------------------------------------------------------------- trainable


class SeaBirdTrainable(nn.Module):
    def __init__(self, model: SeaBird, config: SeaBirdTrainConfig):
        super().__init__()
        self.model = model
        self.config = config
        model.use_seg = config.seg_loss != "none"

    def training_step(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        c = self.config
        out = self.model.forward_all(batch["image"], batch["camera"])
        logits = out["bev_logits"]
        assert isinstance(logits, Tensor)
        full = F.interpolate(logits, size=batch["bev"].shape[-2:], mode="bilinear", align_corners=False)
        probs = clip_sigmoid(full)
        logs: dict[str, Tensor] = {}
        if c.seg_loss == "dice":
            sem = dice_loss(probs, batch["bev"])
        elif c.seg_loss == "l1":
            sem = l1_seg_loss(probs, batch["bev"])
        else:
            sem = logits.sum() * 0
        loss = c.sem_weight * sem
        logs["sem"] = sem.detach()
        if c.stage == "detection":
            heads = out["heads"]
            assert isinstance(heads, Tensor)
            terms = detection_losses(split_heads(heads, self.model.config), batch["targets"])
            for name in DET_TERMS:
                loss = loss + c.det_weight * terms[name]
                logs[f"det_{name}"] = terms[name].detach()
        logs["loss"] = loss
        return logs


@torch.no_grad()
def evaluate_model(model: SeaBird, dataset: SeaBirdDataset, batch_size: int = 8, score_threshold: float = 0.05) -> dict[str, float]:
    """AP3D / APBEV at 0.5 and 0.25 per class and BEV segmentation IoU per class on `dataset`."""
    from zoo.metrics.detection3d import bev_segmentation_iou, evaluate_detection

    from .pipeline import decode

    was = model.training
    model.eval()
    c = model.config
    preds, gts, seg_p, seg_g = [], [], [], []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])
        logits, heads = model(batch["image"], batch["camera"])
        full = F.interpolate(logits, size=batch["bev"].shape[-2:], mode="bilinear", align_corners=False)
        for b in range(len(batch["boxes"])):
            preds.append(decode(logits[b], heads[b], c, score_threshold, c.max_detections))
            gts.append((batch["boxes"][b], batch["labels"][b]))
            seg_p.append((full[b].sigmoid() > 0.5).numpy())
            seg_g.append(batch["bev"][b].numpy() > 0.5)
    model.train(was)
    metrics = evaluate_detection(preds, gts, c.class_names)
    for name, iou in zip(c.class_names, bev_segmentation_iou(seg_p, seg_g, c.num_classes)):
        metrics[f"segIoU/{name}"] = float(iou)
    return {k: round(float(v), 4) for k, v in metrics.items()}


def _procedural(workdir: Path, config: SeaBirdTrainConfig, model_config: SeaBirdConfig, seed: int) -> Path:
    from zoo.data.scenes3d import GENERATOR_VERSION, generate_scenes_dataset

    root = workdir / "data"
    splits = {"train": config.train_scenes, "val": config.val_scenes}
    hh, ww = model_config.image_size
    fx, fy, cx, cy = model_config.default_camera
    options = {"image_size": (hh, ww), "camera": (fx * ww, fy * hh, cx * ww, cy * hh), "camera_height": model_config.camera_height,
               "extent": tuple(model_config.bev_extent), "bev_resolution": model_config.bev_resolution}
    meta = root / "meta.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if (info.get("version"), info.get("seed"), info.get("splits")) == (GENERATOR_VERSION, seed, splits) and \
                info.get("options") == json.loads(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})):
            return root
    return generate_scenes_dataset(root, splits, seed, **options)


def build_task(model: nn.Module, data: str, config: SeaBirdTrainConfig, seed: int, workdir: Path) -> TrainTask:
    """Either stage (config.stage) on KITTI-format data ("synthetic": procedural scenes)."""
    assert isinstance(model, SeaBird)
    workdir = Path(workdir)
    root = _procedural(workdir, config, model.config, seed) if data == "synthetic" else Path(data)
    train = SeaBirdDataset(KittiDataset(root, "train"), model.config, config.max_objects)
    val = SeaBirdDataset(KittiDataset(root, "val"), model.config, config.max_objects) if (root / "val" / "label_2").is_dir() else None
    module = SeaBirdTrainable(model, config)

    def evaluate(m: nn.Module) -> dict[str, float]:
        if val is None or len(val) == 0:
            return {}
        return evaluate_model(cast(SeaBird, m.model), val, config.eval_batch_size, config.eval_score_threshold)

    return TrainTask(module=module, dataset=train, config=config, collate_fn=collate, evaluate=evaluate,
                     to_pipeline=lambda m: cast(nn.Module, m.model),
                     extra={"data": str(root), "ddp_find_unused_parameters": True, "validation": val})
