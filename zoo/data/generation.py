"""Class-labelled images for image generation: procedural sets and the user's own folders.

`ClassImageSet` renders small (32-64 px) class-labelled images from the project's own
generators, so that class-conditional generators (consistency models, latent diffusion) and
the sample-quality feature net (`zoo.metrics.generation`) have real supervision on a CPU:

- ``kind="shapes"``: one object per image; the class is its shape (`zoo.data.shapes.THING_CLASSES`:
  circle, square, triangle, star, ring, hexagon), with a random colour, position, scale and
  rotation, over a varied background (a shapes-scene landscape, a texture patch, a smooth
  colour field or a flat colour).
- ``kind="textures"``: a patch of one texture family (`zoo.data.textures.TEXTURES`: brick,
  grass, gravel, fabric), with a random scale, small rotation, mirror and brightness. Each
  split cuts its patches from its own horizontal band of the source image (train: the top
  70 %, val: the next 15 %, test: the last 15 %), so no pixel of a held-out patch was ever in
  a training patch.

Item i depends only on (seed, kind, split, i) (`zoo.data._rng.rng_for`): asking for more
training images never changes the others, and the label of item i is ``i % num_classes``,
so every prefix of the set is class-balanced to within one image.

`ImageFolderSet` reads the user's images the same way a generator's images come out: class =
subfolder name when the root has subfolders with images (as torchvision's ImageFolder), every
image decoded through `zoo.imageio.load_image` (its size limits), centre-cropped to a square
and resized.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from zoo.data._draw import composite, polygons_coverage, smooth_noise
from zoo.data._io import IMAGE_EXTENSIONS, list_images
from zoo.data._rng import rng_for
from zoo.data.shapes import THING_CLASSES, _background, _thing_polygons
from zoo.data.textures import TEXTURES, _blurred_source, sample_texture, texture_source

KINDS = ("shapes", "textures")
SPLITS = ("train", "val", "test")
# Rows of each texture source a split may cut from (fractions of its height): disjoint bands.
TEXTURE_BANDS = {"train": (0.0, 0.70), "val": (0.70, 0.85), "test": (0.85, 1.0)}
# Texture patch side in source pixels (same range in every split, so the splits share one distribution);
# a rotated patch of the largest side still fits the narrowest band of a 512-px source.
TEXTURE_PATCH_SIDE = (36.0, 64.0)
TEXTURE_MAX_ROTATION_DEG = 6.0
# Shapes: circumradius as a fraction of the image side.
SHAPE_RADIUS = (0.20, 0.38)
BACKGROUNDS = ("landscape", "texture", "field", "flat")


def class_names(kind: str) -> tuple[str, ...]:
    """The class names of a `ClassImageSet` kind, label order."""
    if kind == "shapes":
        return tuple(THING_CLASSES)
    if kind == "textures":
        return tuple(TEXTURES)
    raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")


# ------------------------------------------------------------------ shapes


def _random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    if kind == "landscape":
        image, _ = _background(rng, size)
    elif kind == "texture":
        name = list(TEXTURES)[int(rng.integers(len(TEXTURES)))]
        image = sample_texture(name, rng, size, crop_fraction=(0.08, 0.2))
    elif kind == "field":  # two colours mixed by smooth noise
        a, b = rng.uniform(0.05, 0.95, (2, 3)).astype(np.float32)
        t = np.clip(0.5 + 0.35 * smooth_noise(rng, (size, size), sigma=size / 6), 0, 1)[..., None]
        image = a * (1 - t) + b * t
    else:
        image = np.broadcast_to(rng.uniform(0.05, 0.95, 3).astype(np.float32), (size, size, 3))
    return np.ascontiguousarray(image, dtype=np.float32)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random saturated colour at least 0.35 (RGB distance) from the mean colour under the object."""
    best, best_d = None, -1.0
    for _ in range(16):
        h, s, v = rng.uniform(0, 1), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0)
        if rng.random() < 0.15:  # some near-greys (white, black, grey objects)
            s = rng.uniform(0.0, 0.15)
            v = rng.uniform(0.05, 1.0)
        colour = np.asarray(colorsys.hsv_to_rgb(h, s, v), np.float32)
        d = float(np.linalg.norm(colour - under))
        if d >= 0.35:
            return colour
        if d > best_d:
            best, best_d = colour, d
    return best


def render_shape_image(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """One shape of class `shape` over a random background: (size, size, 3) float32 in [0, 1]."""
    image = _random_background(rng, size)
    r = float(rng.uniform(*SHAPE_RADIUS)) * size
    margin = 1.1 * r  # triangles and stars reach 1.15 r, squares 1.06 r; a little may touch the border
    cx, cy = rng.uniform(margin, size - margin, 2)
    angle = float(rng.uniform(0, 2 * np.pi))
    polys, holes = _thing_polygons(shape, cx, cy, r, angle)
    local, where = polygons_coverage((size, size), polys, holes)
    alpha = np.zeros((size, size), np.float32)
    alpha[where] = local
    under = image[alpha > 0.5].mean(axis=0) if (alpha > 0.5).any() else image.mean(axis=(0, 1))
    colour = _contrasting_colour(rng, under)
    # a gentle shading across the object so it is not a flat stencil
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    g = rng.uniform(-0.12, 0.12, 2)
    shade = 1.0 + (g[0] * (xx - cx) + g[1] * (yy - cy)) / max(r, 1.0)
    fill = np.clip(colour * shade[..., None], 0, 1)
    image = composite(image, alpha, fill)
    image = image + rng.uniform(0.0, 0.02) * rng.standard_normal(image.shape).astype(np.float32)  # sensor noise
    return np.clip(image, 0, 1).astype(np.float32)


# ------------------------------------------------------------------ textures


def texture_patch_coords(rng: np.random.Generator, name: str, size: int, split: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Where a patch of `name` for `split` samples its source: (rows, columns) of the (size, size)
    lookup grid in source pixel coordinates, and the minification step (source pixels per output pixel)."""
    h, w = texture_source(name).shape[:2]
    side = rng.uniform(*TEXTURE_PATCH_SIDE) * min(h, w) / 512.0
    angle = np.deg2rad(rng.uniform(-TEXTURE_MAX_ROTATION_DEG, TEXTURE_MAX_ROTATION_DEG))
    mirror = bool(rng.random() < 0.5)
    half = 0.5 * side * (abs(np.cos(angle)) + abs(np.sin(angle)))  # half extent of the rotated patch
    top, bottom = (f * h for f in TEXTURE_BANDS[split])
    margin = 3.0  # the bilinear taps and the anti-alias blur stay inside the band
    cx = rng.uniform(half + margin, w - half - margin)
    cy = rng.uniform(top + half + margin, bottom - half - margin)
    step = side / size
    t = (np.arange(size, dtype=np.float64) + 0.5) * step - side / 2
    oy, ox = np.meshgrid(t, t, indexing="ij")
    if mirror:
        ox = -ox
    c, s = np.cos(angle), np.sin(angle)
    return cy + s * ox + c * oy - 0.5, cx + c * ox - s * oy - 0.5, step


def render_texture_image(rng: np.random.Generator, name: str, size: int, split: str) -> np.ndarray:
    """A patch of texture `name` cut from `split`'s band of the source: (size, size, 3) float32."""
    sy, sx, step = texture_patch_coords(rng, name, size, split)
    gain = 1.0 + rng.uniform(-0.06, 0.06)
    src = texture_source(name)
    if step > 1.5:  # minifying: pre-blur so the lookup does not alias
        src = _blurred_source(name, round(0.4 * step, 1))
    out = np.stack([ndimage.map_coordinates(src[..., ch], [sy, sx], order=1, mode="reflect") for ch in range(3)], axis=-1)
    return np.clip(out * gain, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------ datasets


class ClassImageSet(Dataset):
    """`count` procedural class-labelled images: item i is ``{"image": float32 (3, S, S) in [0, 1],
    "label": int}`` with label ``i % len(classes)``; deterministic by (seed, split, i).

    kind: "shapes" (class = shape type) or "textures" (class = texture family); size: image
    side S in pixels (32-64 intended; 16-256 accepted); split: "train", "val" or "test"
    (disjoint random streams; textures also disjoint source regions).
    """

    def __init__(self, kind: str = "shapes", size: int = 32, count: int = 1024, seed: int = 0, split: str = "train") -> None:
        self.classes: tuple[str, ...] = class_names(kind)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if not 16 <= int(size) <= 256:
            raise ValueError(f"size must be between 16 and 256 pixels, got {size}")
        if int(count) < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.kind, self.size, self.count, self.seed, self.split = kind, int(size), int(count), int(seed), split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.count

    def label(self, index: int) -> int:
        return index % len(self.classes)

    def render(self, index: int) -> np.ndarray:
        """Item `index` as an (S, S, 3) float32 array in [0, 1]."""
        if not 0 <= index < self.count:
            raise IndexError(f"index {index} out of range for {self.count} items")
        rng = rng_for(self.seed, "class-images", self.kind, self.split, index)
        name = self.classes[self.label(index)]
        if self.kind == "shapes":
            return render_shape_image(rng, name, self.size)
        return render_texture_image(rng, name, self.size, self.split)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        image = torch.from_numpy(self.render(int(index))).permute(2, 0, 1).contiguous()
        return {"image": image, "label": self.label(int(index))}

    def tensors(self, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Items [start, stop) stacked: images (N, 3, S, S) float32 and labels (N,) int64."""
        stop = self.count if stop is None else min(stop, self.count)
        items = [self[i] for i in range(start, stop)]
        if not items:
            return torch.zeros(0, 3, self.size, self.size), torch.zeros(0, dtype=torch.long)
        return torch.stack([it["image"] for it in items]), torch.tensor([it["label"] for it in items], dtype=torch.long)

    def __repr__(self) -> str:
        return f"ClassImageSet(kind={self.kind!r}, size={self.size}, count={self.count}, seed={self.seed}, split={self.split!r})"


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square of `image`, resized to size x size (bicubic, antialiased)."""
    w, h = image.size
    side = min(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2
    # crop first: resize(box=...) would let the filter reach pixels outside the square
    return image.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BICUBIC)


class ImageFolderSet(Dataset):
    """The user's images under `root`, centre-cropped and resized to (3, size, size) float32 in [0, 1].

    Layout as torchvision's ImageFolder: when `root` has subfolders holding images, each such
    subfolder is a class (sorted by name; images found recursively inside it; files directly in
    `root` are then ignored); otherwise every image under `root` is class 0 named after `root`.
    Items are ``{"image", "label"}``; images are decoded when read, through
    `zoo.imageio.load_image` (pixel and byte limits; EXIF orientation; any mode to RGB).
    """

    def __init__(self, root: str | Path, size: int = 32) -> None:
        self.root = Path(root)
        self.size = int(size)
        if self.size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a folder")
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        per_class = [(d.name, list_images(d, recursive=True)) for d in subdirs]
        per_class = [(name, paths) for name, paths in per_class if paths]
        if not per_class:
            per_class = [(self.root.resolve().name or "images", list_images(self.root))]
        self.classes: tuple[str, ...] = tuple(name for name, _ in per_class)
        self.samples: list[tuple[Path, int]] = [(p, label) for label, (_, paths) in enumerate(per_class) for p in paths]
        if not self.samples:
            raise FileNotFoundError(
                f"no image files in {self.root} (looked for {', '.join(IMAGE_EXTENSIONS)} files, "
                "directly or in class subfolders)"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        from zoo.imageio import ImageDecodeError, load_image, to_tensor

        path, label = self.samples[index]
        try:
            image = load_image(path)
        except ImageDecodeError as err:
            if str(path) in str(err):
                raise
            raise ImageDecodeError(f"{path}: {err}", too_large=err.too_large) from err
        return {"image": to_tensor(center_crop_resize(image, self.size)), "label": label}
