"""Rendered words on textured backgrounds (visual text generation), in AnyWord-3M's JSON format.

AnyWord-3M (Tuo et al., ICLR 2024, the AnyText dataset) describes each image by a JSON entry

    {"data_root": "imgs", "data_list": [{"img_name": "000001.png", "caption": "a photo of ...",
      "annotations": [{"polygon": [[x, y], ...], "text": "OPEN", "language": "Latin", "valid": true}, ...]}]}

(`valid: false` marks an illegible line: its area is left out of the loss). `write_anyword` writes
procedural images in that layout and `read_anyword` reads it back (ours or the real data), so the
family's one reader path is tested by both.

A procedural image (`word_image(seed, split, index, size)`): a background (a texture patch, a smooth
two-colour field or a flat colour), 1 to `max_lines` lines of a short word each (DejaVu Sans Bold /
Sans / Serif Bold, or Noto CJK characters where that font is installed and `cjk` > 0), each line in a
contrasting colour, slightly rotated, its polygon the rotated rectangle around the ink; the caption
names the background ("a photo of a sign on brick"), without the words (AnyText's captions hold
the lines as quoted placeholders, which the family adds).
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zoo.data._draw import smooth_noise
from zoo.data._rng import rng_for
from zoo.data.documents import CJK_TEXT, DEJAVU, available_fonts
from zoo.data.textures import sample_texture, texture_names

WORDS = ("OPEN SALE CAFE STOP HOTEL BAR SHOP BANK TAXI EXIT PARK BOOK FOOD MILK TEA NEWS GAME ZOO BUS CITY "
         "HOME LOVE COOL FIRE GOLD STAR MOON SUN RAIN SNOW WIND ROAD GATE DOOR KING BLUE RED PINK JAZZ ROCK "
         "ART FUN TOP HOT NEW BIG ICE JOY SKY SEA").split()
LATIN_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf")
SURFACES = ("a sign", "a poster", "a wall", "a board", "a label")


@dataclass
class WordLine:
    text: str
    polygon: np.ndarray  # (4, 2) float32, pixels
    language: str = "Latin"
    valid: bool = True


@dataclass
class WordImage:
    image: np.ndarray  # (H, W, 3) uint8
    lines: list[WordLine]
    caption: str


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    kind = rng.choice(["texture", "field", "flat"], p=[0.4, 0.35, 0.25])
    if kind == "texture":
        name = texture_names()[int(rng.integers(len(texture_names())))]
        return sample_texture(name, rng, size, crop_fraction=(0.1, 0.25)), name.replace("_", " ")
    if kind == "field":
        a, b = rng.uniform(0.05, 0.95, (2, 3)).astype(np.float32)
        t = np.clip(0.5 + 0.35 * smooth_noise(rng, (size, size), sigma=size / 5), 0, 1)[..., None]
        return (a * (1 - t) + b * t).astype(np.float32), "a colourful background"
    return np.broadcast_to(rng.uniform(0.05, 0.95, 3).astype(np.float32), (size, size, 3)).copy(), "a plain background"


def _ink(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A colour far from the mean colour under the line (luminance contrast first: OCR reads contrast)."""
    lum = float(under @ np.array([0.299, 0.587, 0.114]))
    v = rng.uniform(0.0, 0.2) if lum > 0.5 else rng.uniform(0.85, 1.0)
    h, s = rng.uniform(0, 1), rng.uniform(0.0, 0.8)
    return np.asarray(colorsys.hsv_to_rgb(h, s, v), np.float32)


def _word(rng: np.random.Generator, cjk: float, cjk_fonts: tuple[str, ...]) -> tuple[str, str]:
    if cjk_fonts and rng.random() < cjk:
        n = int(rng.integers(2, 5))
        return "".join(CJK_TEXT[int(i)] for i in rng.integers(0, len(CJK_TEXT), n)), "Chinese"
    return WORDS[int(rng.integers(len(WORDS)))], "Latin"


def word_image(seed: int, split: str, index: int, size: int = 64, max_lines: int = 1, cjk: float = 0.0,
               max_angle: float = 6.0) -> WordImage:
    """One procedural image with its lines (deterministic in (seed, split, index))."""
    rng = rng_for(seed, "words", split, index)
    background, where = _background(rng, size)
    image = Image.fromarray((np.clip(background, 0, 1) * 255).round().astype(np.uint8))
    _, cjk_fonts = available_fonts()
    n = int(rng.integers(1, max_lines + 1))
    band = size / n
    lines: list[WordLine] = []
    for i in range(n):
        text, language = _word(rng, cjk, cjk_fonts)
        path = cjk_fonts[0] if language == "Chinese" else str(DEJAVU / LATIN_FONTS[int(rng.integers(len(LATIN_FONTS)))])
        target_h = min(band * rng.uniform(0.45, 0.7), size * 0.4)
        font = ImageFont.truetype(path, max(6, int(target_h)))
        left, top, right, bottom = font.getbbox(text)
        tw, th = right - left, bottom - top
        if tw > size * 0.9:
            font = ImageFont.truetype(path, max(6, int(target_h * size * 0.9 / tw)))
            left, top, right, bottom = font.getbbox(text)
            tw, th = right - left, bottom - top
        pad = 2
        tile = Image.new("L", (int(tw) + 2 * pad, int(th) + 2 * pad), 0)
        ImageDraw.Draw(tile).text((pad - left, pad - top), text, fill=255, font=font)
        angle = float(rng.uniform(-max_angle, max_angle))
        rotated = tile.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        cx = float(rng.uniform(rotated.width / 2, size - rotated.width / 2)) if rotated.width < size else size / 2
        cy_low, cy_high = band * i + rotated.height / 2, band * (i + 1) - rotated.height / 2
        cy = float(rng.uniform(cy_low, cy_high)) if cy_high > cy_low else band * (i + 0.5)
        x0, y0 = int(round(cx - rotated.width / 2)), int(round(cy - rotated.height / 2))
        alpha = Image.new("L", (size, size), 0)
        alpha.paste(rotated, (x0, y0))
        a = np.asarray(alpha, np.float32)[..., None] / 255.0
        base = np.asarray(image, np.float32) / 255.0
        under = base[a[..., 0] > 0.5].mean(0) if (a > 0.5).any() else base.mean((0, 1))
        base = base * (1 - a) + _ink(rng, under) * a
        image = Image.fromarray((np.clip(base, 0, 1) * 255).round().astype(np.uint8))
        # the polygon: the tile's rectangle rotated about its centre (PIL rotates counter-clockwise)
        w2, h2 = tile.width / 2, tile.height / 2
        theta = np.deg2rad(angle)
        corners = np.array([[-w2, -h2], [w2, -h2], [w2, h2], [-w2, h2]])
        rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        polygon = np.clip(corners @ rot.T + [x0 + rotated.width / 2, y0 + rotated.height / 2], 0, size).astype(np.float32)
        lines.append(WordLine(text, polygon, language, True))
    caption = f"a photo of {SURFACES[int(rng.integers(len(SURFACES)))]} on {where}"
    return WordImage(np.asarray(image), lines, caption)


def write_anyword(root: str | Path, count: int, seed: int = 0, split: str = "train", size: int = 64,
                  max_lines: int = 1, cjk: float = 0.0) -> Path:
    """Procedural images as an AnyWord-3M folder: root/imgs/*.png + root/data.json; returns the JSON path."""
    root = Path(root)
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        item = word_image(seed, split, i, size, max_lines, cjk)
        name = f"{split}_{i:06d}.png"
        Image.fromarray(item.image).save(root / "imgs" / name)
        entries.append({"img_name": name, "caption": item.caption,
                        "annotations": [{"polygon": line.polygon.round(2).tolist(), "text": line.text,
                                         "language": line.language, "valid": line.valid} for line in item.lines]})
    path = root / "data.json"
    path.write_text(json.dumps({"data_root": "imgs", "data_list": entries}, ensure_ascii=False))
    return path


def read_anyword(path: str | Path) -> list[dict[str, Any]]:
    """An AnyWord-3M JSON file -> [{"image_path", "caption", "lines": [WordLine, ...]}]; `data_root` is
    relative to the JSON file's folder. A malformed entry is a ValueError naming it."""
    path = Path(path)
    document = json.loads(path.read_text())
    if "data_list" not in document:
        raise ValueError(f"{path}: not an AnyWord-3M file (no 'data_list')")
    root = path.parent / document.get("data_root", "")
    out = []
    for k, entry in enumerate(document["data_list"]):
        if "img_name" not in entry:
            raise ValueError(f"{path}: entry {k} has no img_name")
        lines = []
        for ann in entry.get("annotations", []):
            polygon = np.asarray(ann.get("polygon", []), np.float32)
            if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
                raise ValueError(f"{path}: entry {k} ({entry['img_name']}) has a polygon that is not [[x, y], ...] with 3+ points")
            lines.append(WordLine(str(ann.get("text", "")), polygon, str(ann.get("language", "Latin")), bool(ann.get("valid", True))))
        out.append({"image_path": root / entry["img_name"], "caption": str(entry.get("caption", "")), "lines": lines})
    return out
