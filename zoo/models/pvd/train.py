"""PVD training for the shared loop in `training/`: `PVDTrainConfig` and `PVDTrainable`.

One step (paper: boxes and masks trained by one diffusion model that differs only in the number
of vertices; CAM; ASL): encode image + expression, predict the centre (centre loss), then for the
box (2 corners) and the polygon (N vertices) each: signal x0 through CAM (`to_signal`, anchored at
the ground-truth centre jittered by `anchor_jitter`, so the denoiser learns to place vertices from
an imperfect centre, as it must at inference from the predicted one), a timestep, x_t, the
denoiser's x0 (diffusion loss, L1), and for the polygon the Angle Summation Loss on the predicted
polygon. Total = box + polygon diffusion + centre_weight * CE + centre_l1_weight * L1 + asl_weight * ASL.

Defaults (our choice; the paper's schedule could not be verified): AdamW lr 1e-4, weight decay
1e-4, batch 64, grad clip 0.1 (DETR-family grounding models, e.g. TransVG/SeqTR); text and visual
encoders at lr x 0.1 are not separated here (random init on procedural data).

Data: `zoo train pvd --data synthetic` renders the procedural referring data (zoo.data.referring)
to `workdir/data` in RefCOCO-style JSON and reads it back with the RefCOCO reader; `--data DIR`
reads the user's RefCOCO-style folder (DIR/images, DIR/refcoco/refs.json, DIR/refcoco/instances.json;
splits "train" and "val").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.trainable import TrainConfig, TrainTask

from .loss import angle_summation_loss, centre_loss, diffusion_loss, sample_points
from .model import BOX_VERTICES, PVDModel, from_signal, to_signal
from .pipeline import normalise
from .tokenizer import encode


@dataclass
class PVDTrainConfig(TrainConfig):
    steps: int = 60_000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    grad_clip: float = 0.1
    asl_weight: float = 1.0  # the Angle Summation Loss; 0 turns it off (ablation)
    asl_points: int = 64  # sample points per polygon
    centre_weight: float = 1.0  # centre cross-entropy
    centre_l1_weight: float = 5.0  # centre soft-argmax L1
    anchor_jitter: float = 0.02  # std of the noise on the GT anchor during training (image fraction)
    train_images: int = 2000  # procedural training scenes
    val_images: int = 100  # procedural held-out scenes (finalize's metrics)
    twin_rate: float = 0.5
    eval_steps: int = 0  # DDIM steps for finalize (0: the variant's sample_steps)
    data_seed: int = 0  # seed of the procedural data (its val split is the held-out set)


class PVDTrainable(nn.Module):
    """batch: image (B, 3, S, S) in [0, 1], sentence [str], box (B, 4) xyxy pixels, polygon (B, N, 2) pixels."""

    model: Any

    def __init__(self, model: PVDModel, config: PVDTrainConfig):
        super().__init__()
        self.model = model
        self.config = config

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg, mc = self.config, self.model.config
        images = batch["image"].float()
        device = images.device
        tokens = encode(list(batch["sentence"]), mc.vocab, mc.max_tokens).to(device)
        memory, valid, centre, logits = self.model.encode(normalise(images), tokens)
        size = float(mc.image_size)
        box = batch["box"].float().to(device) / size
        polygon = batch["polygon"].float().to(device) / size
        gt_centre = (box[:, :2] + box[:, 2:]) / 2
        ce, l1 = centre_loss(logits, centre, gt_centre, mc.grid)
        anchor = gt_centre + torch.randn_like(gt_centre) * cfg.anchor_jitter
        b = images.shape[0]
        ab_all = self.model.alphas_cumprod.to(device)
        out: dict[str, torch.Tensor] = {"centre_ce": ce, "centre_l1": l1}
        total = cfg.centre_weight * ce + cfg.centre_l1_weight * l1
        for name, vertices in (("box", box.reshape(b, BOX_VERTICES, 2)), ("polygon", polygon)):
            x0 = to_signal(vertices, anchor, mc)
            t = torch.randint(0, mc.timesteps, (b,), device=device)
            ab = ab_all[t][:, None, None]
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0)
            pred = self.model.denoiser(memory, valid, anchor, x_t, t.float(), self.model.slots(b, name == "polygon", device))
            loss = diffusion_loss(pred, x0)
            out[f"diffusion_{name}"] = loss
            total = total + loss
            if name == "polygon":
                points = sample_points(polygon, box, cfg.asl_points)
                asl = angle_summation_loss(from_signal(pred, anchor, mc), polygon, points)
                out["asl"] = asl
                total = total + cfg.asl_weight * asl
        out["loss"] = total
        return out


def referring_sets(data: str, image_size: int, vertices: int, config: PVDTrainConfig, workdir: Any) -> tuple[Any, Any, str]:
    """(train, val, description): procedural data rendered under workdir, or the user's folder."""
    from zoo.data.referring import ReferringDataset, generate_referring_dataset

    if data == "synthetic":
        root = Path(workdir) / "data"
        meta = root / "meta.json"
        want = {"train": config.train_images, "val": config.val_images}
        import json

        if not meta.is_file() or json.loads(meta.read_text()).get("splits") != want or json.loads(meta.read_text()).get("image_size") != image_size \
                or json.loads(meta.read_text()).get("seed") != config.data_seed:
            generate_referring_dataset(root, want, seed=config.data_seed, image_size=image_size, twin_rate=config.twin_rate)
        description = (f"procedural referring expressions (zoo.data.referring, seed {config.data_seed}, "
                       f"{config.train_images} train / {config.val_images} val scenes, {image_size}x{image_size}, twin rate {config.twin_rate})")
    else:
        root = Path(data)
        description = f"{data} (RefCOCO-style: images/, refcoco/refs.json, refcoco/instances.json)"
    train = ReferringDataset(root, "train", image_size, vertices)
    val = ReferringDataset(root, "val", image_size, vertices)
    if not len(train):
        raise ValueError(f"{root}: no 'train' refs")
    return train, val, description


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"image": torch.stack([i["image"] for i in items]), "sentence": [i["sentence"] for i in items],
            "box": torch.stack([i["box"] for i in items]), "polygon": torch.stack([i["polygon"] for i in items]),
            "mask": torch.stack([i["mask"] for i in items]), "needs_relation": torch.tensor([bool(i.get("needs_relation")) for i in items])}


@torch.no_grad()
def evaluate(model: PVDModel, dataset: Any, steps: int, seed: int = 0, batch_size: int = 32, limit: int | None = None) -> dict[str, float]:
    """Acc@0.5, mean box IoU, mIoU and oIoU (polygon masks) on a ReferringDataset, plus Acc@0.5 on the
    expressions that need a relation; `steps` DDIM steps; the model's own modules (no export)."""
    from zoo.data.referring import polygon_to_mask
    from zoo.metrics.grounding import box_iou_pairs, grounding_metrics

    from .pipeline import PVDPipeline

    pipe = PVDPipeline(model, model.config)
    pipe.eval()
    count = len(dataset) if limit is None else min(limit, len(dataset))
    size = model.config.image_size
    pred_boxes, gt_boxes, pred_masks, gt_masks, relation = [], [], [], [], []
    for start in range(0, count, batch_size):
        batch = collate([dataset[i] for i in range(start, min(count, start + batch_size))])
        tokens = encode(batch["sentence"], model.config.vocab, model.config.max_tokens)
        out = pipe.ground(normalise(batch["image"]), tokens, steps, seed)
        pred_boxes.append(out["box"].numpy() * size)
        gt_boxes.append(batch["box"].numpy())
        for poly, mask in zip(out["polygon"].numpy() * size, batch["mask"].numpy()):
            pred_masks.append(polygon_to_mask(poly, size, size))
            gt_masks.append(mask)
        relation.append(batch["needs_relation"].numpy())
    pb, gb, rel = np.concatenate(pred_boxes), np.concatenate(gt_boxes), np.concatenate(relation)
    metrics = grounding_metrics(pb, gb, pred_masks, gt_masks)
    if rel.any():
        metrics["acc@0.5_relation"] = float((box_iou_pairs(pb[rel], gb[rel]) >= 0.5).mean())
    metrics["expressions"] = float(count)
    return metrics


def build_task(model: PVDModel, data: str, config: PVDTrainConfig, seed: int, workdir: Any) -> TrainTask:
    """`zoo train pvd`: RefCOCO-style data (procedural or the user's) -> PVD; finalize scores the
    held-out split (Acc@0.5, mIoU, oIoU)."""
    mc = model.config
    train, val, description = referring_sets(data, mc.image_size, mc.polygon_vertices, config, workdir)

    def finalize(module: Any) -> dict[str, float]:
        module.eval()
        return evaluate(module.model, val, config.eval_steps or mc.sample_steps)

    return TrainTask(module=PVDTrainable(model, config), dataset=train, config=config, collate_fn=collate, finalize=finalize,
                     to_pipeline=lambda m: m.get_submodule("model"), extra={"data": description})
