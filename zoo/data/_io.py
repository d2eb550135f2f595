"""Writing and reading the files the generators produce, byte-for-byte reproducibly.

PNG files carry no timestamp when written by Pillow without `pnginfo`, so the same array
always gives the same bytes. JSON is written with sorted keys for the same reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] to uint8 (rounded, clipped); uint8 passes through."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an HxW (grey) or HxWx3 (RGB) array, float in [0, 1] or uint8, as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = to_uint8(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=1)  # fast; size is secondary here
    return path


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Write a boolean mask as the MVTec convention: 8-bit grey, 255 = anomalous, 0 = normal."""
    return write_png(path, np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON with sorted keys and a trailing newline (stable bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_rgb(path: str | Path) -> Image.Image:
    """Decode an image file with Pillow as RGB (grey, palette, RGBA and 16-bit all converted)."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16/32-bit grey: scale to 8 bits before RGB conversion, which would clip instead.
            arr = np.asarray(img, dtype=np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            img = Image.fromarray(np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8))
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            # Composite transparency onto black rather than exposing undefined colour values.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` by extension, sorted by name for a stable order."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
