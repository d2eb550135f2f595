"""OneFormer's training objective (paper Sec. 3.3 and Sec. 4 "implementation details"; official
`modeling/criterion.py` `SetCriterion` and the weights in `oneformer_model.py` / the configs).

    L_final = b_contr L_{Q<->Q_text} + b_cls L_cls + b_bce L_bce + b_dice L_dice          (paper Eq. 4)

with b_contr = 0.5, b_cls = 2, b_bce = 5, b_dice = 5:

- Hungarian matching of the N queries to the task's targets (Mask2Former's matcher: softmax class
  cost, sigmoid BCE and dice costs on 12544 uniform points; `zoo.nn.matcher.HungarianMatcher`).
- L_cls: cross-entropy over K + 1 classes, unmatched queries labelled "no object" with weight 0.1
  (`empty_weight`); the official sums the weighted per-query losses and divides by the sum of the
  weights, which is `F.cross_entropy(..., weight=empty_weight)`'s weighted mean.
- L_bce, L_dice: Mask2Former's mask losses on 12544 importance-sampled points (oversample 3,
  importance 0.75), summed over matched masks and divided by the number of target masks in the
  batch (at least 1; averaged over ranks under DDP); `zoo.nn.losses.point_mask_losses`.
- Deep supervision: L_cls, L_bce and L_dice again, with their own matching, on each of the
  auxiliary predictions (the learnable-query prediction and the first L - 1 decoder layers);
  the contrastive term is computed on the final queries only.
- L_{Q<->Q_text}, the query-text contrastive loss (Sec. 3.3, "Task-Guided Contrastive Queries",
  Eqs. 1-3): the N object queries of an image and its N text queries are each flattened into
  one vector and L2-normalised; over the B images of the batch, logits = exp(s) q_i . t_j with the
  learnable temperature s (init log(1/0.07), exp clamped at 100), and the loss is the sum of the
  two cross-entropies (query -> text, Eq. 1, and text -> query, Eq. 2; Eq. 3 adds them) with the
  matching pair as the class. Under DDP the texts (resp. queries) of every rank are gathered
  (differentiably) as negatives, as the official `dist_collect`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.nn.losses import point_mask_losses
from zoo.nn.matcher import HungarianMatcher, matched_permutation

CONTRASTIVE_TEMPERATURE = 0.07
LOGIT_SCALE_INIT = math.log(1 / CONTRASTIVE_TEMPERATURE)


def _dist() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(x: Tensor) -> Tensor:
    """Concatenate `x` over ranks along dim 0, keeping the gradient (the official `dist_collect`)."""
    if _dist()[1] == 1:
        return x
    from torch.distributed._functional_collectives import all_gather_single_autograd

    return all_gather_single_autograd(x.contiguous(), gather_dim=0, group=torch.distributed.group.WORLD)


def contrastive_loss(queries: Tensor, texts: Tensor, logit_scale: Tensor) -> Tensor:
    """L_{Q<->Q_text} (Sec. 3.3, Eqs. 1-3): symmetric InfoNCE between the B flattened,
    L2-normalised object queries `(B, N, D)` and text queries `(B, N, D)`; image i pairs with text i.

    `logit_scale` is the log of the inverse temperature; its exp is clamped at 100 (CLIP)."""
    image_x = F.normalize(queries.float().flatten(1), dim=-1)
    text_x = F.normalize(texts.float().flatten(1), dim=-1)
    rank, _ = _dist()
    labels = torch.arange(image_x.shape[0], device=image_x.device) + rank * image_x.shape[0]
    scale = torch.clamp(logit_scale.float().exp(), max=100)
    logits_per_image = scale * image_x @ _gather(text_x).t()
    logits_per_text = scale * text_x @ _gather(image_x).t()
    return F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)


def classification_loss(logits: Tensor, targets: list[dict[str, Tensor]], indices: list[tuple[Tensor, Tensor]],
                        empty_weight: Tensor) -> Tensor:
    """L_cls: weighted cross-entropy `(B, Q, K+1)` logits, unmatched queries -> class K (no object)."""
    num_classes = logits.shape[-1] - 1
    target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
    batch_idx, src_idx = matched_permutation(indices)
    if len(src_idx):
        matched = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        target_classes[batch_idx.to(logits.device), src_idx.to(logits.device)] = matched
    return F.cross_entropy(logits.float().transpose(1, 2), target_classes, weight=empty_weight.to(logits.device))


class OneFormerCriterion(nn.Module):
    """The weighted sum of OneFormer's losses over the final and auxiliary predictions.

    `forward(outputs, targets)` takes the model's training outputs ("pred_logits" (B, Q, K+1),
    "pred_masks" (B, Q, h, w), "aux_outputs" [{pred_logits, pred_masks}], and, when the
    contrastive term is on, "contrastive_logits" (B, Q, D), "texts" (B, Q, D), "logit_scale")
    and per-image targets [{"labels" (N,), "masks" (N, H, W)}]. It returns a dict: "loss" (the
    weighted total, what is minimised) and the unweighted final-layer terms "loss_ce",
    "loss_mask", "loss_dice" and, when on, "loss_contrastive".
    """

    def __init__(self, num_classes: int, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
                 contrastive_weight: float = 0.5, no_object_weight: float = 0.1, num_points: int = 12544,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75, deep_supervision: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = HungarianMatcher(cost_class=class_weight, cost_bbox=0.0, cost_giou=0.0, focal=False,
                                        cost_mask=mask_weight, cost_dice=dice_weight, num_points=num_points)
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight,
                        "loss_contrastive": contrastive_weight}
        self.num_points, self.oversample_ratio, self.importance_sample_ratio = num_points, oversample_ratio, importance_sample_ratio
        self.deep_supervision = deep_supervision
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    @property
    def contrastive_on(self) -> bool:
        return self.weights["loss_contrastive"] > 0

    def num_masks(self, targets: list[dict[str, Tensor]], device: torch.device) -> float:
        """Target masks in the batch, averaged over ranks, at least 1 (the official normaliser)."""
        count = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        _, world = _dist()
        if world > 1:
            torch.distributed.all_reduce(count)
        return max(count.item() / world, 1.0)

    def set_losses(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], num_masks: float,
                   generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Match one prediction set to the targets; its unweighted "loss_ce", "loss_mask", "loss_dice"."""
        indices = self.matcher(outputs, targets, generator)
        loss_ce = classification_loss(outputs["pred_logits"], targets, indices, self.empty_weight)
        batch_idx, src_idx = matched_permutation(indices)
        device = outputs["pred_masks"].device
        src_masks = outputs["pred_masks"][batch_idx.to(device), src_idx.to(device)]
        tgt_masks = [t["masks"][j] for t, (_, j) in zip(targets, indices)]
        tgt = torch.cat(tgt_masks).to(device) if tgt_masks else src_masks.new_zeros((0, 1, 1))
        loss_mask, loss_dice = point_mask_losses(src_masks, tgt, num_masks, self.num_points, self.oversample_ratio,
                                                 self.importance_sample_ratio, generator)
        return {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}

    def loss_terms(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]],
                   generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Every unweighted term, named as the official: "loss_ce", ..., and "loss_ce_{i}" for aux i."""
        num_masks = self.num_masks(targets, outputs["pred_logits"].device)
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        terms = self.set_losses(final, targets, num_masks, generator)
        if self.contrastive_on:
            terms["loss_contrastive"] = contrastive_loss(outputs["contrastive_logits"], outputs["texts"], outputs["logit_scale"])
        if self.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                terms.update({f"{k}_{i}": v for k, v in self.set_losses(aux, targets, num_masks, generator).items()})
        return terms

    def weight(self, name: str) -> float:
        """The weight of a term, aux suffix "_{i}" included."""
        base = name if name in self.weights else name.rsplit("_", 1)[0]
        return self.weights[base]

    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]],
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        terms = self.loss_terms(outputs, targets, generator)
        total = sum(self.weight(k) * v for k, v in terms.items())
        out = {"loss": total}
        out.update({k: v.detach() for k, v in terms.items() if k in self.weights})
        return out
