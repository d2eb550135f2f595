"""COCO detection/instance and COCO panoptic: writers and readers (one path for synthetic and real data).

Formats (https://cocodataset.org/#format-data):

- Detection: `{"images": [{id, file_name, width, height}], "annotations": [{id, image_id,
  category_id, bbox: [x, y, w, h], area, iscrowd, segmentation}], "categories": [{id, name,
  supercategory}]}`; `segmentation` is a list of polygons `[x0, y0, x1, y1, ...]` or an RLE
  `{"size": [h, w], "counts": str}` (pycocotools' compressed form).
- Panoptic: one PNG per image whose RGB colour encodes the segment id
  `id = R + 256 G + 256^2 B` (0 = void), and a JSON with `annotations: [{image_id,
  file_name, segments_info: [{id, category_id, iscrowd, bbox, area}]}]` and `categories`
  carrying `isthing`.

Readers return tensors in pixel coordinates: boxes xyxy, labels as contiguous indices
0..K-1 into `dataset.categories` (and the original `category_ids`), masks (N, H, W) bool.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch import Tensor

from zoo.data._io import read_rgb, write_json, write_png

# ---------------------------------------------------------------------------- helpers


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Panoptic PNG colours `(H, W, 3)` uint8 -> segment ids `(H, W)` int64: R + 256 G + 256^2 B."""
    color = np.asarray(color).astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids `(H, W)` -> PNG colours `(H, W, 3)` uint8 (inverse of `rgb2id`, ids < 256^3)."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError("panoptic segment ids must be in [0, 256^3)")
    return np.stack([ids % 256, (ids // 256) % 256, ids // (256 * 256)], axis=-1).astype(np.uint8)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Binary mask `(H, W)` -> COCO compressed RLE with `counts` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[float]]:
    """Binary mask -> COCO polygons (outer contours at the pixel-edge boundary, holes dropped).

    Contours are traced at level 0.5 on a 1-pixel-padded mask, which puts them on pixel edges
    in COCO's coordinates ((x, y) with pixel (i, j) covering [j, j+1) x [i, i+1)). Polygons
    cannot express holes (a ring's hole is filled); use RLE where that matters.
    """
    from skimage import measure

    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    polygons = []
    for contour in measure.find_contours(padded, 0.5):
        contour = measure.approximate_polygon(contour, tolerance)
        if len(contour) < 4:  # closed contour repeats its first point: need >= 3 distinct
            continue
        # (row, col) on the padded grid -> (x, y) pixel-edge coordinates: centre of padded pixel
        # (r, c) is (c - 1 + 0.5, r - 1 + 0.5) in image coordinates
        xy = np.stack([contour[:, 1] - 0.5, contour[:, 0] - 0.5], axis=1)
        area = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
        if area < 1.0 or _is_hole(contour, padded):
            continue
        polygons.append([round(float(v), 2) for v in xy.reshape(-1)])
    return polygons


def _is_hole(contour: np.ndarray, padded: np.ndarray) -> bool:
    """find_contours walks outer boundaries one way and holes the other: positive signed area
    in (row, col) means the foreground is on the left, i.e. a hole boundary."""
    r, c = contour[:, 0], contour[:, 1]
    signed = 0.5 * (np.dot(c, np.roll(r, 1)) - np.dot(r, np.roll(c, 1)))
    return signed > 0


def mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight COCO box [x, y, w, h] around a mask in pixel-edge coordinates ([0]*4 if empty)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


@contextlib.contextmanager
def _quiet():
    """pycocotools prints progress on stdout; keep `--json` outputs clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_coco(ann: str | Path | dict | Any):
    """A `pycocotools.coco.COCO` from a path, a dict, or an existing COCO object (returned as is)."""
    from pycocotools.coco import COCO

    if isinstance(ann, COCO):
        return ann
    with _quiet():
        if isinstance(ann, dict):
            coco = COCO()
            coco.dataset = ann
            coco.createIndex()
            return coco
        return COCO(str(ann))


# ---------------------------------------------------------------------------- writers


def write_coco_detection(
    path: str | Path,
    images: Sequence[dict[str, Any]],
    annotations: Sequence[dict[str, Any]],
    categories: Sequence[dict[str, Any]],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a COCO instances JSON. Each annotation needs id, image_id, category_id and either a
    `mask` (H, W) bool array (converted here with `segmentation_format` "polygon", "rle" or
    "auto" (default: polygons unless the mask has holes, which polygons cannot express)) or
    ready `segmentation`/`bbox`/`area` fields."""
    out_anns = []
    for ann in annotations:
        ann = dict(ann)
        mask = ann.pop("mask", None)
        fmt = ann.pop("segmentation_format", "auto")
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            ann.setdefault("bbox", mask_bbox(mask))
            ann.setdefault("area", float(mask.sum()))
            if fmt == "auto":
                fmt = "rle" if (ndimage.binary_fill_holes(mask) != mask).any() else "polygon"
            if fmt == "rle":
                ann["segmentation"] = mask_to_rle(mask)
            else:
                polys = mask_to_polygons(mask)
                ann["segmentation"] = polys if polys else mask_to_rle(mask)
        ann.setdefault("iscrowd", 0)
        out_anns.append(ann)
    doc = {"info": info or {}, "images": list(images), "annotations": out_anns, "categories": list(categories), "licenses": []}
    return write_json(path, doc)


def write_coco_panoptic(
    json_path: str | Path,
    png_dir: str | Path,
    entries: Sequence[dict[str, Any]],
    images: Sequence[dict[str, Any]],
    categories: Sequence[dict[str, Any]],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write COCO panoptic: one PNG per entry (`entries[i]` has image_id, file_name, `panoptic`
    (H, W) int segment ids and `segments_info` [{id, category_id, iscrowd?}]; bbox and area are
    filled from the map) and the JSON. `categories` need id, name, isthing."""
    png_dir = Path(png_dir)
    anns = []
    for entry in entries:
        pan = np.asarray(entry["panoptic"])
        write_png(png_dir / entry["file_name"], id2rgb(pan))
        infos = []
        for seg in entry["segments_info"]:
            seg_mask = pan == seg["id"]
            infos.append({"id": int(seg["id"]), "category_id": int(seg["category_id"]), "iscrowd": int(seg.get("iscrowd", 0)),
                          "bbox": mask_bbox(seg_mask), "area": int(seg_mask.sum())})
        anns.append({"image_id": entry["image_id"], "file_name": entry["file_name"], "segments_info": infos})
    doc = {"info": info or {}, "images": list(images), "annotations": anns, "categories": list(categories), "licenses": []}
    return write_json(json_path, doc)


# ---------------------------------------------------------------------------- readers


def _resize_image(img: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    return img if size is None or img.size == (size[1], size[0]) else img.resize((size[1], size[0]), Image.Resampling.BILINEAR)


def _as_hw(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


def _to_tensor(img: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _resize_masks(masks: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Nearest-neighbour resize of (N, H, W) masks/id maps to (N, h, w)."""
    if size is None or masks.shape[-2:] == size:
        return masks
    h, w = masks.shape[-2:]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return masks[..., rows[:, None], cols[None, :]]


class CocoDetection(torch.utils.data.Dataset):
    """COCO instances: item -> dict(image (3, H, W) float in [0, 1], boxes (N, 4) xyxy pixels,
    labels (N,) contiguous int64, category_ids (N,), masks (N, H, W) bool, image_id, orig_size (h, w)).

    `image_size` (int or (h, w)) resizes images, boxes and masks (nearest); crowd annotations
    are skipped, as DETR's training set does, unless `keep_crowd`.
    """

    def __init__(self, root: str | Path, ann_file: str | Path | dict, image_size: int | tuple[int, int] | None = None,
                 with_masks: bool = True, keep_crowd: bool = False):
        self.root = Path(root)
        self.coco = load_coco(ann_file)
        self.ids = sorted(self.coco.imgs)
        self.categories = sorted(self.coco.cats.values(), key=lambda c: c["id"])
        self.cat_to_label = {c["id"]: i for i, c in enumerate(self.categories)}
        self.image_size, self.with_masks, self.keep_crowd = _as_hw(image_size), with_masks, keep_crowd

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        img = read_rgb(self.root / info["file_name"])
        w, h = img.size
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if self.keep_crowd or not a.get("iscrowd", 0)]
        anns = [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        out_h, out_w = self.image_size or (h, w)
        boxes *= np.array([out_w / w, out_h / h, out_w / w, out_h / h], dtype=np.float32)
        cat_ids = [a["category_id"] for a in anns]
        item = {
            "image": _to_tensor(_resize_image(img, self.image_size)),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([self.cat_to_label[c] for c in cat_ids], dtype=torch.int64),
            "category_ids": torch.tensor(cat_ids, dtype=torch.int64),
            "iscrowd": torch.tensor([a.get("iscrowd", 0) for a in anns], dtype=torch.int64),
            "image_id": int(image_id),
            "orig_size": (h, w),
        }
        if self.with_masks:
            masks = np.stack([self.coco.annToMask(a) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
            item["masks"] = torch.from_numpy(_resize_masks(masks, self.image_size).astype(bool))
        return item


class CocoPanoptic(torch.utils.data.Dataset):
    """COCO panoptic: item -> dict(image, panoptic (H, W) int64 segment ids (0 void), segments_info,
    masks (N, H, W) bool, labels (N,) contiguous, category_ids (N,), isthing (N,) bool,
    semantic (H, W) int64 contiguous class or `ignore_index` for void, image_id, orig_size).

    Every task target of OneFormer (semantic, instance, panoptic) derives from this one item.
    """

    def __init__(self, root: str | Path, ann_file: str | Path, png_dir: str | Path,
                 image_size: int | tuple[int, int] | None = None, ignore_index: int = 255):
        import json

        self.root, self.png_dir = Path(root), Path(png_dir)
        doc = json.loads(Path(ann_file).read_text(encoding="utf-8"))
        self.images = {im["id"]: im for im in doc["images"]}
        self.annotations = sorted(doc["annotations"], key=lambda a: a["image_id"])
        self.categories = sorted(doc["categories"], key=lambda c: c["id"])
        self.cat_to_label = {c["id"]: i for i, c in enumerate(self.categories)}
        self.image_size, self.ignore_index = _as_hw(image_size), ignore_index

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def thing_labels(self) -> list[int]:
        return [i for i, c in enumerate(self.categories) if c.get("isthing", 1)]

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ann = self.annotations[index]
        info = self.images[ann["image_id"]]
        img = read_rgb(self.root / info["file_name"])
        w, h = img.size
        with Image.open(self.png_dir / ann["file_name"]) as png:
            pan = rgb2id(np.asarray(png.convert("RGB")))
        pan = _resize_masks(pan, self.image_size)
        segs = [s for s in ann["segments_info"] if not s.get("iscrowd", 0)]
        labels = [self.cat_to_label[s["category_id"]] for s in segs]
        masks = np.stack([pan == s["id"] for s in segs]) if segs else np.zeros((0, *pan.shape), bool)
        semantic = np.full(pan.shape, self.ignore_index, dtype=np.int64)
        for mask, label in zip(masks, labels):
            semantic[mask] = label
        cats = {c["id"]: c for c in self.categories}
        return {
            "image": _to_tensor(_resize_image(img, self.image_size)),
            "panoptic": torch.from_numpy(pan.astype(np.int64)),
            "segments_info": ann["segments_info"],
            "masks": torch.from_numpy(masks),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "category_ids": torch.tensor([s["category_id"] for s in segs], dtype=torch.int64),
            "isthing": torch.tensor([bool(cats[s["category_id"]].get("isthing", 1)) for s in segs], dtype=torch.bool),
            "semantic": torch.from_numpy(semantic),
            "image_id": int(ann["image_id"]),
            "orig_size": (h, w),
        }


def collate_detection(items: Sequence[dict[str, Any]]) -> tuple[Tensor, Tensor, list[dict[str, Any]]]:
    """DETR-style batch: images zero-padded to the largest (B, 3, H, W), a padding mask (B, H, W)
    (True = padded) and the per-image targets (masks padded alike)."""
    hmax = max(it["image"].shape[1] for it in items)
    wmax = max(it["image"].shape[2] for it in items)
    images = torch.zeros(len(items), 3, hmax, wmax)
    pad_mask = torch.ones(len(items), hmax, wmax, dtype=torch.bool)
    targets = []
    for i, it in enumerate(items):
        _, h, w = it["image"].shape
        images[i, :, :h, :w] = it["image"]
        pad_mask[i, :h, :w] = False
        target = {k: v for k, v in it.items() if k != "image"}
        if "masks" in target:
            m = torch.zeros(target["masks"].shape[0], hmax, wmax, dtype=torch.bool)
            m[:, :h, :w] = target["masks"]
            target["masks"] = m
        targets.append(target)
    return images, pad_mask, targets
