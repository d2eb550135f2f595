"""Natural photographs that ship with scikit-image, and a random-crop dataset over them
or over a folder of images.

EfficientAD's penalty loss (Batzner et al., WACV 2024, Sec. 3.2, L_ST's penalty term) and
teacher pretraining need ImageNet-like images; offline, the photographs bundled with
scikit-image stand in for them (`skimage.data`, all loadable without a network). The
tiled textures that `zoo.data.anomaly` uses (brick, grass, gravel) are left out on purpose,
so a penalty on these images never teaches a model to ignore its own training material.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from zoo.data._io import list_images, read_rgb
from zoo.data._rng import rng_for

NATURAL_IMAGE_NAMES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "cat",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "camera",
    "coins",
    "moon",
    "clock",
)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


@lru_cache(maxsize=1)
def _natural_images_cached() -> tuple[np.ndarray, ...]:
    import skimage.data

    images = []
    for name in NATURAL_IMAGE_NAMES:
        arr = _as_rgb_uint8(getattr(skimage.data, name)())
        arr.flags.writeable = False
        images.append(arr)
    return tuple(images)


def natural_images() -> list[np.ndarray]:
    """The bundled photographs (`NATURAL_IMAGE_NAMES` order) as uint8 HxWx3 RGB arrays;
    grey ones are expanded to three channels. Each call returns fresh, writable copies."""
    return [img.copy() for img in _natural_images_cached()]


class ImageFolderDataset(Dataset):
    """Random crops of images from a folder, or of `natural_images()` when `folder` is None or "".

    Item i is a random-resized crop (area 25-100 % of the image, aspect 3/4-4/3, mirrored
    with probability 1/2; as torchvision's RandomResizedCrop) of image i mod n, resized to
    `image_size` (int or (H, W)), as a float32 3xHxW tensor in [0, 1]. Item i depends only
    on (seed, i). `length` defaults to the number of images. Folders are searched
    recursively; files are decoded when an item is read.
    """

    def __init__(
        self,
        folder: str | Path | None,
        image_size: int | tuple[int, int],
        seed: int = 0,
        length: int | None = None,
        *,
        scale: tuple[float, float] = (0.25, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    ) -> None:
        self.size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        self.seed = seed
        self.scale = scale
        self.ratio = ratio
        self.paths: list[Path] = []
        self._arrays: tuple[np.ndarray, ...] = ()
        if folder is None or str(folder) == "":
            self._arrays = _natural_images_cached()
            n = len(self._arrays)
        else:
            folder = Path(folder)
            if not folder.is_dir():
                raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder")
            self.paths = list_images(folder, recursive=True)
            if not self.paths:
                raise FileNotFoundError(f"no image files under {folder}")
            n = len(self.paths)
        self.num_images = n
        self.length = n if length is None else int(length)
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {length}")

    def __len__(self) -> int:
        return self.length

    def _image(self, k: int) -> Image.Image:
        if self._arrays:
            return Image.fromarray(self._arrays[k])
        return read_rgb(self.paths[k])

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        rng = rng_for(self.seed, "image-folder", index)
        image = self._image(index % self.num_images)
        w, h = image.size
        area = w * h
        # Up to ten tries for a crop that fits, then the largest centred crop of the target aspect.
        crop = None
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = float(np.exp(rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1]))))
            cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                crop = (x0, y0, x0 + cw, y0 + ch)
                break
        if crop is None:
            aspect = self.size[1] / self.size[0]
            cw, ch = (w, int(round(w / aspect))) if w / h < aspect else (int(round(h * aspect)), h)
            cw, ch = min(cw, w), min(ch, h)
            crop = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
        out = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR, box=crop)
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(out, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
