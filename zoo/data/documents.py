"""Procedural document pages with paired degradations, written as paired folders:

    root/degraded/NAME.png   the page after the degradation
    root/clean/NAME.png      the same page, clean (the target)

which is the layout `zoo.data.paired.PairedFolder` reads (and the layout DocDiff's reference
trains from: two folders with the same file names). Deterministic by seed: every page draws
from its own stream (`_rng.rng_for(seed, task, split, index)`).

Pages are lines of rendered text (DejaVu Sans / Serif / Mono in regular, bold and italic, several
sizes; CJK lines with Noto CJK where that font is installed) in grey-to-black ink on paper that
looks scanned (`paper`: white or grey, tinted, lit unevenly, with fibre texture; version 2 of the
generator, so that what a model learns transfers to real scans such as scikit-image's `page` and
`text`), softened by a scanner's optics. The clean target keeps the paper as it is: a task removes
its degradation, not the page's look. The degradations, one family a task:

- `deblur`: a motion-blur line kernel (length 5-15 px, any angle) or a defocus disk (radius
  1.5-4 px), plus light sensor noise;
- `denoise`: Gaussian noise (sigma 0.04-0.15), speckle, salt-and-pepper dots and a faint
  smooth background stain;
- `watermark`: repeated semi-transparent rotated text in a random colour (alpha 0.2-0.5);
- `seal`: one or two red stamps (rings, text around the ring, a star) blended multiplicatively;
- `mixed`: one of the four, chosen per page.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from zoo.data._draw import smooth_noise
from zoo.data._io import write_json, write_png
from zoo.data._rng import rng_for

TASKS = ("deblur", "denoise", "watermark", "seal")
GENERATOR_VERSION = 2  # 2: scanned-looking paper and ink (1: black text on white)
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
LATIN_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
               "DejaVuSerif-Italic.ttf", "DejaVuSansCondensed.ttf", "DejaVuSerif-Bold.ttf")
CJK_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
)
WORDS = ("the of and to in is that for on with as by this are from at be document page report total "
         "invoice date amount number name address account section table figure result method data "
         "value item order paid due review signed office copy page contract annex article notice "
         "2023 2024 No. 17 42 305 8.5% $120.00 A-12 ref").split()
CJK_TEXT = "文档增强扩散模型残差去模糊去噪水印印章删除合同发票日期金额姓名地址账户结果方法数据"
SEAL_TEXT = "OFFICIAL SEAL APPROVED CERTIFIED COMPANY LTD"


@functools.cache
def available_fonts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(Latin font paths, CJK font paths) that exist on this machine."""
    latin = tuple(str(DEJAVU / f) for f in LATIN_FONTS if (DEJAVU / f).is_file())
    cjk = tuple(p for p in CJK_CANDIDATES if Path(p).is_file())
    return latin, cjk


@functools.lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        return ImageFont.load_default()


def render_page(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A clean page (H, W, 3) float32 in [0, 1]: lines of words in a few fonts and sizes, in
    grey-to-black ink on scanned-looking paper (`paper`), softened by the scanner's optics."""
    h, w = size
    latin, cjk = available_fonts()
    page = Image.new("L", (w, h), 0)  # ink coverage: 255 where a glyph is
    draw = ImageDraw.Draw(page)
    y = int(rng.integers(2, 12))
    margin = int(rng.integers(4, 16))
    while y < h - 8:
        font_size = int(rng.integers(10, 24))
        use_cjk = bool(cjk) and rng.random() < 0.3
        path = str(rng.choice(cjk if use_cjk else latin)) if (cjk or latin) else ""
        font = _font(path, font_size) if path else ImageFont.load_default()
        coverage = int(rng.integers(195, 256))  # lighter strokes for some lines, as faded print
        x = margin + int(rng.integers(0, 20))
        while x < w - margin:
            if use_cjk:
                word = "".join(rng.choice(list(CJK_TEXT), size=int(rng.integers(2, 6))))
            else:
                word = str(rng.choice(WORDS))
                if rng.random() < 0.15:
                    word = word.capitalize()
            draw.text((x, y), word, fill=coverage, font=font)
            x += int(draw.textlength(word + " ", font=font))
        y += int(font_size * rng.uniform(1.2, 1.8))
    ink_cover = np.asarray(page, dtype=np.float32)[:, :, None] / 255.0
    background = paper(rng, size)
    ink = float(rng.uniform(0.02, 0.3)) * np.clip(background.mean() / 0.9, 0.5, 1.0)  # ink stays darker than its paper
    out = background * (1.0 - ink_cover) + ink * ink_cover
    optics = float(rng.uniform(0.0, 0.7))  # the scanner's point spread (0: a perfect rendering)
    if optics > 0.2:
        out = ndimage.gaussian_filter(out, sigma=(optics, optics, 0), mode="nearest")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def paper(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Scanned paper (H, W, 3): white on a quarter of pages; otherwise a grey level from 0.5
    (a photographed page in poor light, like scikit-image's `text`) to 0.97, a slight yellow
    tint, an illumination gradient across the page (up to +-25 %, like `page`), soft uneven
    shading and a fine fibre texture. The page's own look, kept by every task's target."""
    h, w = size
    if rng.random() < 0.25:
        return np.ones((h, w, 3), np.float32)
    level = float(rng.uniform(0.5, 0.97))
    tint = level * (1.0 - float(rng.uniform(0.0, 0.08)) * np.array([0.0, 0.3, 1.0], np.float32))
    angle = float(rng.uniform(0, 2 * np.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xx / max(w - 1, 1) - 0.5) * np.cos(angle) + (yy / max(h - 1, 1) - 0.5) * np.sin(angle)
    light = 1.0 + float(rng.uniform(0.0, 0.5)) * ramp
    light = light * (1.0 + float(rng.uniform(0.0, 0.06)) * smooth_noise(rng, (h, w), sigma=max(h, w) / 4))
    fibre = float(rng.uniform(0.0, 0.02)) * smooth_noise(rng, (h, w), sigma=1.0)
    return np.clip(tint[None, None, :] * light[:, :, None] + fibre[:, :, None], 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- degradations


def motion_kernel(length: float, angle: float, size: int | None = None) -> np.ndarray:
    """A normalised line kernel of `length` pixels at `angle` radians (camera shake)."""
    size = size or int(np.ceil(length)) | 1
    kernel = Image.new("L", (size * 4, size * 4), 0)
    c = size * 2
    dx, dy = np.cos(angle) * length * 2, np.sin(angle) * length * 2
    ImageDraw.Draw(kernel).line([(c - dx, c - dy), (c + dx, c + dy)], fill=255, width=4)
    k = np.asarray(kernel.resize((size, size), Image.Resampling.BOX), dtype=np.float64)
    return (k / k.sum()).astype(np.float32) if k.sum() > 0 else np.ones((1, 1), np.float32)


def defocus_kernel(radius: float) -> np.ndarray:
    """A normalised anti-aliased disk of `radius` pixels (out-of-focus blur)."""
    r = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    k = np.clip(radius + 0.5 - np.sqrt(xx**2 + yy**2), 0.0, 1.0)
    return (k / k.sum()).astype(np.float32)


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with `kernel`, the page's white extended past its border."""
    return np.stack([ndimage.convolve(image[:, :, c], kernel, mode="nearest") for c in range(image.shape[2])], axis=2)


def add_noise(rng: np.random.Generator, image: np.ndarray, strong: bool) -> np.ndarray:
    """Gaussian + speckle noise (strong) or light sensor noise, and salt-and-pepper when strong."""
    h, w, _ = image.shape
    sigma = rng.uniform(0.04, 0.15) if strong else rng.uniform(0.005, 0.02)
    out = image + rng.normal(0.0, sigma, (h, w, 1)).astype(np.float32)
    if strong:
        out = out * (1.0 + rng.normal(0.0, rng.uniform(0.02, 0.1), (h, w, 1)).astype(np.float32))
        dots = rng.random((h, w)) < rng.uniform(0.0, 0.01)
        out[dots] = rng.choice([0.0, 1.0], size=(int(dots.sum()), 1))
        stain = np.clip(smooth_noise(rng, (h, w), sigma=max(h, w) / 6), 0, None)[:, :, None]
        out = out * (1.0 - rng.uniform(0.0, 0.15) * stain * np.array([0.2, 0.5, 1.0], np.float32))
    return np.clip(out, 0.0, 1.0)


def _text_layer(text: str, font_path: str, font_size: int, angle: float, size: tuple[int, int],
                spacing: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
    """Coverage (H, W) of `text` tiled on a grid and rotated by `angle` degrees."""
    h, w = size
    big = int(np.hypot(h, w)) + 2 * max(spacing)
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    font = _font(font_path, font_size) if font_path else ImageFont.load_default()
    for row, y in enumerate(range(-spacing[1], big, spacing[1])):
        for x in range(-spacing[0] + (row % 2) * spacing[0] // 2 + offset[0], big, spacing[0]):
            draw.text((x, y + offset[1]), text, fill=255, font=font)
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR)
    top, left = (big - h) // 2, (big - w) // 2
    return np.asarray(layer, dtype=np.float32)[top : top + h, left : left + w] / 255.0


def add_watermark(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Semi-transparent repeated text at an angle, in a random colour (the reference's marker.py
    look: tiled rotated text with reduced opacity)."""
    h, w, _ = image.shape
    latin, cjk = available_fonts()
    fonts = latin + cjk
    text = " ".join(rng.choice(["CONFIDENTIAL", "COPY", "DRAFT", "SAMPLE", "zoo", "2024", "PRIVATE"], size=int(rng.integers(1, 3))))
    font_size = int(rng.integers(14, 36))
    coverage = _text_layer(text, str(rng.choice(fonts)) if fonts else "", font_size, float(rng.uniform(-60, 60)), (h, w),
                           (int(font_size * len(text) * 0.7) + int(rng.integers(10, 60)), int(font_size * rng.uniform(2.0, 4.0))),
                           (int(rng.integers(0, 40)), int(rng.integers(0, 40))))
    colour = rng.uniform(0.2, 0.9, 3).astype(np.float32)
    alpha = float(rng.uniform(0.2, 0.5))
    return image * (1.0 - alpha * coverage[:, :, None]) + colour * alpha * coverage[:, :, None]


def seal_alpha(rng: np.random.Generator, diameter: int) -> np.ndarray:
    """Coverage (D, D) of a round stamp: outer ring, inner ring, text along the ring, a star,
    and ink gaps (stamps rarely print evenly)."""
    s = 3  # supersampling
    d = diameter * s
    canvas = Image.new("L", (d, d), 0)
    draw = ImageDraw.Draw(canvas)
    ring = max(int(d * 0.035), 2)
    draw.ellipse([ring, ring, d - ring, d - ring], outline=255, width=ring)
    if rng.random() < 0.5:
        inner = int(d * 0.17)
        draw.ellipse([inner, inner, d - inner, d - inner], outline=255, width=max(ring // 2, 1))
    c = d / 2
    star_r = d * rng.uniform(0.1, 0.16)
    pts = [(c + (star_r if k % 2 == 0 else star_r * 0.4) * np.sin(k * np.pi / 5),
            c - (star_r if k % 2 == 0 else star_r * 0.4) * np.cos(k * np.pi / 5)) for k in range(10)]
    draw.polygon(pts, fill=255)
    latin, _ = available_fonts()
    font = _font(latin[0], int(d * 0.1)) if latin else ImageFont.load_default()
    words = SEAL_TEXT.split()
    text = " ".join(rng.choice(words, size=3, replace=False))
    span = np.deg2rad(rng.uniform(200, 300))
    radius = c - ring * 2 - d * 0.07
    for i, ch in enumerate(text):
        theta = -span / 2 + span * (i + 0.5) / len(text)
        glyph = Image.new("L", (int(d * 0.14), int(d * 0.14)), 0)
        ImageDraw.Draw(glyph).text((glyph.width * 0.2, 0), ch, fill=255, font=font)
        glyph = glyph.rotate(-np.rad2deg(theta), resample=Image.Resampling.BILINEAR)
        x = c + radius * np.sin(theta) - glyph.width / 2
        y = c - radius * np.cos(theta) - glyph.height / 2
        canvas.paste(255, (int(x), int(y)), glyph)
    alpha = np.asarray(canvas.resize((diameter, diameter), Image.Resampling.BOX), dtype=np.float32) / 255.0
    gaps = np.clip(0.75 + 0.5 * smooth_noise(rng, alpha.shape, sigma=max(diameter / 20, 1.0)), 0.2, 1.0)
    return alpha * gaps


def add_seal(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """One or two red stamps, multiplied onto the page (ink absorbs: red ink over black stays dark)."""
    h, w, _ = image.shape
    out = image.copy()
    for _ in range(int(rng.integers(1, 3))):
        diameter = int(rng.uniform(0.35, 0.7) * min(h, w))
        alpha = seal_alpha(rng, diameter) * float(rng.uniform(0.6, 0.95))
        y0 = int(rng.integers(-diameter // 4, max(h - diameter * 3 // 4, 1)))
        x0 = int(rng.integers(-diameter // 4, max(w - diameter * 3 // 4, 1)))
        ys, xs = slice(max(y0, 0), min(y0 + diameter, h)), slice(max(x0, 0), min(x0 + diameter, w))
        local = alpha[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0, None]
        red = np.array([rng.uniform(0.75, 0.95), rng.uniform(0.05, 0.25), rng.uniform(0.05, 0.25)], np.float32)
        out[ys, xs] = out[ys, xs] * (1.0 - local + local * red)
    return out


def degrade(rng: np.random.Generator, clean: np.ndarray, task: str) -> np.ndarray:
    """The degraded version of a clean page for one task (see the module docstring)."""
    if task == "mixed":
        task = str(rng.choice(TASKS))
    if task == "deblur":
        if rng.random() < 0.6:
            kernel = motion_kernel(float(rng.uniform(5, 15)), float(rng.uniform(0, np.pi)))
        else:
            kernel = defocus_kernel(float(rng.uniform(1.5, 4.0)))
        return add_noise(rng, blur(clean, kernel), strong=False)
    if task == "denoise":
        return add_noise(rng, clean, strong=True)
    if task == "watermark":
        return np.clip(add_watermark(rng, clean), 0.0, 1.0)
    if task == "seal":
        return np.clip(add_seal(rng, clean), 0.0, 1.0)
    raise ValueError(f"unknown document task {task!r}; known: {', '.join(TASKS)}, mixed")


def make_pair(seed: int, task: str, split: str, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, clean) float32 pages for one index; a pure function of its arguments."""
    rng = rng_for(seed, "documents", task, split, index)
    clean = render_page(rng, size)
    return degrade(rng, clean, task).astype(np.float32), clean


def generate_document_pairs(root: str | Path, task: str = "mixed", count: int = 32, seed: int = 0,
                            split: str = "train", size: tuple[int, int] = (256, 256),
                            sizes: Sequence[tuple[int, int]] | None = None) -> Path:
    """Write `count` pairs under root/{degraded,clean}/NNNNN.png (+ root/meta.json); returns root.
    `sizes` (optional) cycles page sizes instead of the single `size`."""
    root = Path(root)
    for i in range(count):
        page_size = tuple(sizes[i % len(sizes)]) if sizes else tuple(size)
        degraded, clean = make_pair(seed, task, split, i, page_size)  # type: ignore[arg-type]
        write_png(root / "degraded" / f"{i:05d}.png", degraded)
        write_png(root / "clean" / f"{i:05d}.png", clean)
    latin, cjk = available_fonts()
    write_json(root / "meta.json", {"generator": "zoo.data.documents", "version": GENERATOR_VERSION, "task": task, "count": count, "seed": seed,
                                    "split": split, "size": list(size), "sizes": [list(s) for s in sizes] if sizes else None,
                                    "fonts": {"latin": len(latin), "cjk": len(cjk)}})
    return root
