"""Procedural 3D street scenes seen through a pinhole camera, written in KITTI object format.

A level camera `camera_height` metres above a flat ground plane (camera coordinates: x right, y
down, z forward) looks at shaded cuboids: cars and large objects (bus, truck, trailer and
building-like blocks). Each scene is drawn with the painter's algorithm (far objects first, back
faces culled), so nearer objects occlude farther ones; labels carry the 2D box, truncation and
an occlusion level measured from the rendered instance map. The ground-truth BEV map (rows z
far -> near, columns x left -> right, 0 background, c + 1 for class c of `BEV_CLASSES`) rasterises
every footprint in the BEV extent, occluded or not. `generate_scenes_dataset` writes the same
layout `zoo.data.kitti.KittiDataset` reads; every scene is a deterministic function of
(seed, split, index).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ._rng import rng_for
from .kitti import KittiObject, box_corners, project, write_calib, write_labels

GENERATOR_VERSION = 1
# name: (length range, width range, height range) in metres
SIZES = {
    "Car": ((3.6, 4.8), (1.6, 1.9), (1.4, 1.7)),
    "Bus": ((10.0, 12.5), (2.4, 2.6), (3.0, 3.4)),
    "Truck": ((6.0, 9.0), (2.3, 2.5), (2.8, 3.4)),
    "Trailer": ((10.0, 13.0), (2.4, 2.6), (3.4, 4.0)),
    "Building": ((8.0, 14.0), (5.0, 9.0), (4.0, 7.0)),
}
LARGE_TYPES = ("Bus", "Truck", "Trailer", "Building")
BEV_CLASSES = ("Large", "Car")  # the BEV segmentation / detection classes of the procedural data
FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7))
COLOURS = {"Car": [(200, 30, 30), (30, 60, 200), (230, 230, 230), (40, 40, 40), (30, 150, 60), (220, 180, 20)],
           "Bus": [(230, 190, 20), (200, 40, 40)], "Truck": [(240, 240, 240), (40, 90, 170)],
           "Trailer": [(150, 150, 160), (120, 90, 60)], "Building": [(170, 130, 100), (190, 180, 150), (120, 120, 130)]}


def bev_class(kind: str) -> int:
    """Index in BEV_CLASSES of a KITTI type (-1 for types outside them)."""
    if kind == "Car":
        return 1
    return 0 if kind in LARGE_TYPES else -1


def footprint(box7: np.ndarray) -> np.ndarray:
    """(7,) box -> (4, 2) ground footprint corners (x, z)."""
    return box_corners(box7)[0, :4][:, [0, 2]]


def _polygons_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons (K, 2)."""
    for poly in (a, b):
        edges = np.roll(poly, -1, 0) - poly
        for nx, ny in np.stack([-edges[:, 1], edges[:, 0]], 1):
            pa, pb = a @ (nx, ny), b @ (nx, ny)
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def sample_objects(rng: np.random.Generator, *, extent: tuple[float, float, float, float], camera: tuple[float, float, float, float],
                   image_size: tuple[int, int], camera_height: float, min_objects: int, max_objects: int,
                   large_fraction: float) -> list[np.ndarray | Any]:
    """Non-overlapping boxes [(type, box7)] inside the BEV extent and the camera's field of view."""
    fx, _, cx, _ = camera
    x0, x1, z0, z1 = extent
    want = int(rng.integers(min_objects, max_objects + 1))
    placed: list[tuple[str, np.ndarray]] = []
    for _ in range(want * 30):
        if len(placed) >= want:
            break
        kind = str(rng.choice(LARGE_TYPES)) if rng.random() < large_fraction else "Car"
        (l0, l1), (w0, w1), (h0, h1) = SIZES[kind]
        length, width, height = rng.uniform(l0, l1), rng.uniform(w0, w1), rng.uniform(h0, h1)
        z = rng.uniform(max(z0, 6.0), z1 - 1.0)
        half_fov_left, half_fov_right = cx / fx, (image_size[1] - cx) / fx
        x = rng.uniform(max(x0 + 1.0, -half_fov_left * z * 0.9), min(x1 - 1.0, half_fov_right * z * 0.9))
        ry = rng.uniform(-np.pi, np.pi) if kind != "Building" else rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05)
        box = np.array([x, camera_height, z, length, width, height, ry], np.float32)
        corners = box_corners(box)[0]
        if corners[:, 2].min() < 2.0:
            continue
        grown = box.copy()
        grown[3:5] += 1.0
        foot = footprint(grown)
        if any(_polygons_overlap(foot, footprint(b)) for _, b in placed):
            continue
        placed.append((kind, box))
    return placed  # type: ignore[return-value]


def _background(rng: np.random.Generator, image_size: tuple[int, int], camera: tuple[float, float, float, float],
                camera_height: float) -> np.ndarray:
    h, w = image_size
    fx, fy, cx, cy = camera
    v = np.arange(h, dtype=np.float64)[:, None] + 0.5
    u = np.arange(w, dtype=np.float64)[None, :] + 0.5
    sky_top, sky_bottom = np.array([90, 140, 210]) * rng.uniform(0.85, 1.1), np.array([190, 210, 230]) * rng.uniform(0.9, 1.05)
    t = np.clip(v / max(cy, 1.0), 0, 1)[..., None]
    sky = sky_top * (1 - t) + sky_bottom * t
    ground_colour = np.array([105, 105, 100]) * rng.uniform(0.8, 1.2, 3)
    dv = np.maximum(v - cy, 1e-3)
    z = fy * camera_height / dv
    x = (u - cx) * z / fx
    checker = ((np.floor(x / 2.0) + np.floor(z / 2.0)) % 2)[..., None]
    fade = np.clip(1.1 - z / 80.0, 0.4, 1.1)[..., None]
    ground = ground_colour * (0.85 + 0.15 * checker) * fade
    image = np.where((v > cy)[..., None], ground, np.broadcast_to(sky, (h, w, 3)))
    image = image + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255)


def render_scene(seed: int, split: str, index: int, *, image_size: tuple[int, int] = (96, 320),
                 camera: tuple[float, float, float, float] | None = None, camera_height: float = 1.55,
                 extent: tuple[float, float, float, float] = (-16.0, 16.0, 0.0, 32.0), bev_resolution: float = 0.25,
                 min_objects: int = 2, max_objects: int = 6, large_fraction: float = 0.5) -> dict[str, Any]:
    """One scene -> {"image" (H, W, 3) uint8, "objects" list[KittiObject], "P2" (3, 4), "bev" (Hb, Wb) uint8,
    "vf" (H, W) uint8 front-view 0 vertical (objects) / 1 flat (ground) / 2 unknown (sky)}."""
    h, w = image_size
    if camera is None:
        camera = (0.4 * w, 0.4 * w, 0.5 * w, 0.5 * h)
    fx, fy, cx, cy = camera
    p2 = np.array([[fx, 0, cx, 0], [0, fy, cy, 0], [0, 0, 1, 0]], np.float64)
    rng = rng_for(seed, "scenes3d", split, index)
    image = _background(rng, image_size, camera, camera_height)
    placed = sample_objects(rng, extent=extent, camera=camera, image_size=image_size, camera_height=camera_height,
                            min_objects=min_objects, max_objects=max_objects, large_fraction=large_fraction)
    order = sorted(range(len(placed)), key=lambda i: -float(np.hypot(placed[i][1][0], placed[i][1][2])))
    canvas = Image.fromarray(image.astype(np.uint8))
    pen = ImageDraw.Draw(canvas)
    ids = Image.new("I", (w, h), 0)
    id_pen = ImageDraw.Draw(ids)
    light = np.array([0.4, -0.8, -0.45])
    light /= np.linalg.norm(light)
    full_area = []
    for i in order:
        kind, box = placed[i]
        corners = box_corners(box)[0]
        pix = project(corners, p2)
        centre = corners.mean(0)
        base = np.array(COLOURS[kind][int(rng.integers(len(COLOURS[kind])))], np.float64) * rng.uniform(0.85, 1.1)
        alone = Image.new("L", (w, h), 0)
        alone_pen = ImageDraw.Draw(alone)
        for face in FACES:
            pts = corners[list(face)]
            normal = pts.mean(0) - centre
            normal /= np.linalg.norm(normal) + 1e-9
            if float(normal @ pts.mean(0)) >= 0:  # facing away from the camera
                continue
            shade = 0.45 + 0.55 * abs(float(normal @ light))
            poly = [tuple(map(float, p)) for p in pix[list(face)]]
            colour = tuple(int(c) for c in np.clip(base * shade, 0, 255))
            pen.polygon(poly, fill=colour, outline=tuple(int(c * 0.6) for c in colour))
            id_pen.polygon(poly, fill=i + 1)
            alone_pen.polygon(poly, fill=1)
        full_area.append((i, int(np.asarray(alone).sum()), pix))
    id_map = np.asarray(ids)
    objects: dict[int, KittiObject] = {}
    for i, area, pix in full_area:
        kind, box = placed[i]
        visible = int((id_map == i + 1).sum())
        vis = visible / max(area, 1)
        occluded = 0 if vis > 0.8 else 1 if vis > 0.5 else 2
        bx1, by1 = pix.min(0)
        bx2, by2 = pix.max(0)
        cl = np.clip([bx1, by1, bx2, by2], [0, 0, 0, 0], [w, h, w, h])
        full = max((bx2 - bx1) * (by2 - by1), 1e-6)
        trunc = float(np.clip(1 - (cl[2] - cl[0]) * (cl[3] - cl[1]) / full, 0, 1))
        x, y, z, length, width, height, ry = (float(v) for v in box)
        ry = float((ry + np.pi) % (2 * np.pi) - np.pi)
        alpha = float((ry - np.arctan2(x, z) + np.pi) % (2 * np.pi) - np.pi)
        objects[i] = KittiObject(kind, trunc, occluded, alpha, tuple(float(c) for c in cl), (height, width, length), (x, y, z), ry)  # type: ignore[arg-type]
    bev = bev_map([objects[i] for i in sorted(objects)], extent, bev_resolution)
    vf = np.where(id_map > 0, 0, np.where(np.arange(h)[:, None] + 0.5 > cy, 1, 2)).astype(np.uint8)
    return {"image": np.asarray(canvas), "objects": [objects[i] for i in sorted(objects)], "P2": p2, "bev": bev, "vf": vf}


def bev_map(objects: list[KittiObject], extent: tuple[float, float, float, float], resolution: float) -> np.ndarray:
    """Footprints rasterised on the BEV grid: (rows z far -> near, cols x left -> right), 0 background, c + 1."""
    x0, x1, z0, z1 = extent
    rows, cols = int(round((z1 - z0) / resolution)), int(round((x1 - x0) / resolution))
    canvas = Image.new("L", (cols, rows), 0)
    pen = ImageDraw.Draw(canvas)
    for obj in sorted(objects, key=lambda o: bev_class(o.type) == 1):  # cars drawn last (on top)
        c = bev_class(obj.type)
        if c < 0:
            continue
        foot = footprint(obj.box7)
        pts = [((x - x0) / resolution, (z1 - z) / resolution) for x, z in foot]
        pen.polygon(pts, fill=c + 1)
    return np.asarray(canvas).copy()


def generate_scenes_dataset(root: str | Path, splits: dict[str, int] | None = None, seed: int = 0, **options: Any) -> Path:
    """Write SPLIT/{image_2,label_2,calib,bev_2} for each split and ROOT/meta.json; returns root."""
    from ._io import write_png

    root = Path(root)
    splits = splits or {"train": 64, "val": 16}
    first: dict[str, Any] | None = None
    for split, count in splits.items():
        for i in range(count):
            scene = render_scene(seed, split, i, **options)
            first = first or scene
            fid = f"{i:06d}"
            write_png(root / split / "image_2" / f"{fid}.png", scene["image"])
            write_labels(root / split / "label_2" / f"{fid}.txt", scene["objects"])
            write_calib(root / split / "calib" / f"{fid}.txt", scene["P2"])
            (root / split / "bev_2").mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene["bev"]).save(root / split / "bev_2" / f"{fid}.png")
    ext = options.get("extent", (-16.0, 16.0, 0.0, 32.0))
    meta = {"version": GENERATOR_VERSION, "seed": seed, "splits": splits, "bev_classes": list(BEV_CLASSES),
            "bev_extent": list(ext), "bev_resolution": options.get("bev_resolution", 0.25),
            "camera_height": options.get("camera_height", 1.55),
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    return root
