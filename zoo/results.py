"""Task result types shared by the CLI, the server and the demos.

Each holds plain attributes (numpy arrays, Python numbers), serialises with `to_json()`
(arrays as nested lists, large maps as PNG-free summaries unless asked) and draws itself
over the input image with `draw(image) -> PIL.Image`.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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

    def draw(self, image: Any, vmax: float | None = None, scale: int = 1) -> Image.Image:
        """Heatmap overlay: the map scaled to [0, vmax], 50% over the image. vmax defaults to
        twice the threshold (so the threshold sits mid-scale), else to the map's own maximum.
        scale: the overlay at that whole multiple of the map's size (nearest)."""
        scale = _check_scale(scale)
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
        return _upscale(out, scale)


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


# -- drawing helpers: labels that stay legible on small images, legends -----------------------
@functools.lru_cache(maxsize=16)
def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A bold sans font `size` px high: DejaVu (Debian's fonts-dejavu-core) where installed, else Pillow's own."""
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, got {scale!r}")
    return int(scale)


def _upscale(image: Image.Image, scale: int) -> Image.Image:
    """`scale` times larger, pixels kept sharp (nearest), so what is drawn on it next is crisp."""
    return image if scale == 1 else image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def label_text_size(width: int, height: int) -> int:
    """Label text height in px on a drawing of this size: 1/24 of its shorter side, kept
    within 10..28 px (readable on a 128-px image, not shouting on a large one)."""
    return int(min(28, max(10, round(min(width, height) / 24))))


def _contrast(colour: Any) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `colour` (Rec. 601 luma)."""
    r, g, b = (int(c) for c in colour[:3])
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _text_box(font: Any, text: str) -> tuple[int, int, int, int]:
    """(left, top, width, height) of `text` as `font` draws it at the origin."""
    left, top, right, bottom = font.getbbox(text)
    return left, top, right - left, bottom - top


def draw_label(pen: ImageDraw.ImageDraw, x: float, y: float, text: str, colour: Any, size: int) -> None:
    """`text` on a filled tag of `colour` with a dark rim, in black or white for contrast: its
    bottom-left at (x, y) (just above a box's corner) when there is room, else just below
    y; always kept inside the image."""
    font = label_font(size)
    left, top, width, height = _text_box(font, text)
    pad = max(1, size // 6)
    tag_w, tag_h = width + 2 * pad, height + 2 * pad
    image_w, image_h = pen.im.size
    tx = int(min(max(0, x), max(0, image_w - tag_w)))
    ty = int(y - tag_h if y - tag_h >= 0 else min(y, max(0, image_h - tag_h)))
    fill = tuple(int(c) for c in colour[:3])
    pen.rectangle([tx, ty, tx + tag_w - 1, ty + tag_h - 1], fill=fill, outline=(32, 32, 32))
    pen.text((tx + pad - left, ty + pad - top), text, fill=_contrast(fill), font=font)


def draw_legend(entries: list[tuple[Any, str]], width: int, size: int) -> Image.Image:
    """A white panel `width` px wide listing (colour, name) entries as swatch + name, left to
    right, wrapping onto as many lines as they need."""
    font = label_font(size)
    pad = max(2, size // 3)
    row_h = size + 2 * pad
    items = [(colour, name, size + pad + _text_box(font, name)[2] + 2 * pad) for colour, name in entries]
    places, x, y = [], pad, pad
    for _, _, item_w in items:
        if x > pad and x + item_w > width:
            x, y = pad, y + row_h
        places.append((x, y))
        x += item_w
    panel = Image.new("RGB", (max(width, max(item_w for *_, item_w in items) + 2 * pad), y + row_h + pad), (255, 255, 255))
    pen = ImageDraw.Draw(panel)
    for (colour, name, _), (x, y) in zip(items, places):
        pen.rectangle([x, y + pad, x + size - 1, y + pad + size - 1], fill=tuple(int(c) for c in colour[:3]), outline=(32, 32, 32))
        left, top, _, text_h = _text_box(font, name)
        pen.text((x + size + pad - left, y + pad + (size - text_h) // 2 - top), name, fill=(0, 0, 0), font=font)
    return panel


@dataclass
class ImageResult:
    """Restored or generated images: uint8 (H, W, 3) arrays. `boxes` (N, 4) xyxy pixels of the first image:
    the regions that were restored (e.g. the faces found in a photo), outlined by `draw`."""

    images: list[np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = [np.asarray(_as_pil(im)) for im in self.images]
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)

    def to_json(self, include_images: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "image", "shapes": [list(im.shape) for im in self.images], "info": self.info}
        if self.boxes is not None:
            out["boxes"] = np.round(self.boxes.astype(np.float64), 2).tolist()
        if include_images:
            out["images_png_base64"] = [png_base64(im) for im in self.images]
        return out

    def draw(self, image: Any = None) -> Image.Image:
        """The first image, its `boxes` outlined (side by side with the input when one is given: before / after)."""
        result = _as_pil(self.images[0])
        if self.boxes is not None and len(self.boxes):
            result = result.copy()
            pen = ImageDraw.Draw(result)
            width = max(1, min(result.size) // 128)
            for i, box in enumerate(self.boxes):
                pen.rectangle([float(v) for v in box], outline=tuple(int(c) for c in PALETTE[i % len(PALETTE)]), width=width)
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
    and the family's own `info` (class label, guidance, ...). `condition`: the image the generation
    followed (a control image, uint8 (H, W, 3)), if any; `draw` shows it first, beside the images."""

    images: list[np.ndarray]
    seeds: list[int] = field(default_factory=list)
    steps: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    condition: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = [np.asarray(_as_pil(im)) for im in self.images]
        if self.condition is not None:
            self.condition = np.asarray(_as_pil(self.condition))
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
            if self.condition is not None:
                out["condition_png_base64"] = png_base64(self.condition)
        return out

    def draw(self, image: Any = None, columns: int | None = None, scale: int = 1) -> Image.Image:
        """The images in a grid (`columns` wide, near-square by default; with a condition, one row
        that starts with it), each cell as large
        as the largest image; `image` is ignored (nothing was generated from it). scale: each
        image at that whole multiple of its size (nearest; the demo shows 32-px samples so),
        the cells then 2 px apart; at 1 the grid holds the images' own pixels."""
        scale = _check_scale(scale)
        if not self.images:
            return Image.new("RGB", (1, 1))
        if self.condition is not None:  # the condition, then the images, in one row
            shown = Generation([self.condition, *self.images])
            return shown.draw(columns=len(shown.images), scale=scale)
        count = len(self.images)
        columns = max(1, min(count, columns or math.ceil(math.sqrt(count))))
        rows = math.ceil(count / columns)
        cell_h = max(im.shape[0] for im in self.images) * scale
        cell_w = max(im.shape[1] for im in self.images) * scale
        gap = 2 if scale > 1 and count > 1 else 0
        canvas = Image.new("RGB", (columns * (cell_w + gap) - gap, rows * (cell_h + gap) - gap), (255, 255, 255) if gap else (0, 0, 0))
        for index, array in enumerate(self.images):
            canvas.paste(_upscale(Image.fromarray(array), scale), ((index % columns) * (cell_w + gap), (index // columns) * (cell_h + gap)))
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

    def draw(self, image: Any, scale: int = 1) -> Image.Image:
        """Masks tinted, boxes outlined in their class colour, each tagged "name score" on a
        filled label sized to the drawing (`label_text_size`). scale: draw at that whole
        multiple of the image's size (nearest), so labels on a small image stay readable."""
        scale = _check_scale(scale)
        out = _upscale(_as_pil(image), scale)
        if self.masks is not None and len(self.masks):
            array = np.asarray(out, dtype=np.float32)
            for i, mask in enumerate(self.masks):
                colour = PALETTE[int(self.labels[i]) % len(PALETTE)]
                region = np.asarray(mask, dtype=bool)
                if scale > 1:
                    region = region.repeat(scale, axis=0).repeat(scale, axis=1)
                array[region] = 0.5 * array[region] + 0.5 * colour
            out = Image.fromarray(array.astype(np.uint8))
        pen = ImageDraw.Draw(out)
        size = label_text_size(out.width, out.height)
        width = max(2, size // 6)
        for box, label in zip(self.boxes, self.labels):
            colour = tuple(int(c) for c in PALETTE[int(label) % len(PALETTE)])
            x0, y0, x1, y1 = (float(v) * scale for v in box)
            pen.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=colour, width=width)
        for i in np.argsort(self.scores, kind="stable"):  # tags over every box, the best one on top
            box, label = self.boxes[i], int(self.labels[i])
            draw_label(pen, float(box[0]) * scale, float(box[1]) * scale, f"{self.label_name(label)} {self.scores[i]:.2f}", PALETTE[label % len(PALETTE)], size)
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

    def draw(self, image: Any, scale: int = 1, legend: bool = False) -> Image.Image:
        """Each segment tinted in its colour (PALETTE by segment id; semantic ids are class
        ids), at the map's size times `scale` (nearest). legend: a panel underneath naming
        each colour's class (`legend_entries`)."""
        scale = _check_scale(scale)
        base = np.asarray(_as_pil(image).resize(self.segment_map.shape[::-1]), dtype=np.float32)
        colours = PALETTE[np.mod(self.segment_map, len(PALETTE))].astype(np.float32)
        valid = (self.segment_map >= 0)[..., None]
        out = _upscale(Image.fromarray(np.where(valid, 0.5 * base + 0.5 * colours, base).astype(np.uint8)), scale)
        entries = self.legend_entries() if legend else []
        if not entries:
            return out
        panel = draw_legend(entries, out.width, label_text_size(out.width, out.height))
        canvas = Image.new("RGB", (max(out.width, panel.width), out.height + panel.height), (255, 255, 255))
        canvas.paste(out, (0, 0))
        canvas.paste(panel, (0, out.height))
        return canvas

    def legend_entries(self) -> list[tuple[np.ndarray, str]]:
        """(colour, name) per segment present in the map, in id order: the class name (a
        number where the class names are unknown), numbered where a class has several segments."""
        present = np.unique(self.segment_map[self.segment_map >= 0])
        labels = {int(s["id"]): int(s.get("label", s["id"])) for s in self.segments if "id" in s}
        names = []
        class_names = self.class_names or []
        for seg_id in present.tolist():
            label = labels.get(seg_id, seg_id if self.kind == "semantic" else -1)
            known = 0 <= label < len(class_names)
            names.append(class_names[label] if known else (f"class {label}" if label >= 0 else f"segment {seg_id}"))
        counts: dict[str, int] = {}
        numbered = []
        for name in names:
            counts[name] = counts.get(name, 0) + 1
            numbered.append(f"{name} {counts[name]}" if names.count(name) > 1 else name)
        return [(PALETTE[seg_id % len(PALETTE)], name) for seg_id, name in zip(present.tolist(), numbered)]


@dataclass
class Grounding:
    """The region a referring expression names: box xyxy, optional polygon (K, 2) and mask (H, W);
    to_json writes the mask as COCO compressed RLE (`mask_rle`)."""

    box: np.ndarray
    score: float = 1.0
    polygon: np.ndarray | None = None
    mask: np.ndarray | None = None
    expression: str = ""

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        self.score = float(self.score)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "grounding", "expression": self.expression, "box": self.box.astype(np.float64).round(2).tolist(), "score": self.score}
        if self.polygon is not None:
            out["polygon"] = np.asarray(self.polygon, dtype=np.float64).round(2).tolist()  # float64: float32 rounding prints 17.3199...
        if self.mask is not None:
            out["mask"] = mask_rle(self.mask)
        return out

    def draw(self, image: Any, scale: int = 1) -> Image.Image:
        """Mask tinted, box and polygon outlined, the expression as a tag on the box.
        scale: draw at that whole multiple of the image's size (nearest)."""
        scale = _check_scale(scale)
        out = _upscale(_as_pil(image), scale)
        if self.mask is not None:
            region = np.asarray(self.mask, dtype=bool)
            if scale > 1:
                region = region.repeat(scale, axis=0).repeat(scale, axis=1)
            array = np.asarray(out, dtype=np.float32)
            array[region] = 0.5 * array[region] + 0.5 * PALETTE[3]
            out = Image.fromarray(array.astype(np.uint8))
        pen = ImageDraw.Draw(out)
        size = label_text_size(out.width, out.height)
        x0, y0, x1, y1 = (float(v) * scale for v in self.box)
        pen.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=(230, 25, 75), width=max(2, size // 6))
        if self.polygon is not None and len(self.polygon) > 2:
            pen.polygon([(float(p[0]) * scale, float(p[1]) * scale) for p in self.polygon], outline=(255, 225, 25))
        if self.expression:
            draw_label(pen, x0, y0, self.expression, (230, 25, 75), size)
        return out


@dataclass
class Boxes3D:
    """3D boxes in KITTI camera coordinates (x right, y down, z forward): (N, 7) [x, y, z, l, w, h, yaw]
    with (x, y, z) the bottom centre (KITTI's location) and yaw KITTI's rotation_y; scores, labels.
    `bev` an optional bird's-eye-view map, (H, W) or per class (C, H, W) in [0, 1], rows z far -> near,
    columns x left -> right over `bev_extent` (x_min, x_max, z_min, z_max) metres; `calib` the (3, 4) P2
    of the input image (boxes are drawn into the image only with it)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    bev: np.ndarray | None = None
    class_names: list[str] | None = None
    calib: np.ndarray | None = None
    bev_extent: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 7)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.calib is not None:
            self.calib = np.asarray(self.calib, dtype=np.float64).reshape(3, 4)

    def _name(self, label: int) -> str:
        return self.class_names[label] if self.class_names and 0 <= label < len(self.class_names) else str(label)

    def _corners(self) -> np.ndarray:
        from zoo.data.kitti import box_corners

        return box_corners(self.boxes) if len(self.boxes) else np.zeros((0, 8, 3))

    def to_kitti(self) -> str:
        """KITTI result lines `type trunc occ alpha x1 y1 x2 y2 h w l x y z ry score` (2D box from
        the projection through `calib`, -1s without it)."""
        from zoo.data.kitti import project

        lines = []
        for b, s, lab, corners in zip(self.boxes, self.scores, self.labels, self._corners()):
            x, y, z, length, width, height, ry = (float(v) for v in b)
            alpha = (ry - math.atan2(x, z) + math.pi) % (2 * math.pi) - math.pi
            box2d = [-1.0] * 4
            if self.calib is not None and corners[:, 2].min() > 0.1:
                pix = project(corners, self.calib)
                box2d = [float(pix[:, 0].min()), float(pix[:, 1].min()), float(pix[:, 0].max()), float(pix[:, 1].max())]
            fields = [self._name(int(lab)).replace(" ", "_"), "-1", "-1", f"{alpha:.2f}", *(f"{v:.2f}" for v in box2d),
                      f"{height:.2f}", f"{width:.2f}", f"{length:.2f}", f"{x:.2f}", f"{y:.2f}", f"{z:.2f}", f"{ry:.2f}", f"{float(s):.4f}"]
            lines.append(" ".join(fields))
        return "".join(line + "\n" for line in lines)

    def to_json(self, include_bev: bool = False) -> dict[str, Any]:
        """Boxes (center = the geometric centre, location = KITTI's bottom centre), the KITTI text
        (`kitti`), class names; `include_bev` adds the BEV map(s) as 16-bit PNGs."""
        out: dict[str, Any] = {
            "type": "boxes3d",
            "boxes": [
                {"center": [round(float(b[0]), 3), round(float(b[1] - b[5] / 2), 3), round(float(b[2]), 3)],
                 "location": b[:3].round(3).tolist(), "size_lwh": b[3:6].round(3).tolist(), "yaw": round(float(b[6]), 4),
                 "score": float(s), "label": int(lab), "class_name": self._name(int(lab))}
                for b, s, lab in zip(self.boxes.astype(np.float64), self.scores, self.labels)
            ],
            "kitti": self.to_kitti(),
            "class_names": self.class_names,
            "bev_extent": list(self.bev_extent) if self.bev_extent is not None else None,
        }
        if include_bev and self.bev is not None:
            maps = self.bev if self.bev.ndim == 3 else self.bev[None]
            out["bev"] = [encode_png16(m) for m in maps]
        return out

    def _bev_panel(self, size: int) -> Image.Image:
        bev = np.asarray(self.bev, dtype=np.float32) if self.bev is not None else np.zeros((1, 64, 64), np.float32)
        bev = bev[None] if bev.ndim == 2 else bev
        if len(bev) == 1:
            rgb = colormap_jet(bev[0] / max(1e-6, float(bev[0].max())))
        else:  # per class: each class its palette colour, weighted by its probability, over dark grey
            weight = np.clip(bev, 0, 1)[..., None]
            colours = PALETTE[np.arange(len(bev)) % len(PALETTE)].astype(np.float32)[:, None, None]
            rgb = (40 + (weight * (colours - 40)).max(0)).clip(0, 255).astype(np.uint8)
        panel = Image.fromarray(rgb).resize((size, size), Image.NEAREST)
        if self.bev_extent is None:
            return panel
        x0, x1, z0, z1 = self.bev_extent
        pen = ImageDraw.Draw(panel)
        to_px = lambda x, z: ((x - x0) / (x1 - x0) * size, (z1 - z) / (z1 - z0) * size)  # noqa: E731
        from zoo.metrics.detection3d import footprints

        for foot, lab in zip(footprints(self.boxes), self.labels):
            colour = tuple(int(c) for c in PALETTE[int(lab) % len(PALETTE)])
            pts = [to_px(x, z) for x, z in foot]
            pen.polygon(pts, outline=(255, 255, 255))
            pen.line([pts[0], pts[3]], fill=colour, width=2)
        ex, ez = to_px(0.0, z0)
        pen.polygon([(ex, ez - 6), (ex - 4, ez), (ex + 4, ez)], fill=(255, 255, 255))
        return panel

    def draw(self, image: Any) -> Image.Image:
        """The image with the boxes projected into it (when `calib` is known) beside the BEV plot:
        segmentation colours and box footprints, ego at the bottom centre."""
        out = _as_pil(image)
        if self.calib is not None and len(self.boxes):
            from zoo.data.kitti import project

            pen = ImageDraw.Draw(out)
            edges = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))
            for corners, lab in zip(self._corners(), self.labels):
                if corners[:, 2].min() <= 0.1:
                    continue
                pix = project(corners, self.calib)
                colour = tuple(int(c) for c in PALETTE[int(lab) % len(PALETTE)])
                for i, j in edges:
                    pen.line([tuple(pix[i]), tuple(pix[j])], fill=colour, width=2 if (i, j) == (0, 1) else 1)
        if self.bev is None and self.bev_extent is None:
            return out
        bev = self._bev_panel(out.height)
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
