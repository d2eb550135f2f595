"""AnyText's conditions from text lines and their positions (Sec. 3.2-3.3; the reference's t3_dataset.py):

- the prompt: each "quoted" string is a text line; it becomes the placeholder `*` in the caption (the
  reference's inference does the same), so the caption's k-th `*` is line k;
- glyph image l_g (1 channel, rendered at `glyph_scale` x the image size): each line drawn in its
  position's minimum-area rectangle, the font size fitted to the rectangle and the text rotated with
  it (the reference's draw_glyph2), all lines summed;
- position image l_p: the filled polygons, summed;
- line image (1 x 80 x 512, the reference's draw_glyph): the line alone, white on black, as the
  recogniser of the text embedding module reads it;
- the checks that make a bad request a clear error: too many lines, too long a line, a position outside
  the image, glyphs the font lacks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LINE_H, LINE_W = 80, 512
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
LATIN_FONT = str(DEJAVU / "DejaVuSans.ttf")
CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
)
QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”')
PLACEHOLDER = "*"


class TextLineError(ValueError):
    """A text line the model cannot take (the message says which and why)."""


def parse_prompt(prompt: str) -> tuple[str, list[str]]:
    """'a sign that reads "OPEN" and "24h"' -> ('a sign that reads * and *', ['OPEN', '24h'])."""
    lines: list[str] = []

    def swap(match: re.Match[str]) -> str:
        lines.append(match.group(1) if match.group(1) is not None else match.group(2))
        return f" {PLACEHOLDER} "

    caption = QUOTED.sub(swap, prompt)
    return re.sub(r"\s+", " ", caption).strip(), lines


@functools.cache
def fonts() -> tuple[str, ...]:
    """Fonts tried in order for a line: DejaVu Sans (Latin, Greek, Cyrillic), then Noto CJK if installed."""
    return tuple(p for p in (LATIN_FONT, *CJK_FONTS) if Path(p).is_file())


@functools.cache
def _cmap(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    font = TTFont(path, fontNumber=0, lazy=True) if path.endswith(".ttc") else TTFont(path, lazy=True)
    return frozenset(font.getBestCmap())


def font_for(text: str) -> str:
    """The first font that has every glyph of `text` (spaces aside); TextLineError naming the missing characters."""
    chars = {c for c in text if not c.isspace()}
    for path in fonts():
        if all(ord(c) in _cmap(path) for c in chars):
            return path
    available = fonts()
    missing = sorted(c for c in chars if not any(ord(c) in _cmap(p) for p in available))
    hint = "" if any("CJK" in p for p in available) else " (CJK needs Debian's fonts-noto-cjk)"
    raise TextLineError(f"text line {text!r}: no installed font has the glyphs {''.join(missing)!r}{hint}")


@functools.lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, max(1, size))


def validate_lines(lines: Sequence[str], polygons: Sequence[np.ndarray], size: int, max_lines: int, max_chars: int) -> None:
    """The reference's limits and the image bounds; a TextLineError that says what is wrong."""
    if len(lines) > max_lines:
        raise TextLineError(f"{len(lines)} text lines: at most {max_lines} (the reference's max_lines)")
    for text in lines:
        if not text.strip():
            raise TextLineError("an empty text line (\"\") in the prompt")
        if len(text) > max_chars:
            raise TextLineError(f"text line {text!r} has {len(text)} characters: at most {max_chars} (the reference's max_chars)")
        font_for(text)
    if polygons and len(polygons) != len(lines):
        raise TextLineError(f"{len(lines)} quoted text lines but {len(polygons)} positions: give one position per line")
    for i, polygon in enumerate(polygons):
        p = np.asarray(polygon, np.float64)
        if (p < 0).any() or (p > size).any():
            raise TextLineError(f"position {i} ({p.min(0).round(1).tolist()} - {p.max(0).round(1).tolist()}) lies outside "
                                f"the {size}x{size} image")
        w, h = p.max(0) - p.min(0)
        if w < 2 or h < 2:
            raise TextLineError(f"position {i} is smaller than 2x2 pixels")


def box_polygon(box: Sequence[float]) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def auto_positions(count: int, size: int) -> list[np.ndarray]:
    """Where lines go when no positions are given (our choice): stacked bands, 80 % of the width, centred."""
    if count == 0:
        return []
    band = size / count
    h = min(band * 0.7, size * 0.3)
    return [box_polygon((size * 0.1, band * (i + 0.5) - h / 2, size * 0.9, band * (i + 0.5) + h / 2)) for i in range(count)]


def position_mask(polygons: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Filled polygons (H, W) float32 in {0, 1}, all lines summed (clipped to 1)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for p in polygons:
        draw.polygon([tuple(map(float, xy)) for xy in np.asarray(p)], fill=255)
    return (np.asarray(canvas, np.float32) / 255.0).round()


def line_masks(polygons: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    return [position_mask([p], size) for p in polygons]


def _min_area_rect(polygon: np.ndarray) -> tuple[tuple[float, float], tuple[float, float], float]:
    import cv2

    (cx, cy), (w, h), angle = cv2.minAreaRect(np.asarray(polygon, np.float32))
    if w < h:  # text runs along the long side (horizontal-ish lines)
        w, h, angle = h, w, angle - 90
    if angle < -45:
        angle += 180
    if angle > 135:
        angle -= 180
    return (cx, cy), (w, h), angle


def render_in_polygon(text: str, polygon: np.ndarray, size: int, scale: int = 1) -> np.ndarray:
    """One line drawn into its polygon's min-area rectangle at `scale` x, white on black, (sH, sW) float32."""
    s = size * scale
    (cx, cy), (w, h), angle = _min_area_rect(np.asarray(polygon, np.float64) * scale)
    font_path = font_for(text)
    font_size = max(1, int(h * 0.8))
    font = _font(font_path, font_size)
    left, top, right, bottom = font.getbbox(text)
    tw, th = max(1, right - left), max(1, bottom - top)
    if tw > w * 0.95:  # too wide for the box: shrink the font to fit its length
        font_size = max(1, int(font_size * w * 0.95 / tw))
        font = _font(font_path, font_size)
        left, top, right, bottom = font.getbbox(text)
        tw, th = max(1, right - left), max(1, bottom - top)
    tile = Image.new("L", (int(tw) + 4, int(th) + 4), 0)
    ImageDraw.Draw(tile).text((2 - left, 2 - top), text, fill=255, font=font)
    tile = tile.rotate(-angle, resample=Image.Resampling.BICUBIC, expand=True)
    canvas = Image.new("L", (s, s), 0)
    canvas.paste(tile, (int(round(cx - tile.width / 2)), int(round(cy - tile.height / 2))))
    return np.asarray(canvas, np.float32) / 255.0


def glyph_image(lines: Sequence[str], polygons: Sequence[np.ndarray], size: int, scale: int) -> np.ndarray:
    """l_g: every line rendered into its position at `scale` x, summed and clipped to [0, 1]."""
    out = np.zeros((size * scale, size * scale), np.float32)
    for text, polygon in zip(lines, polygons):
        out += render_in_polygon(text, polygon, size, scale)
    return np.clip(out, 0.0, 1.0)


def line_image(text: str) -> np.ndarray:
    """The reference's draw_glyph: the line alone on an 80 x 512 canvas, white on black, fitted and
    left-aligned, (80, 512) float32."""
    font_path = font_for(text)
    font = _font(font_path, 60)
    left, top, right, bottom = font.getbbox(text)
    tw, th = max(1, right - left), max(1, bottom - top)
    ratio = min((LINE_W * 0.9) / tw, (LINE_H * 0.9) / th)
    font = _font(font_path, max(1, int(60 * ratio)))
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (LINE_W, LINE_H), 0)
    ImageDraw.Draw(canvas).text((4 - left, (LINE_H - (bottom - top)) // 2 - top), text, fill=255, font=font)
    return np.asarray(canvas, np.float32) / 255.0


def crop_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of a position mask's pixels (x1, y1 exclusive), None if empty."""
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def conditions(lines: Sequence[str], polygons: Sequence[np.ndarray], size: int, scale: int, max_lines: int) -> dict[str, np.ndarray]:
    """Everything AnyText conditions on for one image, as arrays: glyphs (1, sS, sS), positions (1, S, S),
    line_images (max_lines, 80, 512) (zeros past the lines), boxes (max_lines, 4) int xyxy of each line's
    position mask (zeros past the lines)."""
    glyphs = glyph_image(lines, polygons, size, scale)[None]
    masks = line_masks(polygons, size)
    positions = np.clip(np.sum(masks, 0), 0, 1)[None] if masks else np.zeros((1, size, size), np.float32)
    line_images = np.zeros((max_lines, LINE_H, LINE_W), np.float32)
    boxes = np.zeros((max_lines, 4), np.int64)
    for k, (text, mask) in enumerate(zip(lines, masks)):
        line_images[k] = line_image(text)
        box = crop_box(mask)
        if box is not None:
            boxes[k] = box
    return {"glyphs": glyphs.astype(np.float32), "positions": positions.astype(np.float32), "line_images": line_images, "boxes": boxes}
