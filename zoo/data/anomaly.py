"""Procedural anomaly-detection data in the MVTec AD folder layout.

Two kinds of category, after the two benchmarks EfficientAD is evaluated on:

* Texture categories (`brick`, `grass`, `gravel`, `fabric`), as MVTec AD's textures
  (Bergmann et al., CVPR 2019, Sec. 3): every image a different patch of one material, with
  *structural* defects: thin low-contrast scratches, dark shaded holes and faint colour
  stains. Defect contrast is scaled to the texture's own contrast so that no defect is a
  simple intensity outlier (bright scratches on brick are separated by an untrained
  network, which shows nothing).
* An object category (`parts`), as MVTec LOCO AD (Bergmann et al., IJCV 2022, Sec. 3): a
  tray with a fixed arrangement of coloured parts, identical in every normal image up to
  small jitter of pose and lighting, with *logical* anomalies that break the arrangement
  while every local patch stays plausible (a missing, an extra or a misplaced part, a part
  of the wrong colour) and *structural* ones (a scratch, a chipped part). Masks mark the
  affected area: for a missing part, where it should be; for a misplaced one, both places.

`generate_anomaly_dataset` writes `train/good`, optional `validation/good` (LOCO),
`test/good`, `test/<defect>`, `ground_truth/<defect>/<id>_mask.png` (255 = anomalous),
`defects.json` ({defect: "structural" | "logical"}) and `meta.json`. Every image has its
own random stream keyed by (seed, category, split, defect, index), so the files are the
same bytes for the same arguments and more training images never change the test set.
"""

from __future__ import annotations

import colorsys
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from zoo.data._draw import (
    blob_alpha,
    composite,
    ellipse_polygon,
    polygons_alpha,
    polygons_coverage,
    polyline_alpha,
    quadratic_bezier,
    rectangle_polygon,
    regular_polygon,
    rotate_points,
    rounded_rectangle_polygon,
    smooth_noise,
)
from zoo.data._io import write_json, write_mask, write_png
from zoo.data._rng import rng_for
from zoo.data.textures import TEXTURES, sample_texture

GENERATOR = "zoo.data.anomaly"
GENERATOR_VERSION = 1

Sample = tuple[np.ndarray, np.ndarray]  # image (H, W, 3) float32 in [0, 1], mask (H, W) bool

TEXTURE_DEFECTS = {"scratch": "structural", "hole": "structural", "stain": "structural"}
OBJECT_DEFECTS = {
    "missing_part": "logical",
    "extra_part": "logical",
    "misplaced_part": "logical",
    "wrong_color": "logical",
    "scratch": "structural",
    "chip": "structural",
}
OBJECT_CATEGORIES = ("parts",)


def list_categories() -> list[str]:
    """Names accepted by `generate_anomaly_dataset`: texture categories, then object ones."""
    return list(TEXTURES) + list(OBJECT_CATEGORIES)


def defect_kinds_for(category: str) -> dict[str, str]:
    """The defect types of a category and their kind ("structural" or "logical")."""
    if category in TEXTURES:
        return dict(TEXTURE_DEFECTS)
    if category in OBJECT_CATEGORIES:
        return dict(OBJECT_DEFECTS)
    raise ValueError(f"unknown anomaly category {category!r}; available: {', '.join(list_categories())}")


# ---------------------------------------------------------------------------------------
# Structural defects (image in, image and mask out). `scale` is image_size / 256: sizes
# are designed at 256 px and scale with the image.


def _luma_std(image: np.ndarray) -> float:
    return float(image.mean(axis=2).std())


def add_scratch(image: np.ndarray, rng: np.random.Generator, *, contrast: float | None = None,
                region: tuple[float, float, float, float] = (0.15, 0.15, 0.85, 0.85)) -> Sample:
    """A thin, slightly curved line, a little darker or lighter than its surroundings.

    Contrast defaults to 0.6-1.0 times the image's own luminance standard deviation, so on
    a texture a scratch is no brighter than the texture's ordinary light spots: it is found
    by its shape, not its intensity. `region` (x0, y0, x1, y1, as fractions) bounds the start.
    """
    h, w = image.shape[:2]
    scale = w / 256.0
    length = rng.uniform(0.18, 0.38) * w
    start = np.array([rng.uniform(region[0], region[2]) * w, rng.uniform(region[1], region[3]) * h])
    theta = rng.uniform(0.0, 2.0 * np.pi)
    direction = np.array([np.cos(theta), np.sin(theta)])
    end = start + length * direction
    bend = rng.uniform(-0.12, 0.12) * length
    control = 0.5 * (start + end) + bend * np.array([-direction[1], direction[0]])
    points = quadratic_bezier(start, control, end, n=40)
    width = max(rng.uniform(1.0, 1.8) * scale, 1.0)  # at least a pixel wide at small sizes
    alpha = polyline_alpha((h, w), points, width)
    if contrast is None:
        contrast = rng.uniform(0.6, 1.0) * _luma_std(image)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    out = np.clip(image + sign * contrast * alpha[..., None], 0.0, 1.0)
    mask = polyline_alpha((h, w), points, width + max(2.0 * scale, 2.0)) > 0.25
    return out.astype(np.float32), mask


def add_hole(image: np.ndarray, rng: np.random.Generator) -> Sample:
    """A dark elliptical pit with directional shading: the wall facing the light is lit,
    the other in shadow, a faint highlight on the lit rim, texture blurred inside."""
    h, w = image.shape[:2]
    rx = rng.uniform(0.022, 0.05) * w
    ry = rx * rng.uniform(0.6, 1.0)
    angle = rng.uniform(0.0, np.pi)
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    alpha = polygons_alpha((h, w), [ellipse_polygon(cx, cy, rx, ry, angle)])
    rim = np.clip(polygons_alpha((h, w), [ellipse_polygon(cx, cy, rx * 1.18, ry * 1.18, angle)]) - alpha, 0.0, 1.0)
    light = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.clip(((xx + 0.5 - cx) * np.cos(light) + (yy + 0.5 - cy) * np.sin(light)) / max(rx, ry), -1.0, 1.0)
    depth = rng.uniform(0.35, 0.55)
    shade = 1.0 - depth * (0.75 + 0.25 * ramp)  # inner wall opposite the light is darkest
    blurred = ndimage.gaussian_filter(image, sigma=(1.5 * w / 256.0, 1.5 * w / 256.0, 0))
    out = composite(image, alpha, blurred * shade[..., None])
    out = out + (0.05 * rim * np.clip(-ramp, 0.0, 1.0))[..., None]
    return np.clip(out, 0.0, 1.0).astype(np.float32), alpha > 0.5


STAIN_COLOURS = np.array([(0.45, 0.28, 0.10), (0.62, 0.30, 0.08), (0.12, 0.12, 0.10), (0.35, 0.40, 0.12), (0.55, 0.50, 0.35)])


def add_stain(image: np.ndarray, rng: np.random.Generator) -> Sample:
    """A soft irregular blotch that pulls colour 15-30 % towards a stain colour (coffee,
    rust, oil, moss, dust) while keeping the texture visible under it."""
    h, w = image.shape[:2]
    radius = rng.uniform(0.04, 0.085) * w
    center = (rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h)
    alpha = blob_alpha(rng, (h, w), center, radius, aspect=rng.uniform(1.0, 1.8), angle=rng.uniform(0.0, np.pi))
    opacity = rng.uniform(0.15, 0.30)
    colour = STAIN_COLOURS[rng.integers(len(STAIN_COLOURS))]
    luma = image.mean(axis=2, keepdims=True)
    stained = colour * (0.5 + luma)  # stain tint that keeps the texture's light and dark
    out = composite(image, alpha * opacity, stained)
    return np.clip(out, 0.0, 1.0).astype(np.float32), alpha > 0.3


_TEXTURE_DEFECT_FNS: dict[str, Callable[[np.ndarray, np.random.Generator], Sample]] = {
    "scratch": add_scratch,
    "hole": add_hole,
    "stain": add_stain,
}


def _texture_sample(category: str, defect: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, mask, reference): the reference is the patch before the defect was added."""
    reference = sample_texture(category, rng, size)
    if defect == "good":
        return reference, np.zeros((size, size), dtype=bool), reference
    return (*_TEXTURE_DEFECT_FNS[defect](reference, rng), reference)


# ---------------------------------------------------------------------------------------
# The "parts" object: a tray with six compartments and seven parts (two bars share one).


@dataclass(frozen=True)
class PartSpec:
    """One part of the arrangement: shape, colour and place, in units of the image side."""

    name: str
    shape: str  # disc | square | triangle | hexagon | bar | ring
    colour: tuple[float, float, float]
    compartment: tuple[int, int]  # (row, column)
    offset: tuple[float, float] = (0.0, 0.0)
    size: float = 0.055  # circumradius-like size


TRAY_SIZE = (0.9, 0.7)
COMPARTMENT_PITCH = (0.28, 0.32)  # (x, y) distance between compartment centres
PARTS: tuple[PartSpec, ...] = (
    PartSpec("disc", "disc", (0.78, 0.16, 0.14), (0, 0), size=0.044),
    PartSpec("square", "square", (0.16, 0.32, 0.72), (0, 1), size=0.047),
    PartSpec("triangle", "triangle", (0.20, 0.58, 0.24), (0, 2), size=0.055),
    PartSpec("hexagon", "hexagon", (0.90, 0.76, 0.18), (1, 0), size=0.046),
    PartSpec("bar_top", "bar", (0.92, 0.48, 0.12), (1, 1), offset=(0.0, -0.04), size=0.044),
    PartSpec("bar_bottom", "bar", (0.92, 0.48, 0.12), (1, 1), offset=(0.0, 0.04), size=0.044),
    PartSpec("ring", "ring", (0.50, 0.26, 0.62), (1, 2), size=0.048),
)


def _compartment_centre(row: int, col: int) -> np.ndarray:
    return np.array([0.5 + (col - 1) * COMPARTMENT_PITCH[0], 0.5 + (row - 0.5) * COMPARTMENT_PITCH[1]])


def _part_polygons(shape: str, size: float, angle: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Outer polygons and holes of a part centred at the origin, in image-side units."""
    if shape == "disc":
        return [ellipse_polygon(0, 0, size, size, n=48)], []
    if shape == "square":
        return [rectangle_polygon(0, 0, 1.5 * size, 1.5 * size, angle)], []
    if shape == "triangle":
        return [regular_polygon(0, 0, size, 3, angle)], []
    if shape == "hexagon":
        return [regular_polygon(0, 0, size, 6, angle)], []
    if shape == "bar":
        return [rounded_rectangle_polygon(0, 0, 2.7 * size, 0.62 * size, 0.2 * size, angle)], []
    if shape == "ring":
        return [ellipse_polygon(0, 0, size, size, n=48)], [ellipse_polygon(0, 0, 0.5 * size, 0.5 * size, n=32)]
    raise ValueError(f"unknown part shape {shape!r}")


@dataclass(frozen=True)
class PlacedPart:
    """A part with its pose in the tray's frame (image-side units)."""

    spec: PartSpec
    centre: tuple[float, float]
    angle: float
    colour: tuple[float, float, float]


def _jittered_layout(rng: np.random.Generator) -> list[PlacedPart]:
    placed = []
    for spec in PARTS:
        centre = _compartment_centre(*spec.compartment) + np.array(spec.offset) + rng.uniform(-0.012, 0.012, 2)
        angle = np.deg2rad(rng.uniform(-12.0, 12.0))
        placed.append(PlacedPart(spec, (float(centre[0]), float(centre[1])), float(angle), spec.colour))
    return placed


@dataclass(frozen=True)
class _TrayPose:
    shift: tuple[float, float]
    angle: float

    def to_pixels(self, pts: np.ndarray, size: int) -> np.ndarray:
        """Tray frame (image-side units, tray centred at (0.5, 0.5)) to pixel coordinates."""
        pts = rotate_points(pts, self.angle, center=(0.5, 0.5)) + self.shift
        return pts * size


def _part_pixels(part: PlacedPart, pose: _TrayPose, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    outer, holes = _part_polygons(part.spec.shape, part.spec.size, part.angle)
    move = lambda p: pose.to_pixels(p + np.array(part.centre), size)  # noqa: E731
    return [move(p) for p in outer], [move(p) for p in holes]


def _footprint(part: PlacedPart, pose: _TrayPose, size: int) -> np.ndarray:
    outer, holes = _part_pixels(part, pose, size)
    return polygons_alpha((size, size), outer, holes)


@lru_cache(maxsize=4)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _render_parts(
    rng: np.random.Generator,
    size: int,
    parts: list[PlacedPart],
    pose: _TrayPose,
    chip: tuple[int, np.ndarray, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw background, tray, compartments and parts; returns the image and, for a chip
    (part index, centre in pixels, radius in pixels, angle), the chipped-away area.
    `rng` supplies only the rendering noise, so the same stream renders the same scene
    identically with and without a defect."""
    scale = size / 256.0
    shape = (size, size)
    # Background: dark slate with low-frequency mottling.
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = (0.20, 0.22, 0.25)
    image *= (1.0 + 0.06 * smooth_noise(rng, shape, sigma=12.0 * scale))[..., None]
    # Tray with a soft drop shadow and a top-left to bottom-right lighting gradient.
    tray_poly = pose.to_pixels(rounded_rectangle_polygon(0.5, 0.5, *TRAY_SIZE, radius=0.05), size)
    tray = polygons_alpha(shape, [tray_poly])
    shadow = ndimage.shift(ndimage.gaussian_filter(tray, 4.0 * scale), (4.0 * scale, 3.0 * scale), order=1)
    image *= (1.0 - 0.45 * shadow)[..., None]
    yy, xx = _unit_grid(size)
    tray_shade = 0.95 + 0.07 * (1.0 - 0.5 * (xx + yy)) + 0.012 * smooth_noise(rng, shape, sigma=1.0)
    image = composite(image, tray, np.array((0.80, 0.80, 0.77), np.float32) * tray_shade[..., None])
    # Compartment walls: slightly darker ridges between the six cells.
    walls = []
    inner_w, inner_h = TRAY_SIZE[0] - 0.06, TRAY_SIZE[1] - 0.06
    for k in (-0.5, 0.5):
        x = 0.5 + k * COMPARTMENT_PITCH[0]
        walls.append(rectangle_polygon(x, 0.5, 0.01, inner_h))
    walls.append(rectangle_polygon(0.5, 0.5, inner_w, 0.01))
    walls.append(rounded_rectangle_polygon(0.5, 0.5, inner_w, inner_h, 0.03))
    border_hole = rounded_rectangle_polygon(0.5, 0.5, inner_w - 0.012, inner_h - 0.012, 0.025)
    wall_alpha = polygons_alpha(shape, [pose.to_pixels(p, size) for p in walls[:3]])
    rim_alpha = polygons_alpha(shape, [pose.to_pixels(walls[3], size)], [pose.to_pixels(border_hole, size)])
    image *= (1.0 - 0.16 * np.clip(wall_alpha + rim_alpha, 0.0, 1.0))[..., None]
    # Parts: one drop shadow for all, flat colour with darker bevelled edges and a
    # lighting gradient. Parts never overlap, so their layers are summed and blended once.
    chipped_area = None
    coverage = np.zeros(shape, dtype=np.float32)
    colour_layer = np.zeros((size, size, 3), dtype=np.float32)
    for index, part in enumerate(parts):
        outer, holes = _part_pixels(part, pose, size)
        if chip is not None and chip[0] == index:
            alpha = polygons_alpha(shape, outer, holes)
            _, centre, radius, bite_angle = chip
            bite = polygons_alpha(shape, [ellipse_polygon(centre[0], centre[1], radius, radius * 0.85, bite_angle)])
            chipped_area = alpha * bite
            alpha, where = alpha * (1.0 - bite), (slice(None), slice(None))
        else:
            alpha, where = polygons_coverage(shape, outer, holes)
        coverage[where] += alpha
        colour_layer[where] += alpha[..., None] * np.asarray(part.colour, np.float32)
    coverage = np.clip(coverage, 0.0, 1.0)
    part_shadow = ndimage.shift(ndimage.gaussian_filter(coverage, 2.0 * scale), (2.5 * scale, 2.0 * scale), order=1)
    image *= (1.0 - 0.35 * part_shadow)[..., None]
    bevel = 0.8 + 0.2 * ndimage.gaussian_filter(coverage, 1.2 * scale)
    light = 1.02 - 0.08 * (xx + yy - 1.0)
    colour = colour_layer / np.maximum(coverage, 1e-6)[..., None]
    image = composite(image, coverage, colour * (bevel * light)[..., None])
    # Global exposure change and sensor noise.
    image = image * rng.uniform(0.96, 1.04) + 0.008 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32), chipped_area


def _shift_hue(colour: tuple[float, float, float], turns: float) -> tuple[float, float, float]:
    h, s, v = colorsys.rgb_to_hsv(*colour)
    return colorsys.hsv_to_rgb((h + turns) % 1.0, s, v)


def _free_spot(rng: np.random.Generator, parts: list[PlacedPart], spec: PartSpec, pose: _TrayPose) -> PlacedPart:
    """An extra copy of `spec` somewhere inside a compartment, not touching any part.

    The geometry is checked on a fixed 256-pixel raster, so the same seed places the extra
    part at the same spot whatever the output size.
    """
    size = 256
    occupied = np.zeros((size, size), dtype=bool)
    for p in parts:
        occupied |= _footprint(p, pose, size) > 0.02
    occupied = ndimage.binary_dilation(occupied, iterations=3)
    half_x, half_y = 0.5 * COMPARTMENT_PITCH[0] - 0.012, 0.5 * COMPARTMENT_PITCH[1] - 0.012
    for _ in range(400):
        row, col = int(rng.integers(2)), int(rng.integers(3))
        cell_centre = _compartment_centre(row, col)
        centre = cell_centre + rng.uniform((-half_x, -half_y), (half_x, half_y))
        angle = float(rng.uniform(-0.5, 0.5)) if spec.shape == "bar" else float(rng.uniform(0.0, 2.0 * np.pi))
        candidate = PlacedPart(spec, (float(centre[0]), float(centre[1])), angle, spec.colour)
        footprint = _footprint(candidate, pose, size) > 0.02
        cell = polygons_alpha((size, size), [pose.to_pixels(rectangle_polygon(*cell_centre, 2 * half_x, 2 * half_y), size)]) > 0.98
        if not np.any(occupied & footprint) and not np.any(footprint & ~cell):
            return candidate
    raise RuntimeError("no free spot for an extra part")  # not reached with the layout above


def _parts_sample(
    defect: str, rng: np.random.Generator, size: int, with_reference: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(image, mask, reference): the reference is the same scene, same noise, without the
    defect; rendered only when asked for (or needed), else None."""
    scene_rng, defect_rng = rng.spawn(2)
    render_seed = int(rng.integers(1 << 62))

    def render(parts: list[PlacedPart], chip: tuple[int, np.ndarray, float, float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        return _render_parts(np.random.Generator(np.random.PCG64(render_seed)), size, parts, pose, chip)

    pose = _TrayPose(shift=tuple(scene_rng.uniform(-0.02, 0.02, 2)), angle=float(np.deg2rad(scene_rng.uniform(-3.0, 3.0))))
    parts = _jittered_layout(scene_rng)
    reference = render(parts)[0] if with_reference or defect in ("good", "scratch") else None
    if defect == "good":
        return reference, np.zeros((size, size), dtype=bool), reference
    r = defect_rng
    if defect == "missing_part":
        index = int(r.integers(len(parts)))
        mask = _footprint(parts[index], pose, size) > 0.5
        return render(parts[:index] + parts[index + 1 :])[0], mask, reference
    if defect == "extra_part":
        extra = _free_spot(r, parts, PARTS[int(r.integers(len(PARTS)))], pose)
        return render(parts + [extra])[0], _footprint(extra, pose, size) > 0.5, reference
    if defect == "misplaced_part":
        # Swap two parts from different compartments: all parts present, arrangement wrong.
        i, j = 0, 0
        while parts[i].spec.compartment == parts[j].spec.compartment:
            i, j = (int(k) for k in r.choice(len(parts), size=2, replace=False))
        swapped = list(parts)
        swapped[i] = replace(parts[i], centre=parts[j].centre)
        swapped[j] = replace(parts[j], centre=parts[i].centre)
        mask = np.maximum.reduce([_footprint(p, pose, size) for p in (parts[i], parts[j], swapped[i], swapped[j])]) > 0.5
        return render(swapped)[0], mask, reference
    if defect == "wrong_color":
        index = int(r.integers(len(parts)))
        turns = r.choice([-1, 1]) * r.uniform(0.10, 0.22)
        recoloured = list(parts)
        recoloured[index] = replace(parts[index], colour=_shift_hue(parts[index].colour, turns))
        return render(recoloured)[0], _footprint(parts[index], pose, size) > 0.5, reference
    if defect == "scratch":
        # On the tray's flat plastic the scratch is faint: a fixed small contrast.
        image, mask = add_scratch(reference, r, contrast=float(r.uniform(0.05, 0.09)), region=(0.2, 0.25, 0.8, 0.75))
        return image, mask, reference
    if defect == "chip":
        index = int(r.integers(len(parts)))
        vertices = _part_pixels(parts[index], pose, size)[0][0]
        centre = vertices[int(r.integers(len(vertices)))]
        radius = parts[index].spec.size * size * r.uniform(0.4, 0.6)
        image, chipped = render(parts, chip=(index, centre, radius, float(r.uniform(0.0, np.pi))))
        return image, chipped > 0.5, reference
    raise ValueError(f"unknown defect {defect!r} for 'parts'; known: {', '.join(OBJECT_DEFECTS)}")


# ---------------------------------------------------------------------------------------


def make_sample(
    category: str,
    defect: str = "good",
    *,
    seed: int = 0,
    index: int = 0,
    image_size: int = 256,
    split: str = "test",
    with_reference: bool = False,
) -> Sample | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image and its mask, exactly as `generate_anomaly_dataset` writes it for
    (seed, category, split, defect, index). Image (H, W, 3) float32 in [0, 1]; mask bool.
    With `with_reference`, also the same image without its defect (same patch, same
    scene and noise), e.g. to show what the defect changed."""
    kinds = defect_kinds_for(category)
    if defect != "good" and defect not in kinds:
        raise ValueError(f"unknown defect {defect!r} for {category!r}; known: {', '.join(kinds)}")
    rng = rng_for(seed, GENERATOR, category, split, defect, index)
    if category in OBJECT_CATEGORIES:
        image, mask, reference = _parts_sample(defect, rng, image_size, with_reference)
    else:
        image, mask, reference = _texture_sample(category, defect, rng, image_size)
    return (image, mask, reference) if with_reference else (image, mask)


def _prepare_folder(folder: Path) -> None:
    """Start from an empty category folder; only a folder this generator wrote is cleared."""
    if folder.exists() and any(folder.iterdir()):
        if not (folder / "meta.json").is_file():
            raise FileExistsError(f"{folder} exists, is not empty and was not written by {GENERATOR}; refusing to overwrite it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def generate_anomaly_dataset(
    root: str | Path,
    category: str = "brick",
    *,
    seed: int = 0,
    image_size: int = 256,
    n_train: int = 60,
    n_test_good: int = 10,
    n_test_per_defect: int = 6,
    n_validation: int = 0,
) -> Path:
    """Write category `category` in the MVTec AD layout under `root/category` and return that folder.

    Layout: train/good/000.png..., validation/good/ (only when n_validation > 0, as in
    MVTec LOCO), test/good/, test/<defect>/, ground_truth/<defect>/000_mask.png (255 =
    anomalous), defects.json ({defect: "structural" | "logical"}) and meta.json (generator,
    seed, arguments, counts). Same arguments, same bytes. A folder this generator wrote
    before is replaced; any other non-empty folder is left alone with an error.
    """
    kinds = defect_kinds_for(category)
    counts = {"n_train": n_train, "n_test_good": n_test_good, "n_test_per_defect": n_test_per_defect, "n_validation": n_validation}
    for name, value in counts.items():
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    folder = Path(root) / category
    _prepare_folder(folder)

    def name(i: int, n: int) -> str:
        return f"{i:0{max(3, len(str(max(n - 1, 0))))}d}"

    def write_split(split: str, sub: str, defect: str, n: int, with_masks: bool) -> None:
        for i in range(n):
            image, mask = make_sample(category, defect, seed=seed, index=i, image_size=image_size, split=split)
            write_png(folder / sub / defect / f"{name(i, n)}.png", image)
            if with_masks:
                write_mask(folder / "ground_truth" / defect / f"{name(i, n)}_mask.png", mask)

    write_split("train", "train", "good", n_train, False)
    if n_validation > 0:
        write_split("validation", "validation", "good", n_validation, False)
    write_split("test", "test", "good", n_test_good, False)
    for defect in kinds:
        write_split("test", "test", defect, n_test_per_defect, True)
    write_json(folder / "defects.json", kinds)
    write_json(
        folder / "meta.json",
        {
            "generator": GENERATOR,
            "version": GENERATOR_VERSION,
            "category": category,
            "seed": seed,
            "args": {"image_size": image_size, **counts},
            "defects": kinds,
        },
    )
    return folder
