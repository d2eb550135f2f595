"""Drawing primitives shared by the procedural generators.

Shapes are polygons in pixel coordinates (x right, y down, pixel (i, j) covering
[j, j+1) x [i, i+1)). They are rasterised with Pillow on a supersampled canvas restricted
to their bounding box and box-filtered down, which gives anti-aliased coverage in [0, 1]
at a cost proportional to the shape's size rather than the image's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

Polygon = np.ndarray  # (K, 2) float array of (x, y) pixel coordinates


def _bbox(points: Sequence[np.ndarray], shape: tuple[int, int], pad: float) -> tuple[int, int, int, int] | None:
    """Integer bounding box (x0, y0, x1, y1) of the points, padded and clipped to the image."""
    allpts = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in points], axis=0)
    h, w = shape
    x0 = max(int(np.floor(allpts[:, 0].min() - pad)), 0)
    y0 = max(int(np.floor(allpts[:, 1].min() - pad)), 0)
    x1 = min(int(np.ceil(allpts[:, 0].max() + pad)) + 1, w)
    y1 = min(int(np.ceil(allpts[:, 1].max() + pad)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _finish(canvas: Image.Image, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    small = canvas.resize((x1 - x0, y1 - y0), Image.Resampling.BOX)
    out = np.zeros(shape, dtype=np.float32)
    out[y0:y1, x0:x1] = np.asarray(small, dtype=np.float32) / 255.0
    return out


def polygons_coverage(
    shape: tuple[int, int],
    polygons: Sequence[Polygon],
    holes: Sequence[Polygon] = (),
    supersample: int = 4,
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Like `polygons_alpha` but only over the shapes' bounding box: returns the local
    coverage and the (rows, columns) slices where it belongs in the full image."""
    box = _bbox(polygons, shape, pad=1.0) if polygons else None
    if box is None:
        return np.zeros((0, 0), dtype=np.float32), (slice(0, 0), slice(0, 0))
    x0, y0, x1, y1 = box
    s = supersample
    canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(canvas)
    for fill, polys in ((255, polygons), (0, holes)):
        for poly in polys:
            pts = (np.asarray(poly, dtype=np.float64) - (x0, y0)) * s
            draw.polygon([tuple(p) for p in pts], fill=fill)
    small = canvas.resize((x1 - x0, y1 - y0), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0, (slice(y0, y1), slice(x0, x1))


def polygons_alpha(
    shape: tuple[int, int],
    polygons: Sequence[Polygon],
    holes: Sequence[Polygon] = (),
    supersample: int = 4,
) -> np.ndarray:
    """Anti-aliased coverage (H, W) float32 of the union of `polygons` minus `holes`."""
    local, where = polygons_coverage(shape, polygons, holes, supersample)
    out = np.zeros(shape, dtype=np.float32)
    out[where] = local
    return out


def polyline_alpha(shape: tuple[int, int], points: Polygon, width: float, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage of a polyline of the given width (pixels) with round joints and caps."""
    box = _bbox([points], shape, pad=width / 2 + 1.0)
    if box is None:
        return np.zeros(shape, dtype=np.float32)
    x0, y0, x1, y1 = box
    s = supersample
    canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(canvas)
    pts = (np.asarray(points, dtype=np.float64) - (x0, y0)) * s
    w = max(int(round(width * s)), 1)
    draw.line([tuple(p) for p in pts], fill=255, width=w, joint="curve")
    r = w / 2.0
    for px, py in (pts[0], pts[-1]):  # round caps
        draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
    return _finish(canvas, box, shape)


def rotate_points(points: np.ndarray, angle: float, center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rotate (K, 2) points by `angle` radians about `center` (counter-clockwise on screen is negative y)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    pts = np.asarray(points, dtype=np.float64) - center
    return pts @ rot.T + center


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 64) -> Polygon:
    """Vertices of an ellipse with radii (rx, ry), rotated by `angle` radians."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    return rotate_points(pts, angle) + (cx, cy)


def regular_polygon(cx: float, cy: float, radius: float, sides: int, angle: float = 0.0) -> Polygon:
    """Vertices of a regular polygon inscribed in a circle of `radius`."""
    t = angle - np.pi / 2 + np.arange(sides) * 2.0 * np.pi / sides
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def rectangle_polygon(cx: float, cy: float, w: float, h: float, angle: float = 0.0) -> Polygon:
    """Vertices of a w x h rectangle centred on (cx, cy), rotated by `angle` radians."""
    pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return rotate_points(pts, angle) + (cx, cy)


def rounded_rectangle_polygon(
    cx: float, cy: float, w: float, h: float, radius: float, angle: float = 0.0, corner_points: int = 10
) -> Polygon:
    """Vertices of a rectangle with rounded corners of `radius`."""
    radius = min(radius, w / 2, h / 2)
    pts = []
    corners = [(w / 2 - radius, h / 2 - radius, 0.0), (-w / 2 + radius, h / 2 - radius, 0.5 * np.pi),
               (-w / 2 + radius, -h / 2 + radius, np.pi), (w / 2 - radius, -h / 2 + radius, 1.5 * np.pi)]
    for ox, oy, start in corners:
        t = start + np.linspace(0.0, 0.5 * np.pi, corner_points)
        pts.append(np.stack([ox + radius * np.cos(t), oy + radius * np.sin(t)], axis=1))
    return rotate_points(np.concatenate(pts, axis=0), angle) + (cx, cy)


def quadratic_bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 32) -> Polygon:
    """Points along the quadratic Bezier curve with control point p1."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation.

    Wide filters run on a coarser grid (a quarter of sigma per cell) and are upsampled
    bilinearly: the same look at a fraction of the cost of a wide kernel at full size.
    """
    factor = int(sigma // 4) if sigma >= 8 else 1
    if factor > 1:
        coarse = (-(-shape[0] // factor), -(-shape[1] // factor))
        small = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), sigma=sigma / factor, mode="wrap")
        noise = ndimage.zoom(small, factor, order=1, mode="grid-wrap", grid_mode=True)[: shape[0], : shape[1]]
    else:
        noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=sigma, mode="wrap")
    std = noise.std()
    return ((noise - noise.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def blob_alpha(
    rng: np.random.Generator,
    shape: tuple[int, int],
    center: tuple[float, float],
    radius: float,
    roughness: float = 0.45,
    aspect: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """A soft irregular blob: an elliptical falloff perturbed by smooth noise, values in [0, 1]."""
    h, w = shape
    pad = int(np.ceil(radius * 2.0)) + 2
    cx, cy = center
    x0, x1 = max(int(cx) - pad, 0), min(int(cx) + pad + 1, w)
    y0, y1 = max(int(cy) - pad, 0), min(int(cy) + pad + 1, h)
    out = np.zeros(shape, dtype=np.float32)
    if x1 <= x0 or y1 <= y0:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * dx + s * dy), (-s * dx + c * dy) * aspect
    dist = np.sqrt(u**2 + v**2) / radius
    noise = smooth_noise(rng, (y1 - y0, x1 - x0), sigma=max(radius / 4.0, 1.0))
    field = 1.0 - dist + roughness * 0.5 * noise
    out[y0:y1, x0:x1] = np.clip(field * 3.0, 0.0, 1.0)  # steep ramp: a soft edge about a third of the radius wide
    return out


def composite(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray | Sequence[float]) -> np.ndarray:
    """Alpha-blend `colour` (an RGB triple or an HxWx3 image) over `image` with coverage `alpha`."""
    a = np.asarray(alpha, dtype=np.float32)[..., None]
    return image * (1.0 - a) + np.asarray(colour, dtype=np.float32) * a
