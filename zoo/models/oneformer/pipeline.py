"""OneFormer predictor: an image and a task -> `zoo.results.Segmentation` (semantic, instance or panoptic).

Preprocessing: each image is letterboxed to the model's fixed S x S input (`config.image_size`):
resized keeping its aspect ratio so the longer side is S (bilinear, antialiased), normalised with
the model's pixel mean and std, and zero-padded (after normalisation, i.e. with the mean colour,
as detectron2's `ImageList` pads) at the bottom and right. The valid region is recorded.

One graph, `segment` (images, task tokens) -> (class logits (B, Q, K+1), mask logits (B, Q, S/4, S/4)),
runs the whole network; the task token is "The task is {task}" in CLIP BPE ids (tokenizer.py).

Postprocessing follows the official `oneformer_model.py`: mask logits are upsampled to S x S,
cropped to the valid region and resized to the input's size (detectron2 `sem_seg_postprocess`),
then

- semantic: sum_q softmax(class_q)[:K] * sigmoid(mask_q) per class, argmax over classes;
- panoptic: queries whose best class is not "no object" and whose score exceeds
  `object_mask_threshold` compete per pixel by score * sigmoid(mask); a query keeps its pixels when
  they are at least `overlap_threshold` of its own mask (sigmoid >= 0.5), stuff of one class merges;
- instance: the top N (= num_queries) (query, class) pairs by class probability, thing classes only,
  binary masks at logit > 0, score = class probability x the mean mask probability inside the mask.
  For the user-facing result (the official demo path) only pairs whose class probability exceeds
  `object_mask_threshold` are kept and painted highest score on top; `instance_inference` with
  threshold 0 gives the full list that mask AP is computed on.

Segment maps: semantic holds a class index per pixel; instance and panoptic hold segment ids from 1,
with -1 where no segment is (void), which `Segmentation.draw` leaves unpainted. Every image is
processed on its own, so a batch gives the same results as one image at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.imageio import letterbox, load_image, to_tensor
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import Segmentation

from .model import OneFormerConfig, OneFormerGraph
from .tokenizer import TASKS, VOCAB_SIZE, task_tokens

VOID = -1


# ------------------------------------------------------------------ preprocessing


def letterbox_image(image: Tensor, size: int, config: OneFormerConfig) -> tuple[Tensor, tuple[int, int]]:
    """`zoo.imageio.letterbox` with the model's pixel mean and std (detectron2's 0-255 convention,
    so (255 x - mean) / std = (x - mean / 255) / (std / 255))."""
    return letterbox(image, size, [m / 255.0 for m in config.pixel_mean], [s / 255.0 for s in config.pixel_std])


def restore_masks(mask_logits: Tensor, input_size: int, valid: tuple[int, int], out_size: tuple[int, int]) -> Tensor:
    """(Q, h, w) mask logits of a letterboxed `input_size` x `input_size` input -> (Q, H, W) logits on the
    original image: upsample to the input size, crop the valid region, resize (official inference
    followed by detectron2's `sem_seg_postprocess`)."""
    m = F.interpolate(mask_logits[None].float(), size=(input_size, input_size), mode="bilinear", align_corners=False)
    m = m[:, :, : valid[0], : valid[1]]
    return F.interpolate(m, size=out_size, mode="bilinear", align_corners=False)[0]


# ------------------------------------------------------------------ postprocessing (official oneformer_model.py)


def semantic_inference(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """(Q, K+1), (Q, H, W) -> per-class scores (K, H, W) = sum_q p_q(c) sigmoid(m_q)."""
    probs = class_logits.float().softmax(-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_logits.float().sigmoid())


def panoptic_inference(class_logits: Tensor, mask_logits: Tensor, thing_classes: Sequence[int],
                       object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8) -> tuple[Tensor, list[dict]]:
    """Official panoptic inference: (Q, K+1), (Q, H, W) -> (segment ids (H, W) int32, 0 = void,
    segments [{"id", "category": class, "isthing", "score", "query"}])."""
    num_classes = class_logits.shape[-1] - 1
    scores, labels = class_logits.float().softmax(-1).max(-1)
    probs = mask_logits.float().sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    queries = keep.nonzero().flatten()
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], probs[keep]
    height, width = probs.shape[-2:]
    panoptic = torch.zeros((height, width), dtype=torch.int32, device=probs.device)
    segments: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic, segments
    cur_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    things = set(int(c) for c in thing_classes)
    stuff_ids: dict[int, int] = {}
    next_id = 0
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k])
        isthing = pred_class in things
        winner = cur_ids == k
        own = cur_masks[k] >= 0.5
        mask = winner & own
        mask_area, original_area = int(winner.sum()), int(own.sum())
        if mask_area == 0 or original_area == 0 or int(mask.sum()) == 0:
            continue
        if mask_area / original_area < overlap_threshold:
            continue
        if not isthing and pred_class in stuff_ids:  # merge stuff regions of one class
            panoptic[mask] = stuff_ids[pred_class]
            continue
        next_id += 1
        if not isthing:
            stuff_ids[pred_class] = next_id
        panoptic[mask] = next_id
        segments.append({"id": next_id, "category": pred_class, "isthing": isthing, "score": float(cur_scores[k]),
                         "query": int(queries[k])})
    return panoptic, segments


def instance_inference(class_logits: Tensor, mask_logits: Tensor, thing_classes: Sequence[int], topk: int,
                       object_mask_threshold: float = 0.0) -> dict[str, Tensor]:
    """Official instance inference: the top-`topk` (query, class) pairs by class probability, thing
    classes only; {"scores" (M,), "labels" (M,), "masks" (M, H, W) bool, "queries" (M,)} sorted by score.
    `object_mask_threshold` > 0 keeps only pairs whose class probability exceeds it (the demo path)."""
    num_classes = class_logits.shape[-1] - 1
    probs = class_logits.float().softmax(-1)[:, :-1]
    class_scores, flat = probs.flatten().topk(min(topk, probs.numel()), sorted=True)
    labels = flat % num_classes
    queries = torch.div(flat, num_classes, rounding_mode="floor")
    thing = torch.zeros(num_classes, dtype=torch.bool, device=probs.device)
    thing[list(int(c) for c in thing_classes)] = True
    keep = thing[labels] & (class_scores > object_mask_threshold)
    class_scores, labels, queries = class_scores[keep], labels[keep], queries[keep]
    logits = mask_logits[queries].float()
    masks = logits > 0
    mask_scores = (logits.sigmoid().flatten(1) * masks.flatten(1)).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    scores = class_scores * mask_scores
    order = scores.argsort(descending=True, stable=True)
    return {"scores": scores[order], "labels": labels[order], "masks": masks[order], "queries": queries[order]}


# ------------------------------------------------------------------ the pipeline


class OneFormerPipeline(Pipeline):
    """`predict(images, task="panoptic", object_mask_threshold=0.8, overlap_threshold=0.8)` -> Segmentation."""

    max_batch = 16

    def graph_specs(self) -> list[GraphSpec]:
        c = self.config
        size, queries = c.image_size, c.num_queries
        return [GraphSpec(
            "segment", OneFormerGraph(self.model),
            (TensorSpec("images", ("batch", 3, size, size), value_range=(-2.0, 2.0)),
             TensorSpec("task_tokens", ("batch", c.task_seq_len), dtype="int64", value_range=(0, VOCAB_SIZE - 1),
                        valid_range=(0, VOCAB_SIZE - 1))),
            (TensorSpec("class_logits", ("batch", queries, c.num_classes + 1), value_range=(-10.0, 10.0)),
             TensorSpec("mask_logits", ("batch", queries, size // 4, size // 4), value_range=(-10.0, 10.0))),
            note=f"images are letterboxed to a fixed {size} x {size} (the model's input side); task_tokens are "
                 "the CLIP BPE ids of 'The task is {semantic|instance|panoptic}'; in fp16 the masked attention's "
                 "sigmoid > 0.5 threshold on near-zero mask logits flips for a few pixels, and the flips carry "
                 "through later layers (with random weights, up to ~5% of logits leave the 1e-2 band); the fp16 "
                 "check is the semantic maps, which must agree on 99% of pixels",
            fp16_mismatch_fraction=0.1,
        )]

    # -- stages --------------------------------------------------------------------------
    def preprocess(self, items: list[Any]) -> tuple[Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
        """Raw inputs -> (letterboxed normalised batch (B, 3, S, S), original sizes, valid regions)."""
        c = self.config
        batch, sizes, valid = [], [], []
        for item in items:
            image = to_tensor(load_image(item))
            boxed, region = letterbox_image(image, c.image_size, c)
            batch.append(boxed)
            sizes.append((int(image.shape[-2]), int(image.shape[-1])))
            valid.append(region)
        return torch.stack(batch), sizes, valid

    def infer(self, items: list[Any], task: str = "panoptic") -> list[tuple[Tensor, Tensor]]:
        """Per image: (class logits (Q, K+1), mask logits (Q, H, W) on the original image)."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        images, sizes, valid = self.preprocess(items)
        tokens = task_tokens([task] * len(items), self.config.task_seq_len)
        out = []
        for start in range(0, len(items), self.max_batch):
            stop = start + self.max_batch
            class_logits, mask_logits = self.run_graph("segment", images[start:stop], tokens[start:stop])[:2]
            for i in range(class_logits.shape[0]):
                j = start + i
                out.append((class_logits[i].float(), restore_masks(mask_logits[i], self.config.image_size, valid[j], sizes[j])))
        return out

    def postprocess(self, class_logits: Tensor, mask_logits: Tensor, task: str, object_mask_threshold: float = 0.8,
                    overlap_threshold: float = 0.8) -> Segmentation:
        """One image's logits (mask logits at the image's size) -> Segmentation of kind `task`."""
        c = self.config
        things = set(int(t) for t in c.thing_classes)
        names = list(c.class_names)
        if task == "semantic":
            scores = semantic_inference(class_logits, mask_logits)
            label_map = scores.argmax(0)
            segments = []
            for label in torch.unique(label_map).tolist():
                region = label_map == label
                segments.append({"id": int(label), "label": int(label), "score": float(scores[label][region].mean()),
                                 "is_thing": int(label) in things})
            return Segmentation("semantic", label_map.cpu().numpy(), segments, names)
        if task == "panoptic":
            ids, infos = panoptic_inference(class_logits, mask_logits, c.thing_classes, object_mask_threshold, overlap_threshold)
            seg_map = ids.cpu().numpy().astype(np.int32)
            seg_map[seg_map == 0] = VOID
            segments = [{"id": s["id"], "label": s["category"], "score": s["score"], "is_thing": s["isthing"]} for s in infos]
            return Segmentation("panoptic", seg_map, segments, names)
        found = instance_inference(class_logits, mask_logits, c.thing_classes, c.num_queries, object_mask_threshold)
        seg_map = torch.full(mask_logits.shape[-2:], VOID, dtype=torch.int32, device=mask_logits.device)
        segments = []
        for score, label, mask in zip(found["scores"].tolist(), found["labels"].tolist(), found["masks"]):
            free = mask & (seg_map == VOID)  # higher scores were painted first and stay on top
            if not bool(free.any()):
                continue
            seg_id = len(segments) + 1
            seg_map[free] = seg_id
            segments.append({"id": seg_id, "label": int(label), "score": float(score), "is_thing": True})
        return Segmentation("instance", seg_map.cpu().numpy(), segments, names)

    def _predict(self, items: list[Any], task: str = "panoptic", object_mask_threshold: float = 0.8,
                 overlap_threshold: float = 0.8, **_: Any) -> list[Segmentation]:
        return [self.postprocess(cls, masks, task, object_mask_threshold, overlap_threshold)
                for cls, masks in self.infer(items, task)]
