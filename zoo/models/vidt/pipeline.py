"""ViDT / ViDT+ predictor: images -> `Detections` (boxes, scores, labels; ViDT+ also instance masks).

Preprocessing (our choice, so one fixed-size graph serves every image and exports whole): each
image is letterboxed to `config.image_size` S: resized (bilinear, antialiased) so its longer side
is S, keeping the aspect ratio, normalised with the ImageNet mean / std, and zero-padded
bottom / right to S x S (zero after normalisation, i.e. the mean colour). The official code
resizes the shorter side to 800 (longer <= 1333) and passes a padding mask instead; the graph
here has no mask input, and training (train.py) letterboxes the same way, so the model never
sees a difference. Boxes are normalised to the S x S canvas.

Graph "detect" (model.ViDTGraph): images (B, 3, S, S) -> pred_logits (B, Q, C), pred_boxes
(B, Q, 4) sigmoid cxcywh; ViDT+ also pred_vectors (B, Q, K) UQR DCT coefficients and pred_ious
(B, Q, 1) IoU logits.

Postprocessing (official `methods/vidt/postprocessor.py` `PostProcess`): sigmoid scores of every
query x class pair, top-k (k = `max_detections`, official 100) over the flattened pairs, each
pair's query box to pixels; then (ours) boxes mapped back through the letterbox and clipped to the
image, and pairs below `score_threshold` dropped. ViDT+ masks: the kept queries' DCT vectors are
decoded to `mask_size` square masks (128 for the paper variants) thresholded at the midpoint of
their range (official), pasted into their boxes at the input resolution (detectron2
`paste_masks_in_image`, threshold 0.5). The official postprocessor ranks by class probability
alone (the IoU branch only trains); option `iou_alpha` > 0 (ViDT+ only) instead ranks by
p^(1 - a) * IoU^a, the detection confidence of Wu et al. ("IoU-aware single-stage object
detector", arXiv 1912.05992), with IoU = sigmoid(IoU logit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo.imageio import letterbox, load_image, to_tensor
from zoo.nn.box_ops import box_cxcywh_to_xyxy
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import Detections

from . import dct

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def letterbox_scaled(image: Tensor, size: int, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> tuple[Tensor, tuple[float, float]]:
    """`zoo.imageio.letterbox` with the per-axis scale (sy, sx) = resized / original that maps input
    points into the letterboxed frame (boxes go back through `unletterbox_boxes`)."""
    out, (nh, nw) = letterbox(image, size, mean, std)
    return out, (nh / image.shape[-2], nw / image.shape[-1])


def unletterbox_boxes(boxes_xyxy: Tensor, scale: tuple[float, float], height: int, width: int) -> Tensor:
    """Letterboxed-pixel xyxy boxes -> input-image pixels, clipped to the (height, width) image."""
    sy, sx = scale
    out = boxes_xyxy / boxes_xyxy.new_tensor([sx, sy, sx, sy])
    out[..., 0::2] = out[..., 0::2].clamp(0, width)
    out[..., 1::2] = out[..., 1::2].clamp(0, height)
    return out


def select_topk(logits: Tensor, max_detections: int, ious: Tensor | None = None,
                iou_alpha: float = 0.0, labels_per_box: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """One image's (Q, C) logits -> (scores, query indices, labels) of the top-k query x class pairs
    (official `PostProcess`: topk over sigmoid scores flattened to Q*C; query = i // C, label = i % C).
    `labels_per_box` > 0 (ours, for display) first keeps only each query's best classes, so that one
    box is not listed again under a second label; 0 is the official ranking COCO AP is measured on."""
    prob = logits.float().sigmoid()
    if ious is not None and iou_alpha > 0:
        iou = ious.float().sigmoid().reshape(-1, 1)
        prob = prob ** (1 - iou_alpha) * iou**iou_alpha
    if 0 < labels_per_box < prob.shape[-1]:
        kth = prob.topk(int(labels_per_box), dim=-1).values[..., -1:]
        prob = torch.where(prob >= kth, prob, torch.zeros_like(prob))
    num_classes = prob.shape[-1]
    k = min(int(max_detections), prob.numel())
    scores, index = prob.flatten().topk(k)
    return scores, torch.div(index, num_classes, rounding_mode="floor"), index % num_classes


def postprocess_image(logits: Tensor, boxes: Tensor, *, input_size: int, scale: tuple[float, float],
                      height: int, width: int, max_detections: int = 100, score_threshold: float = 0.0,
                      vectors: Tensor | None = None, ious: Tensor | None = None, iou_alpha: float = 0.0,
                      mask_size: int = 128, labels_per_box: int = 0) -> dict[str, Tensor]:
    """One image's raw outputs -> {"boxes" (N, 4) xyxy input pixels, "scores", "labels"[, "masks" (N, H, W) bool]}."""
    scores, query, labels = select_topk(logits, max_detections, ious, iou_alpha, labels_per_box)
    keep = scores >= score_threshold
    if labels_per_box > 0:
        keep &= scores > 0  # the classes left out above are zeros, not detections
    scores, query, labels = scores[keep], query[keep], labels[keep]
    xyxy = box_cxcywh_to_xyxy(boxes[query].float()) * input_size
    out = {"boxes": unletterbox_boxes(xyxy, scale, height, width), "scores": scores, "labels": labels}
    if vectors is not None:
        local = dct.decode_binary(vectors[query].float(), mask_size)
        out["masks"] = dct.paste_masks(local, out["boxes"], height, width)
    return out


class ViDTPipeline(Pipeline):
    """Letterbox -> graph "detect" -> top-k postprocessing -> `Detections` (see the module docstring)."""

    def graph_specs(self) -> list[GraphSpec]:
        from .model import ViDTGraph

        c = self.config
        s = int(c.image_size)
        q, k = int(c.det_tokens), int(c.num_classes)
        low = min((0.0 - m) / d for m, d in zip(IMAGENET_MEAN, IMAGENET_STD))
        high = max((1.0 - m) / d for m, d in zip(IMAGENET_MEAN, IMAGENET_STD))
        outputs = [TensorSpec("logits", ("batch", q, k), value_range=(-20.0, 20.0)),
                   TensorSpec("boxes", ("batch", q, 4))]
        if getattr(c, "uqr", False):
            outputs.append(TensorSpec("vectors", ("batch", q, int(c.vector_dim)), value_range=(-50.0, 50.0)))
        if getattr(c, "iou_aware", False):
            outputs.append(TensorSpec("ious", ("batch", q, 1), value_range=(-20.0, 20.0)))
        return [GraphSpec("detect", ViDTGraph(self.model), (TensorSpec("images", ("batch", 3, s, s), value_range=(low, high)),),
                          tuple(outputs), dims={"batch": (1, 2, 16)},
                          note=f"fixed {s}x{s} input: the pipeline letterboxes every image to config.image_size")]

    @property
    def with_masks(self) -> bool:
        """UQR on: the graph also returns DCT mask vectors and results carry instance masks."""
        return bool(getattr(self.config, "uqr", False))

    def preprocess(self, items: list[Any]) -> tuple[Tensor, list[tuple[float, float]], list[tuple[int, int]]]:
        """Raw inputs -> (letterboxed batch (B, 3, S, S), per-image (sy, sx), per-image (H, W))."""
        c = self.config
        mean = tuple(getattr(c, "pixel_mean", IMAGENET_MEAN))
        std = tuple(getattr(c, "pixel_std", IMAGENET_STD))
        tensors, scales, sizes = [], [], []
        for item in items:
            image = to_tensor(load_image(item))
            boxed, scale = letterbox_scaled(image, int(c.image_size), mean, std)
            tensors.append(boxed)
            scales.append(scale)
            sizes.append(tuple(image.shape[-2:]))
        return torch.stack(tensors), scales, sizes

    def _predict(self, items: list[Any], score_threshold: float = 0.3, max_detections: int = 100,
                 iou_alpha: float = 0.0, labels_per_box: int = 1, **_: Any) -> list[Detections]:
        images, scales, sizes = self.preprocess(items)
        outs = [t.float().cpu() for t in self.run_graph("detect", images)]
        logits, boxes, rest = outs[0], outs[1], outs[2:]
        vectors = rest.pop(0) if self.with_masks else None
        ious = rest.pop(0) if getattr(self.config, "iou_aware", False) else None
        names = list(getattr(self.config, "class_names", ()) or ()) or None
        results = []
        for b, (scale, (h, w)) in enumerate(zip(scales, sizes)):
            det = postprocess_image(logits[b], boxes[b], input_size=int(self.config.image_size), scale=scale,
                                    height=h, width=w, max_detections=max_detections, score_threshold=score_threshold,
                                    vectors=None if vectors is None else vectors[b], ious=None if ious is None else ious[b],
                                    iou_alpha=iou_alpha, mask_size=int(getattr(self.config, "mask_size", 128)),
                                    labels_per_box=labels_per_box)
            masks = det["masks"].numpy() if "masks" in det else (np.zeros((0, h, w), bool) if self.with_masks else None)
            results.append(Detections(det["boxes"].numpy(), det["scores"].numpy(), det["labels"].numpy(),
                                      masks=masks, class_names=names))
        return results
