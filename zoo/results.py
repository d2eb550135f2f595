"""Task result types shared by the CLI, the server and the demos.

Each holds plain attributes (numpy arrays, Python numbers), serialises with `to_json()`
(arrays as nested lists, large maps as PNG-free summaries unless asked) and draws itself
over the input image with `draw(image) -> PIL.Image`.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255]],
    dtype=np.uint8,
)


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3])


def png_base64(image: Image.Image | np.ndarray) -> str:
    buffer = io.BytesIO()
    _as_pil(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def encode_png16(values: np.ndarray) -> dict[str, Any]:
    """A float map as a 16-bit grayscale PNG, linearly scaled to its own [min, max]:
    value = min + pixel / 65535 * (max - min), within (max - min) / 131070 of the original.
    Non-finite values are clipped into the range first."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scaled = (np.clip(np.nan_to_num(array, nan=low), low, high) - low) / (high - low) if high > low else np.zeros_like(array)
    buffer = io.BytesIO()
    Image.fromarray((scaled * 65535).round().astype(np.uint16)).save(buffer, format="PNG")
    return {"encoding": "png16", "shape": list(array.shape), "min": low, "max": high, "png_base64": base64.b64encode(buffer.getvalue()).decode()}


def decode_png16(document: dict[str, Any]) -> np.ndarray:
    """The float32 map `encode_png16` wrote (to its 16-bit precision)."""
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(document["png_base64"]))), dtype=np.float64)
    return (document["min"] + pixels / 65535 * (document["max"] - document["min"])).astype(np.float32)


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """A binary (H, W) mask as COCO compressed RLE, {"size": [H, W], "counts": str}: decode
    with pycocotools.mask.decode({"size": ..., "counts": counts.encode()})."""
    from zoo.data.coco import mask_to_rle

    return mask_to_rle(np.asarray(mask, dtype=bool))


def colormap_jet(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] -> uint8 RGB with a jet-like ramp (no matplotlib needed)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.concatenate([np.clip(1.5 - np.abs(4 * v - 3), 0, 1), np.clip(1.5 - np.abs(4 * v - 2), 0, 1), np.clip(1.5 - np.abs(4 * v - 1), 0, 1)], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


@dataclass
class AnomalyResult:
    """score: image anomaly score; map: (H, W) float32 per-pixel score at the input size;
    mask: (H, W) bool where map >= threshold, when a threshold was given."""

    score: float
    map: np.ndarray
    threshold: float | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.score = float(self.score)
        self.map = np.asarray(self.map, dtype=np.float32)
        if self.threshold is not None and self.mask is None:
            self.mask = self.map >= self.threshold

    @property
    def is_anomalous(self) -> bool | None:
        return None if self.threshold is None else self.score >= self.threshold

    def to_json(self, include_map: bool = False, map_format: str = "png16") -> dict[str, Any]:
        """Score and map statistics; `include_map` adds the map itself as `map`: a 16-bit PNG
        scaled to the map's [min, max] (`encode_png16`), or with map_format="array" nested
        lists rounded to 5 decimals (large: one number a pixel)."""
        out: dict[str, Any] = {
            "type": "anomaly",
            "score": self.score,
            "map_shape": list(self.map.shape),
            "map_max": float(self.map.max()),
            "map_mean": float(self.map.mean()),
        }
        if self.threshold is not None:
            out["threshold"] = self.threshold
            out["is_anomalous"] = bool(self.is_anomalous)
            out["anomalous_fraction"] = float(self.mask.mean())
        if include_map:
            if map_format == "png16":
                out["map"] = encode_png16(self.map)
            elif map_format == "array":
                out["map"] = self.map.round(5).tolist()
            else:
                raise ValueError(f"map_format must be png16 or array, got {map_format!r}")
        return out

    def draw(self, image: Any, vmax: float | None = None) -> Image.Image:
        """Heatmap overlay: the map scaled to [0, vmax], 50% over the image. vmax defaults to
        twice the threshold (so the threshold sits mid-scale), else to the map's own maximum."""
        base = _as_pil(image).resize((self.map.shape[1], self.map.shape[0]))
        if vmax is None:
            vmax = 2 * self.threshold if self.threshold else float(self.map.max())
        top = max(float(vmax), 1e-6)
        heat = colormap_jet(self.map / top)
        blended = (0.5 * np.asarray(base, dtype=np.float32) + 0.5 * heat).astype(np.uint8)
        out = Image.fromarray(blended)
        if self.mask is not None and self.mask.any():
            edge = self.mask ^ _erode(self.mask)
            array = np.asarray(out).copy()
            array[edge] = (255, 255, 255)
            out = Image.fromarray(array)
        return out


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


@dataclass
class ImageResult:
    """Restored or generated images: uint8 (H, W, 3) arrays."""

    images: list[np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = [np.asarray(_as_pil(im)) for im in self.images]

    def to_json(self, include_images: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "image", "shapes": [list(im.shape) for im in self.images], "info": self.info}
        if include_images:
            out["images_png_base64"] = [png_base64(im) for im in self.images]
        return out

    def draw(self, image: Any = None) -> Image.Image:
        """The first image (side by side with the input when one is given)."""
        result = _as_pil(self.images[0])
        if image is None:
            return result
        source = _as_pil(image).resize(result.size)
        canvas = Image.new("RGB", (result.width * 2, result.height))
        canvas.paste(source, (0, 0))
        canvas.paste(result, (result.width, 0))
        return canvas



@dataclass
class Generation:
    """Generated images (uint8 (H, W, 3) arrays) with what made them: one seed per image,
    the sampling steps, wall-clock timings in seconds (e.g. {"sample": 0.8, "decode": 0.1})
    and the family's own `info` (class label, guidance, ...)."""

    images: list[np.ndarray]
    seeds: list[int] = field(default_factory=list)
    steps: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = [np.asarray(_as_pil(im)) for im in self.images]
        self.seeds = [int(s) for s in self.seeds]
        if self.seeds and len(self.seeds) != len(self.images):
            raise ValueError(f"Generation has {len(self.images)} images but {len(self.seeds)} seeds")
        self.steps = int(self.steps)
        self.timings = {str(k): float(v) for k, v in self.timings.items()}

    def to_json(self, include_images: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "generation",
            "count": len(self.images),
            "shapes": [list(im.shape) for im in self.images],
            "seeds": self.seeds,
            "steps": self.steps,
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "info": self.info,
        }
        if include_images:
            out["images_png_base64"] = [png_base64(im) for im in self.images]
        return out

    def draw(self, image: Any = None, columns: int | None = None) -> Image.Image:
        """The images in a grid (`columns` wide, near-square by default), each cell as large
        as the largest image; `image` is ignored (nothing was generated from it)."""
        if not self.images:
            return Image.new("RGB", (1, 1))
        count = len(self.images)
        columns = max(1, min(count, columns or math.ceil(math.sqrt(count))))
        rows = math.ceil(count / columns)
        cell_h = max(im.shape[0] for im in self.images)
        cell_w = max(im.shape[1] for im in self.images)
        canvas = Image.new("RGB", (columns * cell_w, rows * cell_h))
        for index, array in enumerate(self.images):
            canvas.paste(Image.fromarray(array), ((index % columns) * cell_w, (index // columns) * cell_h))
        return canvas

    def save(self, path: str | Path) -> list[Path]:
        """Each image as a PNG carrying its seed and steps in text chunks: PATH for one image,
        PATH-0.png, PATH-1.png, ... for several. Returns the paths written."""
        from PIL.PngImagePlugin import PngInfo

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = []
        for index, array in enumerate(self.images):
            target = path if len(self.images) == 1 else path.with_name(f"{path.stem}-{index}{path.suffix or '.png'}")
            meta = PngInfo()
            if self.seeds:
                meta.add_text("zoo:seed", str(self.seeds[index]))
            meta.add_text("zoo:steps", str(self.steps))
            Image.fromarray(array).save(target, format="PNG", pnginfo=meta)
            written.append(target)
        return written

@dataclass
class Detections:
    """boxes (N, 4) xyxy pixels, scores (N,), labels (N,) int, optional masks (N, H, W) bool."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not (len(self.boxes) == len(self.scores) == len(self.labels)):
            raise ValueError("boxes, scores and labels must have the same length")

    def label_name(self, label: int) -> str:
        return self.class_names[label] if self.class_names and 0 <= label < len(self.class_names) else str(label)

    def to_json(self, include_masks: bool = False) -> dict[str, Any]:
        """Boxes, scores, labels and class names; `include_masks` adds each detection's
        instance mask (when the model makes masks) as COCO compressed RLE (`mask_rle`)."""
        detections = [
            {"box": [round(float(v), 2) for v in box], "score": float(score), "label": int(label), "name": self.label_name(int(label))}
            for box, score, label in zip(self.boxes, self.scores, self.labels)
        ]
        if include_masks and self.masks is not None:
            for detection, mask in zip(detections, self.masks):
                detection["mask"] = mask_rle(mask)
        return {"type": "detections", "detections": detections}

    def draw(self, image: Any) -> Image.Image:
        out = _as_pil(image)
        if self.masks is not None and len(self.masks):
            array = np.asarray(out, dtype=np.float32)
            for i, mask in enumerate(self.masks):
                colour = PALETTE[int(self.labels[i]) % len(PALETTE)]
                array[mask.astype(bool)] = 0.5 * array[mask.astype(bool)] + 0.5 * colour
            out = Image.fromarray(array.astype(np.uint8))
        pen = ImageDraw.Draw(out)
        for box, score, label in zip(self.boxes, self.scores, self.labels):
            colour = tuple(int(c) for c in PALETTE[int(label) % len(PALETTE)])
            pen.rectangle([float(v) for v in box], outline=colour, width=2)
            pen.text((float(box[0]) + 2, float(box[1]) + 1), f"{self.label_name(int(label))} {score:.2f}", fill=colour)
        return out


@dataclass
class Segmentation:
    """kind: semantic | instance | panoptic. `segment_map` (H, W) int: segment id per pixel
    (semantic: class id); `segments`: [{"id", "label", "score", "is_thing"}]."""

    kind: str
    segment_map: np.ndarray
    segments: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("semantic", "instance", "panoptic"):
            raise ValueError(f"segmentation kind must be semantic, instance or panoptic, got {self.kind!r}")
        self.segment_map = np.asarray(self.segment_map, dtype=np.int32)

    def to_json(self, include_map: bool = False, include_masks: bool = False) -> dict[str, Any]:
        """The segments, each with its class name and area in pixels; `include_masks` adds
        each segment's mask (segment_map == id) as COCO compressed RLE (`mask_rle`),
        `include_map` the segment map as nested lists (large: one number a pixel)."""
        ids, counts = np.unique(self.segment_map, return_counts=True)
        areas = dict(zip(ids.tolist(), counts.tolist()))
        segments = []
        for segment in self.segments:
            entry = dict(segment)
            if self.class_names and "label" in entry and 0 <= int(entry["label"]) < len(self.class_names):
                entry["name"] = self.class_names[int(entry["label"])]
            if "id" in entry:
                entry["area"] = int(areas.get(int(entry["id"]), 0))
                if include_masks:
                    entry["mask"] = mask_rle(self.segment_map == int(entry["id"]))
            segments.append(entry)
        out: dict[str, Any] = {"type": "segmentation", "kind": self.kind, "shape": list(self.segment_map.shape), "segments": segments}
        if include_map:
            out["segment_map"] = self.segment_map.tolist()
        return out

    def draw(self, image: Any) -> Image.Image:
        base = np.asarray(_as_pil(image).resize(self.segment_map.shape[::-1]), dtype=np.float32)
        colours = PALETTE[np.mod(self.segment_map, len(PALETTE))].astype(np.float32)
        valid = (self.segment_map >= 0)[..., None]
        return Image.fromarray(np.where(valid, 0.5 * base + 0.5 * colours, base).astype(np.uint8))


@dataclass
class Grounding:
    """The region a referring expression names: box xyxy, optional polygon (K, 2) and mask (H, W)."""

    box: np.ndarray
    score: float = 1.0
    polygon: np.ndarray | None = None
    mask: np.ndarray | None = None
    expression: str = ""

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        self.score = float(self.score)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "grounding", "expression": self.expression, "box": self.box.round(2).tolist(), "score": self.score}
        if self.polygon is not None:
            out["polygon"] = np.asarray(self.polygon).round(2).tolist()
        return out

    def draw(self, image: Any) -> Image.Image:
        out = _as_pil(image)
        if self.mask is not None:
            array = np.asarray(out, dtype=np.float32)
            array[self.mask.astype(bool)] = 0.5 * array[self.mask.astype(bool)] + 0.5 * PALETTE[3]
            out = Image.fromarray(array.astype(np.uint8))
        pen = ImageDraw.Draw(out)
        pen.rectangle([float(v) for v in self.box], outline=(230, 25, 75), width=2)
        if self.polygon is not None and len(self.polygon) > 2:
            pen.polygon([tuple(map(float, p)) for p in self.polygon], outline=(255, 225, 25))
        return out


@dataclass
class Boxes3D:
    """3D boxes in camera coordinates: (N, 7) [x, y, z, l, w, h, yaw], scores, labels; `bev`
    an optional bird's-eye-view map (H, W) float."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    bev: np.ndarray | None = None
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 7)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "boxes3d",
            "boxes": [
                {"center": b[:3].round(3).tolist(), "size_lwh": b[3:6].round(3).tolist(), "yaw": round(float(b[6]), 4), "score": float(s), "label": int(l)}
                for b, s, l in zip(self.boxes, self.scores, self.labels)
            ],
        }

    def draw(self, image: Any) -> Image.Image:
        """The BEV map beside the image (boxes in the image need calibration: the family draws those)."""
        out = _as_pil(image)
        if self.bev is None:
            return out
        bev = Image.fromarray(colormap_jet(self.bev / max(1e-6, float(self.bev.max())))).resize((out.height, out.height))
        canvas = Image.new("RGB", (out.width + bev.width, out.height))
        canvas.paste(out, (0, 0))
        canvas.paste(bev, (out.width, 0))
        return canvas


RESULT_TYPES = {cls.__name__: cls for cls in (AnomalyResult, ImageResult, Generation, Detections, Segmentation, Grounding, Boxes3D)}

def json_includes(result_type: str) -> tuple[str, ...]:
    """What a result type's `to_json` adds on request: X for each `include_X=False` keyword
    (the REST and v2 `include` field: include=map -> to_json(include_map=True))."""
    import inspect

    parameters = inspect.signature(RESULT_TYPES[result_type].to_json).parameters.values()
    return tuple(p.name[len("include_"):] for p in parameters if p.name.startswith("include_") and p.default is False)


def include_kwargs(result_type: str, include: Any) -> dict[str, bool]:
    """`include` ("map,masks", or a list of names; None or "" for none) -> to_json keywords;
    ValueError naming what this result type offers."""
    if include is None:
        return {}
    names = include.split(",") if isinstance(include, str) else include
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"field 'include' must be comma-separated names or a list of names, got {include!r}")
    offered = json_includes(result_type)
    kwargs = {}
    for name in (n.strip() for n in names):
        if not name:
            continue
        if name not in offered:
            raise ValueError(f"field 'include': {result_type} has no {name!r} to include; it offers: {', '.join(offered) or 'nothing'}")
        kwargs[f"include_{name}"] = True
    return kwargs
