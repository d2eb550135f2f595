"""Decoding untrusted images, with limits.

Every image that enters the zoo from outside (CLI paths, HTTP uploads, demo widgets) goes
through `load_image`: the pixel count is checked from the header before any pixel is
decoded, EXIF orientation is applied, and every mode (grayscale, palette, RGBA, 16-bit)
becomes 8-bit RGB. Failures raise `ImageDecodeError` with a message that names the problem.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = int(os.environ.get("ZOO_MAX_IMAGE_PIXELS", 40_000_000))
DEFAULT_MAX_BYTES = int(os.environ.get("ZOO_MAX_IMAGE_BYTES", 50 * 1024 * 1024))


class ImageDecodeError(ValueError):
    """Bytes that are not a usable image. `too_large` tells the server to answer 413."""

    def __init__(self, message: str, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large


def load_image(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> Image.Image:
    """bytes, a path, a PIL image, a numpy array (H, W[, C]) or an example name
    ("skimage:NAME") -> an 8-bit RGB PIL image."""
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, str) and source.startswith("skimage:"):
        return _array_to_rgb(example_image(source.split(":", 1)[1]))
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"{path}: no such image file")
        if path.stat().st_size > max_bytes:
            raise ImageDecodeError(f"{path}: {path.stat().st_size} bytes is over the {max_bytes}-byte limit", too_large=True)
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise ImageDecodeError(f"cannot read an image from {type(source).__name__}")
    return decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty image data")
    if len(data) > max_bytes:
        raise ImageDecodeError(f"image is {len(data)} bytes, over the {max_bytes}-byte limit", too_large=True)
    try:
        with warnings.catch_warnings():
            # Our limit, checked just below, governs: Pillow's warning band (above its
            # MAX_IMAGE_PIXELS) must neither refuse what ours allows nor be quoted for ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            width, height = image.size
            frames = getattr(image, "n_frames", 1)
            if width * height > max_pixels:
                raise ImageDecodeError(f"image is {width}x{height} = {width * height} pixels, over the {max_pixels}-pixel limit", too_large=True)
            if width <= 0 or height <= 0:
                raise ImageDecodeError(f"image has an empty size {width}x{height}")
            if frames > 1:
                image.seek(0)  # animated formats: first frame only
            image.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        # Pillow refuses past twice its MAX_IMAGE_PIXELS inside Image.open, before we see the size.
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = int(found.group(1)) if found else None
        if pixels is None or pixels > max_pixels:
            size = f"{pixels} pixels" if pixels is not None else "too many pixels"
            raise ImageDecodeError(f"image is {size}, over the {max_pixels}-pixel limit", too_large=True) from err
        raise ImageDecodeError(
            f"image is {pixels} pixels: within the {max_pixels}-pixel limit but over Pillow's decompression-bomb "
            f"limit of {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels (raise PIL.Image.MAX_IMAGE_PIXELS to read it)", too_large=True,
        ) from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError("not an image: the bytes match no known image format") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"truncated or corrupt image: {err}") from err
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return _array_to_rgb((array / top * 255).round().clip(0, 255).astype(np.uint8))
    if image.mode == "F":
        return _array_to_rgb(np.asarray(image))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.dtype == np.uint16:
        array = (array / 257).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageDecodeError(f"array of shape {array.shape} is not an image (H, W), (H, W, 3) or (H, W, 4)")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        return _to_rgb(Image.fromarray(array, "RGBA"))
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def example_image(name: str) -> np.ndarray:
    """An image that scikit-image ships (works offline), e.g. "brick", "astronaut", "page"."""
    from skimage import data

    loader = getattr(data, name, None)
    if loader is None or not callable(loader):
        raise ImageDecodeError(f"unknown example image skimage:{name}")
    return np.asarray(loader())


def to_tensor(image: Image.Image, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """RGB PIL -> float32 (3, H, W) in [0, 1], optionally resized (bilinear) to size (H, W)."""
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_uint8_array(tensor: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [0, 1] -> uint8 (H, W, 3), rounded; values outside [0, 1] are clamped, not wrapped."""
    array = tensor.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (array * 255.0).round().astype(np.uint8)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """float (3, H, W) in [0, 1] -> RGB PIL."""
    return Image.fromarray(to_uint8_array(tensor))


# --------------------------------------------------------------------------- letterbox
# Detectors and segmenters with a fixed-size exported graph (ViDT, OneFormer) take every image
# resized so its longer side is S, aspect kept, padded bottom/right to S x S; training uses the
# same functions, so the model never sees a frame the pipeline would not give it.


def letterbox_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) of an image resized so its longer side is `size`, aspect kept (each side in [1, size])."""
    scale = size / max(height, width)
    return min(size, max(1, round(height * scale))), min(size, max(1, round(width * scale)))


def letterbox(image: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, tuple[int, int]]:
    """(3, H, W) float in [0, 1] -> ((3, size, size) normalised with mean/std (in [0, 1] units),
    zero-padded bottom/right after normalisation, the valid (h, w) it fills).

    Resizing is bilinear with antialiasing; a point (x, y) of the input lands at
    (x w / W, y h / H) in the letterboxed frame."""
    _, h, w = image.shape
    nh, nw = letterbox_size(h, w, size)
    resized = image[None].float()
    if (nh, nw) != (h, w):
        resized = F.interpolate(resized, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    out = torch.zeros(3, size, size)
    out[:, :nh, :nw] = (resized[0] - mean_t) / std_t
    return out, (nh, nw)


def letterbox_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W) masks or id maps -> (N, size, size) in the frame `letterbox` makes (nearest
    neighbour at pixel centres, zero-padded), dtype kept."""
    n, h, w = masks.shape
    nh, nw = letterbox_size(h, w, size)
    rows = ((torch.arange(nh) + 0.5) * h / nh).long().clamp(max=h - 1)
    cols = ((torch.arange(nw) + 0.5) * w / nw).long().clamp(max=w - 1)
    out = torch.zeros(n, size, size, dtype=masks.dtype)
    out[:, :nh, :nw] = masks[:, rows[:, None], cols[None, :]]
    return out
