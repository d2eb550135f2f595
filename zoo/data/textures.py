"""Texture sources for the procedural generators.

Grey textures bundled with scikit-image (`skimage.data.brick`, `grass`, `gravel`; they
load offline) and one woven texture drawn here, each tinted with a two-colour ramp so
that colour defects (stains) have something to differ from. `sample_texture` cuts a
random crop with a small random rotation, flip and brightness change: the "normal
variation" of a texture category, in the spirit of MVTec AD's texture classes, where every
training image is a different patch of the same material.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from scipy import ndimage

from zoo.data._draw import smooth_noise
from zoo.data._rng import rng_for


def _skimage_grey(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0

    return load


def _woven(size: int = 512, period: int = 12) -> np.ndarray:
    """A plain-weave fabric: warp and weft threads alternating over/under, with thread
    to thread brightness jitter and fibre noise (fixed seed: the source is one material)."""
    rng = rng_for(0, "texture", "fabric")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = (xx % period) / period, (yy % period) / period
    warp_profile = np.sin(np.pi * u) ** 0.6  # bright thread centre, dark gap between threads
    weft_profile = np.sin(np.pi * v) ** 0.6
    warp_gain = 1.0 + 0.08 * rng.standard_normal(size // period + 1).astype(np.float32)
    weft_gain = 1.0 + 0.08 * rng.standard_normal(size // period + 1).astype(np.float32)
    warp = warp_profile * warp_gain[(xx // period).astype(int)] * (0.85 + 0.15 * np.sin(np.pi * v))
    weft = weft_profile * weft_gain[(yy // period).astype(int)] * (0.85 + 0.15 * np.sin(np.pi * u))
    warp_on_top = ((xx // period + yy // period) % 2) == 0
    grey = np.where(warp_on_top, warp, weft)
    fibres = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=(0.6, 2.5), mode="wrap")
    grey = grey + 0.10 * fibres / fibres.std() + 0.04 * smooth_noise(rng, (size, size), sigma=24.0)
    return grey.astype(np.float32)


@dataclass(frozen=True)
class TextureSource:
    """A grey source image and the colour ramp (dark, light) that tints it."""

    name: str
    load: Callable[[], np.ndarray]
    dark: tuple[float, float, float]
    light: tuple[float, float, float]
    description: str


TEXTURES: dict[str, TextureSource] = {
    t.name: t
    for t in (
        TextureSource("brick", _skimage_grey("brick"), (0.30, 0.12, 0.08), (0.86, 0.70, 0.56), "skimage.data.brick, red-brown tint"),
        TextureSource("grass", _skimage_grey("grass"), (0.06, 0.14, 0.03), (0.64, 0.80, 0.36), "skimage.data.grass, green tint"),
        TextureSource("gravel", _skimage_grey("gravel"), (0.16, 0.15, 0.13), (0.88, 0.85, 0.78), "skimage.data.gravel, warm grey"),
        TextureSource("fabric", _woven, (0.08, 0.12, 0.28), (0.62, 0.70, 0.90), "procedural plain weave, denim blue"),
    )
}


def texture_names() -> list[str]:
    """Names of the available texture sources."""
    return list(TEXTURES)


@cache
def texture_source(name: str) -> np.ndarray:
    """The tinted source image (H, W, 3) float32 in [0, 1]; cached and read-only."""
    if name not in TEXTURES:
        raise KeyError(f"unknown texture {name!r}; available: {', '.join(TEXTURES)}")
    src = TEXTURES[name]
    grey = src.load()
    lo, hi = np.percentile(grey, [1.0, 99.0])
    g = np.clip((grey - lo) / max(hi - lo, 1e-6), 0.0, 1.0)[..., None]
    rgb = (np.asarray(src.dark, np.float32) + g * (np.asarray(src.light, np.float32) - np.asarray(src.dark, np.float32)))
    rgb = rgb.astype(np.float32)
    rgb.flags.writeable = False
    return rgb


@lru_cache(maxsize=16)
def _blurred_source(name: str, sigma: float) -> np.ndarray:
    blurred = ndimage.gaussian_filter(texture_source(name), sigma=(sigma, sigma, 0))
    blurred.flags.writeable = False
    return blurred


def sample_texture(
    name: str,
    rng: np.random.Generator,
    size: int,
    *,
    crop_fraction: tuple[float, float] = (0.5, 0.62),
    max_rotation_deg: float = 6.0,
    flip: bool = True,
    brightness: float = 0.04,
) -> np.ndarray:
    """A random patch of texture `name` resampled to (size, size, 3) float32 in [0, 1].

    The patch side is `crop_fraction` of the source's shorter side, rotated by up to
    `max_rotation_deg` degrees, mirrored left-right with probability 1/2 when `flip`, and
    scaled in brightness by up to +-`brightness`. Small rotations only: a quarter turn
    would change the material's orientation, which for bricks is itself an anomaly.
    """
    src = texture_source(name)
    h, w = src.shape[:2]
    side = rng.uniform(*crop_fraction) * min(h, w)
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    mirror = bool(flip and rng.random() < 0.5)
    # The rotated square must stay inside the source: half its extent along an axis.
    half = 0.5 * side * (abs(np.cos(angle)) + abs(np.sin(angle)))
    cx = rng.uniform(half, w - half)
    cy = rng.uniform(half, h - half)
    gain = 1.0 + rng.uniform(-brightness, brightness)

    # Output pixel centre (i, j) -> source coordinates: scale, optional mirror, rotate, shift.
    step = side / size
    t = (np.arange(size, dtype=np.float64) + 0.5) * step - side / 2
    oy, ox = np.meshgrid(t, t, indexing="ij")
    if mirror:
        ox = -ox
    c, s = np.cos(angle), np.sin(angle)
    sx = cx + c * ox - s * oy - 0.5
    sy = cy + s * ox + c * oy - 0.5
    if step > 1.5:  # minifying: pre-blur so the bilinear lookup does not alias
        src = _blurred_source(name, round(0.4 * step, 1))
    out = np.stack(
        [ndimage.map_coordinates(src[..., ch], [sy, sx], order=1, mode="reflect") for ch in range(3)], axis=-1
    )
    return np.clip(out * gain, 0.0, 1.0).astype(np.float32)
