"""ViDT / ViDT+ training objective (official `methods/vidt/criterion.py` `SetCriterion`, weights from
`arguments.py` and `detector.py` `build()`).

ViDT (arXiv 2110.03921, Sec. 3.3 and Appendix "training"): Hungarian matching (DETR Sec. 3.1) with
costs class 2 (Deformable DETR's focal cost), L1 5, GIoU 2; then on the matched pairs
- `loss_ce`: sigmoid focal loss (alpha 0.25, gamma 2) over all queries x classes, weight 2;
- `loss_bbox`: L1 on normalised cxcywh boxes, weight 5;
- `loss_giou`: 1 - GIoU, weight 2;
each divided by the number of target boxes in the batch (averaged over processes), and repeated
with its own matching for every auxiliary prediction (the backbone's [DET] output and all decoder
layers but the last), named `loss_ce_0`, `loss_bbox_0`, ... as the official weight dict does.

ViDT+ (arXiv 2204.07962; cited by module name: UQR, IoU-aware loss, token-labeling loss) adds, as
the official criterion:
- `loss_vector` (UQR): L1 between the predicted DCT vector and the zig-zag DCT of the matched GT
  mask cropped to its GT box (128 x 128), *mean*-reduced and scaled by `vector_loss_coef` 3.0
  inside the term (weight-dict weight 1), also on every auxiliary prediction;
- `loss_iouaware` (IoU-aware loss, Wu et al. 2020): BCE between the IoU logit and the IoU of the
  matched predicted box with its target, summed / num_boxes, weight 2, also on every aux output.
  As in the official code the IoU target is not detached (its gradient reaches the boxes);
- `loss_token_focal` / `loss_token_dice` (token labeling, Jiang et al. 2021): per-token class
  targets from the GT masks (each pixel's class, the first instance winning overlaps, channel 0
  turned into "any object"), average-pooled to each level of [PATCH] tokens; sigmoid focal
  *averaged over the level's tokens* then summed over images and classes (the official
  `sigmoid_focal_loss(...)` `.mean(1).sum() / num_boxes`, without the x Q that `loss_ce` gets) plus
  dice (per image, over all tokens and classes), each summed over levels / num_boxes, weight 2 each.

Channel 0 as "foreground": the official token head has COCO's 91 outputs where id 0 is unused, and
flips channel 0 from background to foreground. With contiguous labels (our `micro`, where label 0
is a real class) we do the same, so channel 0 reads "any object" (class-0 pixels included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.nn.box_ops import box_cxcywh_to_xyxy, elementwise_box_iou, elementwise_generalized_box_iou
from zoo.nn.losses import dice_loss, sigmoid_focal_loss
from zoo.nn.matcher import HungarianMatcher, matched_permutation

from . import dct

# arguments.py defaults: set_cost_*, *_loss_coef, iouaware_loss_coef, token_loss_coef, vector_loss_coef;
# detector.py build(): weight_dict["loss_vector"] = 1 (the 3.0 is applied inside the term).
DEFAULT_WEIGHTS = {
    "loss_ce": 2.0,
    "loss_bbox": 5.0,
    "loss_giou": 2.0,
    "loss_iouaware": 2.0,
    "loss_vector": 1.0,
    "loss_token_focal": 2.0,
    "loss_token_dice": 2.0,
}
PER_PREDICTION = ("loss_ce", "loss_bbox", "loss_giou", "loss_iouaware", "loss_vector")


def _num_boxes(targets: Sequence[dict[str, Tensor]], device: torch.device) -> float:
    """Target boxes in the batch, averaged over processes and at least 1 (official `forward`)."""
    count = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        count = count / torch.distributed.get_world_size()
    return max(float(count.item()), 1.0)


def token_label_targets(targets: Sequence[dict[str, Tensor]], num_channels: int) -> Tensor:
    """Per-pixel class targets `(B, C, H, W)` float for token labeling (official `loss_tokens`).

    Instance masks are made disjoint in order (an earlier instance keeps a contested pixel), each
    pixel is one-hot on its instance's label, and channel 0 becomes 1 - background.
    Masks of different sizes are zero-padded bottom/right to the largest.
    """
    h = max(int(t["masks"].shape[-2]) for t in targets)
    w = max(int(t["masks"].shape[-1]) for t in targets)
    device = targets[0]["masks"].device
    out = torch.zeros(len(targets), num_channels, h, w, device=device)
    for b, t in enumerate(targets):
        masks, labels = t["masks"].bool(), t["labels"].long()
        if labels.numel() and int(labels.max()) >= num_channels:
            raise ValueError(f"label {int(labels.max())} does not fit {num_channels} token classes")
        taken = torch.zeros(h, w, dtype=torch.bool, device=device)
        for j in range(masks.shape[0]):
            m = F.pad(masks[j], (0, w - masks.shape[-1], 0, h - masks.shape[-2])) & ~taken
            out[b, labels[j]] += m.float()
            taken |= m
        out[b, 0] = taken.float()  # the official flip of the background channel into foreground
    return out


def token_levels(enc_tokens: dict[str, Any]) -> list[Tensor]:
    """The token-label logits as a list of `(B, h, w, C)` levels (the official `enc_token_class_unflat`).

    Accepts that list itself, or one `(B, N, C)` tensor with `spatial_shapes` `(L, 2)` (h, w per level).
    """
    logits = enc_tokens["pred_logits"]
    if isinstance(logits, (list, tuple)):
        return list(logits)
    shapes = enc_tokens["spatial_shapes"]
    levels, start = [], 0
    for h, w in (tuple(int(v) for v in s) for s in shapes):
        levels.append(logits[:, start : start + h * w].reshape(logits.shape[0], h, w, logits.shape[-1]))
        start += h * w
    return levels


class ViDTCriterion(nn.Module):
    """ViDT / ViDT+ set loss. `forward(outputs, targets) -> dict` with the weighted total `"loss"`,
    every term (main prediction unsuffixed, auxiliary ones `_0`, `_1`, ...) and `class_error`
    (top-1 error in % on the matched main-layer queries, logged only).

    `config` needs `num_classes`; ViDT+ switches are read from `uqr`, `iou_aware`, `token_label`
    (with `vector_dim`, `mask_size`). `targets`: list of dicts with `labels` (T,) int64, `boxes`
    (T, 4) normalised cxcywh and, for UQR / token labeling, `masks` (T, H, W) bool in the frame the
    boxes are normalised to (optional `xyxy_boxes` in mask pixels; else derived from `boxes`).
    """

    def __init__(self, config: Any, *, weights: dict[str, float] | None = None, focal_alpha: float = 0.25,
                 vector_loss_coef: float = 3.0, matcher: HungarianMatcher | None = None):
        super().__init__()
        self.num_classes = int(config.num_classes)
        self.uqr = bool(getattr(config, "uqr", False))
        self.iou_aware = bool(getattr(config, "iou_aware", False))
        self.token_label = bool(getattr(config, "token_label", False))
        self.vector_dim = int(getattr(config, "vector_dim", 256))
        self.mask_size = int(getattr(config, "mask_size", 128))
        self.focal_alpha = focal_alpha
        self.vector_loss_coef = vector_loss_coef
        # Matching costs class 2 / L1 5 / GIoU 2 (arguments.py set_cost_*), Deformable DETR's focal cost.
        self.matcher = matcher or HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, focal=True,
                                                   alpha=focal_alpha, gamma=2.0)
        self.weights = dict(DEFAULT_WEIGHTS)
        self.weights.update(weights or {})

    # ------------------------------------------------------------------ per-prediction terms
    def loss_labels(self, outputs: dict[str, Tensor], targets: Sequence[dict[str, Tensor]], indices, num_boxes: float) -> Tensor:
        """Sigmoid focal loss (Lin et al. 2017, Eq. 5) on one-hot targets; unmatched queries are all-negative."""
        logits = outputs["pred_logits"]
        onehot = torch.zeros_like(logits)
        batch_idx, src_idx = matched_permutation(indices)
        labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        onehot[batch_idx, src_idx, labels] = 1.0
        return sigmoid_focal_loss(logits, onehot, num_boxes, alpha=self.focal_alpha, gamma=2.0)

    def loss_boxes(self, outputs: dict[str, Tensor], targets: Sequence[dict[str, Tensor]], indices, num_boxes: float) -> tuple[Tensor, Tensor]:
        """(L1, 1 - GIoU) of matched normalised cxcywh boxes, each summed / num_boxes."""
        batch_idx, src_idx = matched_permutation(indices)
        src = outputs["pred_boxes"][batch_idx, src_idx]
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src)
        l1 = F.l1_loss(src, tgt, reduction="none").sum() / num_boxes
        giou = (1 - elementwise_generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))).sum() / num_boxes
        return l1, giou

    def loss_iouaware(self, outputs: dict[str, Tensor], targets: Sequence[dict[str, Tensor]], indices, num_boxes: float) -> Tensor:
        """BCE(IoU logit, IoU(matched predicted box, its target box)) summed / num_boxes (official `loss_iouaware`)."""
        batch_idx, src_idx = matched_permutation(indices)
        logits = outputs["pred_ious"][batch_idx, src_idx].reshape(-1)
        src = outputs["pred_boxes"][batch_idx, src_idx]
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src)
        iou = elementwise_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))[0]
        return F.binary_cross_entropy_with_logits(logits, iou, reduction="none").sum() / num_boxes

    def loss_vector(self, outputs: dict[str, Tensor], target_vectors: list[Tensor], indices) -> Tensor:
        """coef x mean |v_pred - v_gt| over the matched queries (official `loss_masks`, no_vector_loss_norm off)."""
        batch_idx, src_idx = matched_permutation(indices)
        src = outputs["pred_vectors"][batch_idx, src_idx]
        if src.shape[0] == 0:
            return outputs["pred_vectors"].sum() * 0.0
        tgt = torch.cat([v[j.to(v.device)] for v, (_, j) in zip(target_vectors, indices)]).to(src)
        return self.vector_loss_coef * F.l1_loss(src, tgt, reduction="mean")

    # ------------------------------------------------------------------ targets computed once
    def target_vectors(self, targets: Sequence[dict[str, Tensor]]) -> list[Tensor]:
        """Per image `(T, vector_dim)`: each GT mask cropped to its GT box, resized to mask_size, DCT-encoded."""
        out = []
        for t in targets:
            masks = t["masks"]
            if "xyxy_boxes" in t:
                boxes = t["xyxy_boxes"].float()
            else:
                h, w = masks.shape[-2:]
                scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=t["boxes"].device)
                boxes = box_cxcywh_to_xyxy(t["boxes"].float()) * scale
            crops = dct.crop_and_resize(masks, boxes, self.mask_size)
            out.append(dct.encode(crops, self.vector_dim, self.mask_size))
        return out

    def loss_tokens(self, enc_tokens: dict[str, Any], targets: Sequence[dict[str, Tensor]], num_boxes: float) -> tuple[Tensor, Tensor]:
        """Token labeling (official `loss_tokens`): focal + dice on average-pooled per-pixel class targets, summed over levels."""
        levels = token_levels(enc_tokens)
        full = token_label_targets(targets, levels[0].shape[-1]).to(levels[0])
        focal = levels[0].new_zeros(())
        dice = levels[0].new_zeros(())
        for logits in levels:
            _, h, w, _ = logits.shape
            soft = F.adaptive_avg_pool2d(full, (h, w)).permute(0, 2, 3, 1).flatten(1, 2)  # (B, hw, C)
            flat = logits.flatten(1, 2)
            # mean over the h*w tokens (mean_dim=1), as the official call: no x Q / x h*w here.
            focal = focal + sigmoid_focal_loss(flat, soft, num_boxes, alpha=self.focal_alpha, gamma=2.0, mean_dim=1)
            dice = dice + dice_loss(flat, soft, num_boxes)
        return focal, dice

    # ------------------------------------------------------------------ all together
    def _prediction_losses(self, outputs: dict[str, Tensor], targets, num_boxes: float,
                           vectors: list[Tensor] | None) -> tuple[dict[str, Tensor], list]:
        indices = self.matcher(outputs, targets)
        losses = {"loss_ce": self.loss_labels(outputs, targets, indices, num_boxes)}
        losses["loss_bbox"], losses["loss_giou"] = self.loss_boxes(outputs, targets, indices, num_boxes)
        if self.iou_aware:
            losses["loss_iouaware"] = self.loss_iouaware(outputs, targets, indices, num_boxes)
        if vectors is not None:
            losses["loss_vector"] = self.loss_vector(outputs, vectors, indices)
        return losses, indices

    def forward(self, outputs: dict[str, Any], targets: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        device = outputs["pred_logits"].device
        targets = [{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in targets]
        num_boxes = _num_boxes(targets, device)
        vectors = self.target_vectors(targets) if self.uqr else None
        main = {k: v for k, v in outputs.items() if k not in ("aux_outputs", "enc_tokens")}
        losses, indices = self._prediction_losses(main, targets, num_boxes, vectors)
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            aux_losses, _ = self._prediction_losses(aux, targets, num_boxes, vectors)
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        if self.token_label:
            losses["loss_token_focal"], losses["loss_token_dice"] = self.loss_tokens(outputs["enc_tokens"], targets, num_boxes)
        total = sum(self.weight(k) * v for k, v in losses.items())
        losses["loss"] = total
        losses["class_error"] = self._class_error(main, targets, indices)
        return losses

    def weight(self, name: str) -> float:
        """The weight of a term; `loss_ce_3` has the weight of `loss_ce`."""
        if name in self.weights:
            return self.weights[name]
        base, _, suffix = name.rpartition("_")
        if suffix.isdigit() and base in self.weights:
            return self.weights[base]
        raise KeyError(f"no weight for loss term {name!r}")

    @torch.no_grad()
    def _class_error(self, outputs: dict[str, Tensor], targets, indices) -> Tensor:
        """100 - top-1 accuracy (%) of the matched queries' class logits (official `class_error`, logging only)."""
        batch_idx, src_idx = matched_permutation(indices)
        labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(outputs["pred_logits"].device)
        if labels.numel() == 0:
            return outputs["pred_logits"].new_tensor(100.0)
        pred = outputs["pred_logits"][batch_idx, src_idx].argmax(-1)
        return 100.0 - 100.0 * (pred == labels).float().mean()
