"""SeaBird predictor: an image (+ its camera) -> `Boxes3D` (3D boxes, BEV segmentation).

Preprocessing: the image is resized (bilinear, aspect not kept, as the official `front_resize`)
to `config.image_size` and normalised with the ImageNet mean / std; the camera intrinsics
(fx, fy, cx, cy) are scaled with it. The camera comes from option `calib` (a KITTI P2 as 12
numbers, or "fx,fy,cx,cy", in the input image's pixels); without it, the variant's
`default_camera` (fractions of the image size) is used.

Graph "bev" (model.SeaBird): images (B, 3, H, W), camera (B, 4) in network-input pixels ->
bev_logits (B, C, Zd, Xd), heads (B, 18, Zd, Xd), both on the stride-4 BEV grid with rows z far ->
near and columns x left -> right (ego at the bottom).

Postprocessing (official `DecDecoder.ctdet_decode` + `func_utils.decode_prediction`): 3 x 3
max-pool peak picking on the heatmaps, top K (50), score threshold; each peak's centre offset,
BBAVectors (cls_theta > 0.8: the four edge-midpoint vectors, else the axis-aligned external
w, h), height and bottom y; then a greedy rotated-IoU NMS per class (official poly NMS).
Yaw is recovered modulo pi (a BEV rectangle does not tell front from back; the official
decoder has the same ambiguity).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.imageio import load_image, to_tensor
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import Boxes3D

from .model import SeaBirdConfig, split_heads


def parse_calib_option(text: str | None) -> tuple[float, float, float, float] | None:
    """"" / None -> None; 12 numbers (P2, row-major) or 4 numbers "fx,fy,cx,cy" -> (fx, fy, cx, cy)."""
    if text is None or not str(text).strip():
        return None
    parts = str(text).replace(",", " ").replace("P2:", " ").split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"option 'calib' expects 12 numbers (P2) or 4 (fx,fy,cx,cy), got {text[:60]!r}") from None
    if len(values) == 12:
        return values[0], values[5], values[2], values[6]
    if len(values) == 4:
        return values[0], values[1], values[2], values[3]
    raise ValueError(f"option 'calib' expects 12 numbers (P2) or 4 (fx,fy,cx,cy), got {len(values)}")


def camera_matrix(camera: tuple[float, float, float, float]) -> np.ndarray:
    fx, fy, cx, cy = camera
    return np.array([[fx, 0, cx, 0], [0, fy, cy, 0], [0, 0, 1, 0]], np.float64)


def decode(bev_logits: Tensor, heads: Tensor, config: SeaBirdConfig, score_threshold: float = 0.1,
           max_detections: int = 50, nms_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's graph outputs -> boxes (N, 7) [x, y, z, l, w, h, ry], scores (N,), labels (N,)."""
    h = split_heads(heads[None].float(), config)
    hm = h["hm"][0]
    peaks = (F.max_pool2d(hm[None], 3, 1, 1)[0] == hm).to(hm.dtype) * hm
    c, rows, cols = hm.shape
    k = min(int(max_detections), peaks.numel())
    scores, index = peaks.flatten().topk(k)
    keep = scores >= score_threshold
    scores, index = scores[keep], index[keep]
    labels = index // (rows * cols)
    cell = index % (rows * cols)
    r, q = cell // cols, cell % cols
    g = lambda name: h[name][0][:, r, q].T  # noqa: E731  (N, D)
    reg, wh, cls_theta, h3d, y3d = g("reg"), g("wh"), g("cls_theta")[:, 0], g("h3d")[:, 0], g("y3d")[:, 0]
    col = q.float() + reg[:, 0]
    row = r.float() + reg[:, 1]
    use_vec = cls_theta > 0.8
    tt = torch.where(use_vec[:, None], wh[:, 0:2], torch.stack([torch.zeros_like(wh[:, 9]), -wh[:, 9] / 2], 1))
    rr = torch.where(use_vec[:, None], wh[:, 2:4], torch.stack([wh[:, 8] / 2, torch.zeros_like(wh[:, 8])], 1))
    e1, e2 = 2 * tt.norm(dim=1), 2 * rr.norm(dim=1)
    along = torch.where((e1 >= e2)[:, None], tt, rr)
    ry = torch.atan2(along[:, 1], along[:, 0])
    ry = torch.remainder(ry + np.pi / 2, np.pi) - np.pi / 2
    x0, _, _, z1 = config.bev_extent
    d = config.det_cell
    boxes = torch.stack([x0 + col * d, y3d, z1 - row * d, torch.maximum(e1, e2) * d, torch.minimum(e1, e2) * d,
                         h3d.clamp(min=0.1), ry], 1).numpy().astype(np.float32)
    scores_np, labels_np = scores.numpy().astype(np.float32), labels.numpy().astype(np.int64)
    if nms_iou < 1 and len(boxes):
        from zoo.metrics.detection3d import bev_iou_matrix

        keep_idx = []
        for lab in np.unique(labels_np):
            idx = np.where(labels_np == lab)[0]
            idx = idx[np.argsort(-scores_np[idx])]
            ious = bev_iou_matrix(boxes[idx], boxes[idx])
            alive = np.ones(len(idx), bool)
            for i in range(len(idx)):
                if alive[i]:
                    keep_idx.append(idx[i])
                    alive[i + 1:] &= ious[i, i + 1:] < nms_iou
        keep_idx = sorted(keep_idx, key=lambda i: -scores_np[i])
        boxes, scores_np, labels_np = boxes[keep_idx], scores_np[keep_idx], labels_np[keep_idx]
    return boxes.reshape(-1, 7), scores_np, labels_np


class SeaBirdPipeline(Pipeline):
    """Resize + camera -> graph "bev" -> CenterNet / BBAVectors decoding -> `Boxes3D`."""

    def graph_specs(self) -> list[GraphSpec]:
        c: SeaBirdConfig = self.config
        hh, ww = c.image_size
        rows, cols = int(c.bev_size[0] / c.tfm_scales[0]), int(c.bev_size[1] / c.tfm_scales[0])
        nhead = sum(c.head_channels.values())
        return [GraphSpec("bev", self.model, (TensorSpec("images", ("batch", 3, hh, ww), value_range=(-2.0, 2.5)),
                                              TensorSpec("camera", ("batch", 4), value_range=(0.5 * hh, 0.6 * ww))),
                          (TensorSpec("bev_logits", ("batch", c.num_classes, rows, cols), value_range=(-20.0, 20.0)),
                           TensorSpec("heads", ("batch", nhead, rows, cols), value_range=(-50.0, 50.0))),
                          dims={"batch": (1, 2, 8)},
                          note=f"fixed {hh}x{ww} input (the pipeline resizes); camera = (fx, fy, cx, cy) in those pixels")]

    def preprocess(self, items: list[Any], calib: str | None = None) -> tuple[Tensor, Tensor, list[np.ndarray], list[tuple[int, int]]]:
        c: SeaBirdConfig = self.config
        hh, ww = c.image_size
        given = parse_calib_option(calib)
        images, cams, p2s, sizes = [], [], [], []
        mean = torch.tensor(c.pixel_mean).view(3, 1, 1)
        std = torch.tensor(c.pixel_std).view(3, 1, 1)
        for item in items:
            pil = load_image(item)
            w0, h0 = pil.size
            cam = given or (c.default_camera[0] * w0, c.default_camera[1] * h0, c.default_camera[2] * w0, c.default_camera[3] * h0)
            x = to_tensor(pil)
            x = F.interpolate(x[None], size=(hh, ww), mode="bilinear", align_corners=False, antialias=True)[0]
            images.append((x - mean) / std)
            sx, sy = ww / w0, hh / h0
            cams.append(torch.tensor([cam[0] * sx, cam[1] * sy, cam[2] * sx, cam[3] * sy], dtype=torch.float32))
            p2s.append(camera_matrix(cam))
            sizes.append((h0, w0))
        return torch.stack(images), torch.stack(cams), p2s, sizes

    def _predict(self, items: list[Any], score_threshold: float = 0.3, max_detections: int = 50, calib: str = "",
                 **_: Any) -> list[Boxes3D]:
        images, cams, p2s, _sizes = self.preprocess(items, calib)
        bev_logits, heads = (t.float().cpu() for t in self.run_graph("bev", images, cams))
        c: SeaBirdConfig = self.config
        out = []
        for b in range(len(items)):
            boxes, scores, labels = decode(bev_logits[b], heads[b], c, score_threshold, max_detections)
            out.append(Boxes3D(boxes, scores, labels, bev=bev_logits[b].sigmoid().numpy(), class_names=list(c.class_names),
                               calib=p2s[b], bev_extent=c.bev_extent))
        return out
