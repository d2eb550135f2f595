"""Paired image folders (degraded / clean), the layout of document-enhancement and restoration
datasets (DocDiff's reference reads `PATH_IMG` and `PATH_GT` holding the same file names):

    root/degraded/NAME.png  and  root/clean/NAME.png

`PairedFolder` reads whole pairs (test and benchmarks); `PairedCrops` gives training crops
with the reference's augmentation (DocDiff `data/docdata.py`): RandomCrop(128, pad_if_needed,
white fill) -> RandomAffine(10 degrees, white fill) -> RandomHorizontalFlip(0.2), the same draw
for both images. Crops are a function of (seed, index), so a resumed run sees the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from zoo.data._io import list_images, read_rgb
from zoo.data._rng import rng_for

DEGRADED_NAMES = ("degraded", "input", "img", "blur", "noisy", "lq", "lr", "LR", "LQ")  # lr/LR: super-resolution sets
CLEAN_NAMES = ("clean", "gt", "target", "sharp", "hq", "hr", "HR", "GT")


def _find(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root}: no folder named any of {', '.join(names)}")


def _tensor(path: Path) -> torch.Tensor:
    array = np.asarray(read_rgb(path), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class PairedFolder(Dataset):
    """Whole (degraded, clean) pairs matched by file stem. `root` holds a degraded folder
    (degraded|input|img|blur|noisy|lq) and a clean one (clean|gt|target|sharp|hq); or give
    both folders explicitly. Items: {"degraded", "clean"} (3, H, W) in [0, 1] and "name"."""

    def __init__(self, root: str | Path | None = None, degraded_dir: str | Path | None = None,
                 clean_dir: str | Path | None = None) -> None:
        if root is not None:
            root = Path(root)
            degraded_dir = degraded_dir or _find(root, DEGRADED_NAMES)
            clean_dir = clean_dir or _find(root, CLEAN_NAMES)
        if degraded_dir is None or clean_dir is None:
            raise ValueError("give a root folder or both degraded_dir and clean_dir")
        clean = {p.stem: p for p in list_images(clean_dir)}
        self.pairs = [(p, clean[p.stem]) for p in list_images(degraded_dir) if p.stem in clean]
        if not self.pairs:
            raise FileNotFoundError(f"no image pairs with matching names in {degraded_dir} and {clean_dir}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, object]:
        degraded, clean = self.pairs[index]
        return {"degraded": _tensor(degraded), "clean": _tensor(clean), "name": degraded.stem}


def paired_augment(degraded: torch.Tensor, clean: torch.Tensor, size: int, rng: np.random.Generator,
                   degrees: float = 10.0, hflip: float = 0.2, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One random crop of both images (padded white where the page is smaller), then the same
    random rotation (white fill, as RandomAffine(degrees) with no translation/scale) and flip."""
    pair = torch.cat([degraded, clean], dim=0)
    _, h, w = pair.shape
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:  # pad_if_needed with fill 255: both sides, as torchvision pads
        pair = torch.nn.functional.pad(pair, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=1.0)
        _, h, w = pair.shape
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    pair = pair[:, top : top + size, left : left + size]
    if augment:
        angle = float(rng.uniform(-degrees, degrees))
        pair = TF.affine(pair, angle=angle, translate=[0, 0], scale=1.0, shear=[0.0, 0.0], fill=1.0)
        if rng.random() < hflip:
            pair = pair.flip(-1)
    return pair[:3].contiguous(), pair[3:].contiguous()


class PairedCrops(Dataset):
    """`length` training crops from a PairedFolder: item i is crop i of pair i % len(pairs),
    seeded by (seed, i). Items: {"degraded", "clean"} (3, size, size)."""

    def __init__(self, pairs: PairedFolder, size: int = 128, seed: int = 0, length: int | None = None,
                 augment: bool = True, cache: bool = True, degrees: float = 10.0, hflip: float = 0.2) -> None:
        self.pairs, self.size, self.seed, self.augment = pairs, size, seed, augment
        self.degrees, self.hflip = degrees, hflip
        self.length = length or len(pairs)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def _pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        item = self.pairs[index]
        pair = (item["degraded"], item["clean"])
        if self._cache is not None:
            self._cache[index] = pair  # pages are small; decoding dominates otherwise
        return pair  # type: ignore[return-value]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        degraded, clean = self._pair(index % len(self.pairs))
        rng = rng_for(self.seed, "crop", index)
        d, c = paired_augment(degraded, clean, self.size, rng, self.degrees, self.hflip, self.augment)
        return {"degraded": d, "clean": c}
