"""Procedural referring expressions over the shapes scenes, written as RefCOCO-style JSON.

Built on `zoo.data.shapes` (scenes, `RefSpec`, `resolve_spec`): every expression resolves to exactly
its object in its scene (uniqueness by construction). What this module adds for grounding:

- *twins*: with probability `twin_rate` a scene gets a copy of one of its things (same shape,
  colour and size, elsewhere), so neither twin can be named by attributes alone: a location
  ("on the left") or a relation ("left of the blue circle") is needed;
- several expressions per object (`expressions_per_object`): the shortest form that resolves, then
  longer valid forms drawn at random; each sentence record carries its `kind` (category, attribute,
  location, relation) and each ref `needs_relation` (no form without a relation resolves);
- box and polygon ground truth: COCO `bbox` and `segmentation` (polygons; RLE for rings, whose
  hole a polygon cannot express) in `refcoco/instances.json`; `mask_to_polygon` turns any mask
  into an N-vertex polygon (outer contour resampled by arc length) for vertex-based models.

`generate_referring_dataset` writes `images/`, `refcoco/instances.json`, `refcoco/refs.json` and
`meta.json`; `zoo.data.refcoco.RefCocoDataset` reads them, as it reads the real RefCOCO (converted
to JSON). `ReferringDataset` wraps that reader and adds the N-vertex polygon.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.data._draw import composite, polygons_coverage
from zoo.data._io import write_json, write_png
from zoo.data._rng import rng_for
from zoo.data.shapes import (
    COLOURS,
    LOCATIONS,
    RELATIONS,
    RefSpec,
    ShapeObject,
    ShapesScene,
    _thing_polygons,
    categories,
    generate_scene,
    resolve_spec,
)

GENERATOR = "zoo.data.referring"
GENERATOR_VERSION = 1
KINDS = ("category", "attribute", "location", "relation")


def spec_kind(spec: RefSpec) -> str:
    if spec.relation:
        return "relation"
    if spec.location:
        return "location"
    if spec.colour or spec.size:
        return "attribute"
    return "category"


def candidate_specs(index: int, objects: list[ShapeObject]) -> list[RefSpec]:
    """Every expression form for object `index`, shortest first (attributes, locations, relations)."""
    o = objects[index]
    others = [j for j in range(len(objects)) if j != index]
    specs = [RefSpec(o.shape), RefSpec(o.shape, o.colour), RefSpec(o.shape, o.colour, o.size)]
    specs += [RefSpec(o.shape, o.colour, location=loc) for loc in LOCATIONS]
    specs += [RefSpec(o.shape, o.colour, relation=(r, j)) for j in others for r in RELATIONS]
    specs += [RefSpec(o.shape, o.colour, o.size, relation=(r, j)) for j in others for r in RELATIONS]
    return specs


def valid_specs(index: int, objects: list[ShapeObject], size: int) -> list[RefSpec]:
    return [s for s in candidate_specs(index, objects) if resolve_spec(s, objects, size) == [index]]


def add_twin(scene: ShapesScene, rng: np.random.Generator, size: int) -> bool:
    """Paint a copy (shape, colour, size) of a random thing near it, keeping every thing at least
    half visible (as the shapes generator does); False if no place was found."""
    if not scene.objects:
        return False
    src = scene.objects[int(rng.integers(len(scene.objects)))]
    areas = [float(o.mask.sum()) for o in scene.objects]
    for _ in range(40):
        # near the source (within 15 % of the side per axis), so that no location word ("on the
        # left": a 15 % margin) tells the twins apart: a relation to a third thing has to
        cx, cy = np.clip(np.asarray(src.center) + rng.uniform(-0.15, 0.15, 2) * size, src.radius, size - src.radius)
        angle = float(rng.uniform(0, 2 * np.pi))
        polys, holes = _thing_polygons(src.shape, cx, cy, src.radius, angle)
        local, where = polygons_coverage((size, size), polys, holes)
        alpha = np.zeros((size, size), np.float32)
        alpha[where] = local
        mask = alpha >= 0.5
        if mask.sum() < 12 or any((o.mask & ~mask).sum() < 0.5 * a for o, a in zip(scene.objects, areas)):
            continue
        for o in scene.objects:
            o.mask = o.mask & ~mask
        shade = np.asarray(COLOURS[src.colour], np.float32) * float(rng.uniform(0.9, 1.05))
        image = composite(scene.image.astype(np.float32) / 255.0, alpha, np.clip(shade, 0, 1))
        scene.image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        scene.objects.append(ShapeObject(src.shape, src.colour, src.size, (float(cx), float(cy)), src.radius, angle, mask))
        return True
    return False


def referring_scene(seed: int, index: int, image_size: int = 96, split: str = "train", twin_rate: float = 0.5,
                    min_objects: int = 2, max_objects: int = 5) -> ShapesScene:
    """A shapes scene, with a twin added with probability `twin_rate` (its own random stream)."""
    scene = generate_scene(seed, index, image_size, min_objects, max_objects, split=split)
    rng = rng_for(seed, "referring", split, index)
    if rng.random() < twin_rate:
        add_twin(scene, rng, image_size)
    return scene


def scene_expressions(scene: ShapesScene, size: int, rng: np.random.Generator, per_object: int = 2) -> list[dict[str, Any]]:
    """Per object with at least one valid form: {index, sentences: [(text, kind)], needs_relation}."""
    out = []
    for i in range(len(scene.objects)):
        valid = valid_specs(i, scene.objects, size)
        if not valid:
            continue
        chosen = [valid[0]]
        rest = valid[1:]
        while rest and len(chosen) < per_object:
            chosen.append(rest.pop(int(rng.integers(len(rest)))))
        out.append({"index": i, "sentences": [(s.text(scene.objects), spec_kind(s)) for s in chosen],
                    "needs_relation": spec_kind(valid[0]) == "relation"})
    return out


def generate_referring_dataset(root: str | Path, splits: dict[str, int] | None = None, seed: int = 0, image_size: int = 96,
                               twin_rate: float = 0.5, expressions_per_object: int = 2, min_objects: int = 2,
                               max_objects: int = 5) -> dict[str, str]:
    """Write `images/{split}_{index:06d}.png`, `refcoco/instances.json` (COCO; boxes, polygon / RLE
    segmentations), `refcoco/refs.json` (RefCOCO-style refs, `split` per ref; sentence records carry
    `kind`, refs `needs_relation`) and `meta.json` under `root`. Existing `images/`, `refcoco/` are replaced."""
    from zoo.data.coco import write_coco_detection
    from zoo.data.refcoco import make_sentence, write_refcoco

    root = Path(root)
    splits = splits or {"train": 64, "val": 16}
    for sub in ("images", "refcoco"):
        if (root / sub).exists():
            shutil.rmtree(root / sub)
    thing_cats = [{k: c[k] for k in ("id", "name", "supercategory")} for c in categories() if c["isthing"]]
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    refs: list[dict[str, Any]] = []
    image_id, ann_id, sent_id = 1, 1, 0
    for split, count in splits.items():
        for index in range(count):
            scene = referring_scene(seed, index, image_size, split, twin_rate, min_objects, max_objects)
            rng = rng_for(seed, "referring-text", split, index)
            name = f"{split}_{index:06d}.png"
            write_png(root / "images" / name, scene.image)
            images.append({"id": image_id, "file_name": name, "width": image_size, "height": image_size})
            first_ann = ann_id
            for obj in scene.objects:
                anns.append({"id": ann_id, "image_id": image_id, "category_id": obj.category_id, "mask": obj.mask})
                ann_id += 1
            for entry in scene_expressions(scene, image_size, rng, expressions_per_object):
                obj = scene.objects[entry["index"]]
                sentences = []
                for text, kind in entry["sentences"]:
                    sentences.append({**make_sentence(sent_id, text), "kind": kind})
                    sent_id += 1
                refs.append({"ref_id": len(refs), "ann_id": first_ann + entry["index"], "image_id": image_id,
                             "category_id": obj.category_id, "split": split, "file_name": name, "sentences": sentences,
                             "needs_relation": entry["needs_relation"]})
            image_id += 1
    paths = {"root": str(root), "images": str(root / "images")}
    info = {"description": f"{GENERATOR} v{GENERATOR_VERSION}", "seed": seed}
    paths["instances"] = str(write_coco_detection(root / "refcoco" / "instances.json", images, anns, thing_cats, info))
    paths["refs"] = str(write_refcoco(root / "refcoco" / "refs.json", refs))
    write_json(root / "meta.json", {"generator": GENERATOR, "version": GENERATOR_VERSION, "seed": seed, "image_size": image_size,
                                    "splits": dict(splits), "twin_rate": twin_rate, "expressions_per_object": expressions_per_object,
                                    "min_objects": min_objects, "max_objects": max_objects})
    return paths


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def mask_to_polygon(mask: np.ndarray, vertices: int) -> np.ndarray:
    """(vertices, 2) float32 (x, y) pixel-edge coordinates: the outer contour of the mask's largest
    part (holes filled), resampled at equal arc length, starting at its topmost (then leftmost) point,
    oriented with positive shoelace area in image coordinates (clockwise on screen). An empty mask
    gives `vertices` copies of (0, 0)."""
    from scipy import ndimage
    from skimage import measure

    mask = ndimage.binary_fill_holes(np.asarray(mask, dtype=bool))
    if not mask.any():
        return np.zeros((vertices, 2), np.float32)
    padded = np.pad(mask.astype(np.float32), 1)
    contours = measure.find_contours(padded, 0.5)
    contour = max(contours, key=len)  # (row, col) in padded pixel-centre units
    poly = np.stack([contour[:, 1] - 1 + 0.5, contour[:, 0] - 1 + 0.5], axis=1)
    if np.allclose(poly[0], poly[-1]):
        poly = poly[:-1]
    if _polygon_area(poly) < 0:
        poly = poly[::-1]
    closed = np.concatenate([poly, poly[:1]], axis=0)
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0, cum[-1], vertices, endpoint=False)
    xs = np.interp(targets, cum, closed[:, 0])
    ys = np.interp(targets, cum, closed[:, 1])
    out = np.stack([xs, ys], axis=1)
    start = int(np.lexsort((out[:, 0], out[:, 1]))[0])  # topmost, then leftmost
    return np.roll(out, -start, axis=0).astype(np.float32)


class ReferringDataset(torch.utils.data.Dataset):
    """`RefCocoDataset` items plus "polygon" (vertices, 2) float32 pixels of the (resized) image,
    and "needs_relation" / "kind" where the refs carry them (the procedural data does)."""

    def __init__(self, root: str | Path, split: str | None = None, image_size: int | None = None, vertices: int = 24,
                 refs_file: str | Path | None = None, instances_file: str | Path | None = None, image_root: str | Path | None = None):
        from zoo.data.refcoco import RefCocoDataset

        root = Path(root)
        self.base = RefCocoDataset(image_root or root / "images", refs_file or root / "refcoco" / "refs.json",
                                   instances_file or root / "refcoco" / "instances.json", split=split, image_size=image_size)
        self.vertices = vertices

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        ref_i, sent_i = self.base.items[index]
        ref = self.base.refs[ref_i]
        item["polygon"] = torch.from_numpy(mask_to_polygon(item["mask"].numpy(), self.vertices))
        item["needs_relation"] = bool(ref.get("needs_relation", False))
        item["kind"] = str(ref["sentences"][sent_i].get("kind", ""))
        return item


def polygon_to_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside the (K, 2) (x, y) pixel-edge polygon."""
    from skimage.draw import polygon2mask

    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(poly) < 3 or not np.isfinite(poly).all():
        return np.zeros((height, width), bool)
    return polygon2mask((height, width), np.stack([poly[:, 1] - 0.5, poly[:, 0] - 0.5], axis=1))
