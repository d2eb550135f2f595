"""Procedural "shapes scenes" for detection, segmentation and visual grounding, deterministic by seed.

A scene is a landscape of *stuff* (sky above a wavy horizon; ground and/or water below,
each with its own texture, plus unlabelled clutter streaks) with a few *things* on top:
coloured shapes (circle, square, triangle, star, ring, hexagon) in two sizes, rotated,
partly occluding one another. Per scene we know exactly:

- instance masks (the visible part of each thing), boxes and classes (COCO detection);
- a panoptic segmentation: every pixel belongs to one stuff or thing segment (COCO panoptic);
- one referring expression per thing that picks it out uniquely within the scene, e.g.
  "the small red triangle left of the blue circle" (RefCOCO-style grounding).

Expressions are built from a structured `RefSpec` (shape, colour, size, location, relation)
and `resolve_spec` evaluates a spec against a scene; the generator keeps only specs that
resolve to exactly their object, so uniqueness is by construction and testable.

`generate_shapes_dataset` writes everything in the real formats (COCO instances, COCO
panoptic, RefCOCO-style refs), which `zoo.data.coco` and `zoo.data.refcoco` read back: the
same reader path serves synthetic and real data. Each image has its own random stream keyed
by (seed, split, index), so more training images never change the validation images.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data._draw import composite, ellipse_polygon, polygons_coverage, polyline_alpha, rectangle_polygon, regular_polygon, smooth_noise
from zoo.data._io import write_json, write_png
from zoo.data._rng import rng_for

GENERATOR = "zoo.data.shapes"
GENERATOR_VERSION = 1

THING_CLASSES = ("circle", "square", "triangle", "star", "ring", "hexagon")
STUFF_CLASSES = ("sky", "ground", "water")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.20, 0.75),
    "white": (0.96, 0.96, 0.96),
}
# Radii as fractions of the image side; the two ranges are disjoint so "small"/"big" is never ambiguous.
SIZES: dict[str, tuple[float, float]] = {"small": (0.055, 0.08), "big": (0.12, 0.17)}
RELATIONS = ("left of", "right of", "above", "below")
LOCATIONS = ("on the left", "on the right", "at the top", "at the bottom")


def categories() -> list[dict[str, Any]]:
    """COCO panoptic categories: things 1..6 (isthing 1), stuff 7..9 (isthing 0)."""
    cats = [{"id": i + 1, "name": n, "supercategory": "shape", "isthing": 1} for i, n in enumerate(THING_CLASSES)]
    cats += [{"id": len(THING_CLASSES) + i + 1, "name": n, "supercategory": "stuff", "isthing": 0} for i, n in enumerate(STUFF_CLASSES)]
    palette = [(220, 20, 60), (0, 128, 0), (0, 0, 230), (255, 200, 0), (160, 32, 240), (128, 128, 128),
               (135, 206, 235), (139, 90, 43), (0, 105, 148)]
    for cat, colour in zip(cats, palette):
        cat["color"] = list(colour)
    return cats


def category_id(name: str) -> int:
    """COCO category id of a thing or stuff class name."""
    return {c["name"]: c["id"] for c in categories()}[name]


@dataclass
class ShapeObject:
    """One thing in a scene; `mask` is its visible part (after occlusion)."""

    shape: str
    colour: str
    size: str
    center: tuple[float, float]
    radius: float
    angle: float
    mask: np.ndarray = field(repr=False)

    @property
    def category_id(self) -> int:
        return category_id(self.shape)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """COCO [x, y, w, h] of the visible mask in pixel-edge coordinates."""
        ys, xs = np.nonzero(self.mask)
        return float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())

    @property
    def box_center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2, y + h / 2


@dataclass(frozen=True)
class RefSpec:
    """A referring expression as attributes: `shape` always, the rest optional.

    `relation` is (one of RELATIONS, index of the reference object); the reference object is
    named by its colour and shape, which must identify it on their own.
    """

    shape: str
    colour: str | None = None
    size: str | None = None
    location: str | None = None
    relation: tuple[str, int] | None = None

    def text(self, objects: list[ShapeObject]) -> str:
        words = ["the"] + [w for w in (self.size, self.colour) if w] + [self.shape]
        if self.location:
            words.append(self.location)
        if self.relation:
            rel, ref = self.relation
            words += [rel, "the", objects[ref].colour, objects[ref].shape]
        return " ".join(words)


@dataclass
class ShapesScene:
    """A generated scene: image (H, W, 3) uint8, things, panoptic ids (H, W) int32 (0 = void,
    never used here), segments_info ([{id, category_id, isthing}]) and one spec per thing
    (None where no unique expression exists)."""

    image: np.ndarray
    objects: list[ShapeObject]
    panoptic: np.ndarray
    segments_info: list[dict[str, Any]]
    specs: list[RefSpec | None]

    def expressions(self) -> list[str | None]:
        return [s.text(self.objects) if s is not None else None for s in self.specs]


# ------------------------------------------------------------------ geometry of the things


def _star(cx: float, cy: float, r: float, angle: float, points: int = 5) -> np.ndarray:
    t = angle - np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, r, 0.45 * r)
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def _thing_polygons(shape: str, cx: float, cy: float, r: float, angle: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(polygons, holes) of a thing with circumradius about r."""
    if shape == "circle":
        return [ellipse_polygon(cx, cy, r, r)], []
    if shape == "ring":
        return [ellipse_polygon(cx, cy, r, r)], [ellipse_polygon(cx, cy, 0.55 * r, 0.55 * r)]
    if shape == "square":
        return [rectangle_polygon(cx, cy, 1.5 * r, 1.5 * r, angle)], []
    if shape == "triangle":
        return [regular_polygon(cx, cy, 1.15 * r, 3, angle)], []
    if shape == "hexagon":
        return [regular_polygon(cx, cy, r, 6, angle)], []
    if shape == "star":
        return [_star(cx, cy, 1.15 * r, angle)], []
    raise ValueError(f"unknown shape {shape!r}")


# ------------------------------------------------------------------ stuff background


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Textured landscape (H, W, 3) float32 and its stuff-class map (H, W) of STUFF_CLASSES indices."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    horizon = size * rng.uniform(0.3, 0.55) + size * 0.04 * np.sin(xx[0] / size * rng.uniform(3, 9) + rng.uniform(0, 6.3))
    stuff = np.where(yy < horizon[None, :], 0, 1).astype(np.int64)
    layout = rng.choice(["ground", "water", "split"])
    if layout == "water":
        stuff[stuff == 1] = 2
    elif layout == "split":  # water on one side of a slanted shore
        shore = size * rng.uniform(0.3, 0.7) + (yy - size / 2) * rng.uniform(-0.5, 0.5)
        water = (xx > shore) if rng.random() < 0.5 else (xx < shore)
        stuff[(stuff == 1) & water] = 2
    sky = np.array([0.55, 0.75, 0.95], np.float32) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    ground = np.array([0.45, 0.35, 0.2], np.float32) + rng.uniform(-0.06, 0.06, 3).astype(np.float32)
    water_c = np.array([0.1, 0.3, 0.5], np.float32) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    image = np.empty((size, size, 3), np.float32)
    grad = (1.0 - 0.25 * yy / size)[..., None]
    image[:] = sky * grad  # sky brightens upwards
    tex = smooth_noise(rng, (size, size), sigma=2.0)[..., None]
    image = np.where((stuff == 1)[..., None], ground + 0.06 * tex, image)
    streaks = smooth_noise(rng, (size, size), sigma=1.0)
    streaks = np.repeat(streaks.mean(axis=1, keepdims=True), size, axis=1)[..., None]  # horizontal ripples
    image = np.where((stuff == 2)[..., None], water_c + 0.05 * streaks, image)
    # clutter: unlabelled thin streaks (twigs, reeds, wisps) belong to the stuff under them
    for _ in range(rng.integers(2, 6)):
        p0 = rng.uniform(0, size, 2)
        pts = p0 + np.cumsum(rng.normal(0, size * 0.05, (4, 2)), axis=0)
        alpha = polyline_alpha((size, size), pts, width=rng.uniform(0.6, 1.4)) * rng.uniform(0.3, 0.6)
        image = composite(image, alpha, image * 0.6)
    return np.clip(image, 0, 1), stuff


# ------------------------------------------------------------------ referring expressions


def _relation_holds(rel: str, a: ShapeObject, b: ShapeObject) -> bool:
    """a `rel` b, by a's box centre against b's box edges (clear cases only)."""
    ax, ay = a.box_center
    bx, by, bw, bh = b.box
    return {"left of": ax < bx, "right of": ax > bx + bw, "above": ay < by, "below": ay > by + bh}[rel]


def _extreme(location: str, candidates: list[int], objects: list[ShapeObject], size: int) -> list[int]:
    """The candidate clearly furthest in a direction (margin 15% of the image), or none."""
    sign, axis = {"on the left": (1, 0), "on the right": (-1, 0), "at the top": (1, 1), "at the bottom": (-1, 1)}[location]
    keyed = sorted(candidates, key=lambda i: sign * objects[i].box_center[axis])
    if len(keyed) == 1:  # a single candidate must at least be in that half of the image
        pos = objects[keyed[0]].box_center[axis]
        return keyed if (pos < size / 2) == (sign > 0) else []
    gap = sign * (objects[keyed[1]].box_center[axis] - objects[keyed[0]].box_center[axis])
    return keyed[:1] if gap > 0.15 * size else []


def resolve_spec(spec: RefSpec, objects: list[ShapeObject], size: int) -> list[int]:
    """Indices of the objects a spec describes (a well-formed expression gives exactly one)."""
    found = [i for i, o in enumerate(objects) if o.shape == spec.shape and spec.colour in (None, o.colour)]
    if spec.size:
        found = [i for i in found if objects[i].size == spec.size]
    if spec.relation:
        rel, ref = spec.relation
        named = resolve_spec(RefSpec(objects[ref].shape, objects[ref].colour), objects, size)
        if named != [ref]:
            return []
        found = [i for i in found if i != ref and _relation_holds(rel, objects[i], objects[ref])]
    if spec.location:
        found = _extreme(spec.location, found, objects, size)
    return found


def _candidate_specs(index: int, objects: list[ShapeObject]) -> list[list[RefSpec]]:
    """Specs for object `index`, grouped from the shortest to the longest form."""
    o = objects[index]
    rels = [RefSpec(o.shape, o.colour, relation=(r, j)) for j in range(len(objects)) if j != index for r in RELATIONS]
    return [
        [RefSpec(o.shape)],
        [RefSpec(o.shape, o.colour)],
        [RefSpec(o.shape, o.colour, size=o.size)],
        [RefSpec(o.shape, o.colour, location=loc) for loc in LOCATIONS] + rels,
        [RefSpec(o.shape, o.colour, size=o.size, relation=s.relation) for s in rels],
    ]


def choose_spec(rng: np.random.Generator, index: int, objects: list[ShapeObject], size: int) -> RefSpec | None:
    """A uniquely resolving spec: the shortest form half the time, otherwise any valid longer one
    (so that the data also has sizes, locations and relations when they are not strictly needed)."""
    groups = [[s for s in g if resolve_spec(s, objects, size) == [index]] for g in _candidate_specs(index, objects)]
    valid = [g for g in groups if g]
    if not valid:
        return None
    if rng.random() < 0.5 or len(valid) == 1:
        group = valid[0]
    else:
        group = valid[int(rng.integers(1, len(valid)))]
    return group[int(rng.integers(len(group)))]


# ------------------------------------------------------------------ scenes


def generate_scene(seed: int, index: int | str = 0, image_size: int = 128, min_objects: int = 2, max_objects: int = 6,
                   split: str = "train") -> ShapesScene:
    """One scene from its own random stream (seed, split, index)."""
    rng = rng_for(seed, "shapes", split, index)
    size = image_size
    image, stuff = _background(rng, size)
    objects: list[ShapeObject] = []
    full_areas: list[float] = []
    target = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(target * 8):  # rejection sampling: keep every thing at least half visible
        if len(objects) == target:
            break
        shape = str(rng.choice(THING_CLASSES))
        colour = str(rng.choice(list(COLOURS)))
        size_word = str(rng.choice(list(SIZES), p=[0.5, 0.5]))
        r = float(rng.uniform(*SIZES[size_word])) * size
        cx, cy = rng.uniform(r, size - r, 2)
        angle = float(rng.uniform(0, 2 * np.pi))
        polys, holes = _thing_polygons(shape, cx, cy, r, angle)
        local, where = polygons_coverage((size, size), polys, holes)
        alpha = np.zeros((size, size), np.float32)
        alpha[where] = local
        new_mask = alpha >= 0.5
        if new_mask.sum() < 12:
            continue
        if any((o.mask & ~new_mask).sum() < 0.5 * a for o, a in zip(objects, full_areas)):
            continue
        for o in objects:
            o.mask = o.mask & ~new_mask
        shade = np.asarray(COLOURS[colour], np.float32) * float(rng.uniform(0.9, 1.05))
        image = composite(image, alpha, np.clip(shade, 0, 1))
        objects.append(ShapeObject(shape, colour, size_word, (float(cx), float(cy)), r, angle, new_mask))
        full_areas.append(float(new_mask.sum()))
    # panoptic: stuff segments first (ids 1..), then things; things' visible masks overwrite stuff
    panoptic = np.zeros((size, size), np.int32)
    segments: list[dict[str, Any]] = []
    thing_union = np.zeros((size, size), bool)
    for o in objects:
        thing_union |= o.mask
    next_id = 1
    for s, name in enumerate(STUFF_CLASSES):
        region = (stuff == s) & ~thing_union
        if region.any():
            panoptic[region] = next_id
            segments.append({"id": next_id, "category_id": category_id(name), "isthing": 0})
            next_id += 1
    for o in objects:
        panoptic[o.mask] = next_id
        segments.append({"id": next_id, "category_id": o.category_id, "isthing": 1})
        next_id += 1
    specs = [choose_spec(rng, i, objects, size) for i in range(len(objects))]
    return ShapesScene((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), objects, panoptic, segments, specs)


def generate_shapes_dataset(root: str | Path, splits: dict[str, int] | None = None, seed: int = 0, image_size: int = 128,
                            min_objects: int = 2, max_objects: int = 6, segmentation_format: str = "auto") -> dict[str, Any]:
    """Write scenes in the real formats under `root`:

    - `images/{split}_{index:06d}.png`
    - `annotations/instances_{split}.json` (COCO detection, things only; polygons, RLE for rings)
    - `annotations/panoptic_{split}.json` + `annotations/panoptic_{split}/*.png` (COCO panoptic)
    - `refcoco/instances.json` (all splits) + `refcoco/refs.json` (RefCOCO-style, `split` per ref)
    - `meta.json` (generator, version, arguments)

    Returns a dict of the written paths. Existing `images/`, `annotations/`, `refcoco/` are replaced.
    """
    from zoo.data.coco import write_coco_detection, write_coco_panoptic
    from zoo.data.refcoco import write_refcoco

    root = Path(root)
    splits = splits or {"train": 16, "val": 4}
    for sub in ("images", "annotations", "refcoco"):
        if (root / sub).exists():
            shutil.rmtree(root / sub)
    cats = categories()
    thing_cats = [{k: c[k] for k in ("id", "name", "supercategory")} for c in cats if c["isthing"]]
    all_images: list[dict[str, Any]] = []
    all_anns: list[dict[str, Any]] = []
    refs: list[dict[str, Any]] = []
    image_id, ann_id = 1, 1
    paths: dict[str, Any] = {"root": str(root)}
    for split, count in splits.items():
        images, anns, pan_entries = [], [], []
        for index in range(count):
            scene = generate_scene(seed, index, image_size, min_objects, max_objects, split=split)
            name = f"{split}_{index:06d}.png"
            write_png(root / "images" / name, scene.image)
            im = {"id": image_id, "file_name": name, "width": image_size, "height": image_size}
            images.append(im)
            pan_entries.append({"image_id": image_id, "file_name": name, "panoptic": scene.panoptic, "segments_info": scene.segments_info})
            for obj, text in zip(scene.objects, scene.expressions()):
                anns.append({"id": ann_id, "image_id": image_id, "category_id": obj.category_id, "mask": obj.mask,
                             "segmentation_format": segmentation_format})
                if text is not None:
                    refs.append({"ref_id": len(refs), "ann_id": ann_id, "image_id": image_id, "category_id": obj.category_id,
                                 "split": split, "file_name": name, "sentences": [text]})
                ann_id += 1
            image_id += 1
        info = {"description": f"{GENERATOR} v{GENERATOR_VERSION}", "seed": seed, "split": split}
        det_path = root / "annotations" / f"instances_{split}.json"
        paths[f"instances_{split}"] = str(write_coco_detection(det_path, images, anns, thing_cats, info))
        paths[f"panoptic_{split}"] = str(write_coco_panoptic(root / "annotations" / f"panoptic_{split}.json",
                                                             root / "annotations" / f"panoptic_{split}", pan_entries, images, cats, info))
        all_images += images
        all_anns += anns
    paths["refcoco_instances"] = str(write_coco_detection(root / "refcoco" / "instances.json", all_images, all_anns, thing_cats,
                                                          {"description": f"{GENERATOR} v{GENERATOR_VERSION}", "seed": seed}))
    paths["refcoco_refs"] = str(write_refcoco(root / "refcoco" / "refs.json", refs))
    write_json(root / "meta.json", {"generator": GENERATOR, "version": GENERATOR_VERSION, "seed": seed, "image_size": image_size,
                                    "splits": dict(splits), "min_objects": min_objects, "max_objects": max_objects})
    paths["images"] = str(root / "images")
    return paths
