"""Reader for MVTec AD and MVTec LOCO AD folders (and what `zoo.data.anomaly` writes).

MVTec AD (Bergmann et al., CVPR 2019): `<category>/train/good`, `<category>/test/<defect>`
with `good` for normal images, and `<category>/ground_truth/<defect>/<id>_mask.png`
(255 = anomalous). MVTec LOCO AD (Bergmann et al., IJCV 2022) adds `validation/good`,
names its test folders `logical_anomalies` and `structural_anomalies`, and stores each
test image's masks as a folder `ground_truth/<defect>/<id>/000.png, 001.png, ...` (one file
a defect region, grey values naming the defect type): here any non-zero pixel of any of
them is anomalous.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from zoo.data._io import IMAGE_EXTENSIONS, list_images, read_rgb

SPLITS = ("train", "validation", "test")
LOCO_KINDS = {"logical_anomalies": "logical", "structural_anomalies": "structural"}


@dataclass(frozen=True)
class MVTecSample:
    """One image of the split: where it is, where its mask files are, and its labels."""

    path: Path
    mask_paths: tuple[Path, ...]
    label: int  # 0 normal, 1 anomalous
    defect_type: str  # "good" for normal images


def _is_category_folder(path: Path) -> bool:
    return (path / "train").is_dir() or (path / "test").is_dir()


def resolve_category_folder(root: str | Path, category: str | None = None) -> Path:
    """The category folder for (root, category): `root/category` when it exists, else `root`
    itself when it holds `train/` or `test/`. Errors name what was found instead."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MVTec root {root} does not exist or is not a folder")
    if category:
        candidate = root / category
        if candidate.is_dir():
            return candidate
        if _is_category_folder(root) and root.name == category:
            return root
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_category_folder(p))
        raise FileNotFoundError(
            f"category {category!r} not found under {root}; categories there: {', '.join(found) or 'none'}"
        )
    if _is_category_folder(root):
        return root
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_category_folder(p))
    if found:
        raise ValueError(f"{root} is a dataset root: pass category=, one of {', '.join(found)}")
    raise FileNotFoundError(f"{root} holds neither train/ nor test/ nor category folders with them")


def _mask_paths(folder: Path, defect: str, image: Path) -> tuple[Path, ...]:
    """MVTec AD `<id>_mask.<ext>` (any image extension), else MVTec LOCO `<id>/*.png`."""
    gt = folder / "ground_truth" / defect
    for ext in IMAGE_EXTENSIONS:
        candidate = gt / f"{image.stem}_mask{ext}"
        if candidate.is_file():
            return (candidate,)
    loco = gt / image.stem
    if loco.is_dir():
        return tuple(list_images(loco))
    return ()


def _index_split(folder: Path, split: str, missing_masks: str) -> list[MVTecSample]:
    split_dir = folder / split
    if not split_dir.is_dir():
        hint = " (MVTec AD has no validation split: use train_validation_split)" if split == "validation" else ""
        raise FileNotFoundError(f"split folder {split_dir} does not exist{hint}")
    defects = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not defects:
        raise FileNotFoundError(f"{split_dir} has no sub-folders (expected good/ and defect folders)")
    # "good" first, then defects by name: a stable order for evaluation.
    defects = (["good"] if "good" in defects else []) + [d for d in defects if d != "good"]
    samples: list[MVTecSample] = []
    for defect in defects:
        images = list_images(split_dir / defect)
        for image in images:
            if defect == "good":
                samples.append(MVTecSample(image, (), 0, "good"))
                continue
            masks = _mask_paths(folder, defect, image)
            if not masks and missing_masks == "error":
                raise FileNotFoundError(
                    f"no ground-truth mask for {image}: expected {folder / 'ground_truth' / defect / (image.stem + '_mask.png')}"
                    f" or {folder / 'ground_truth' / defect / image.stem}/000.png (pass missing_masks='empty' to allow this)"
                )
            samples.append(MVTecSample(image, masks, 1, defect))
    if not samples:
        raise FileNotFoundError(f"no images found under {split_dir}")
    return samples


def _size_hw(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = image_size
    return (int(h), int(w))


class MVTecAD(Dataset):
    """An MVTec AD / MVTec LOCO AD split as a torch Dataset.

    `root` is the category folder, or the dataset root together with `category`.
    `split` is "train", "validation" (LOCO, or our generator with n_validation > 0) or
    "test". Items: {"image": float32 3xHxW in [0, 1], "mask": float32 1xHxW in {0, 1},
    "label": 0 normal / 1 anomalous, "defect_type": "good" for normal images, "path": str}.
    Images are resized bilinearly to `image_size` (an int for square, (H, W), or None to
    keep the file's size); masks by majority vote when shrinking (a pixel is anomalous when
    half the area it covers is) and nearest neighbour when enlarging. Normal images have all-zero
    masks; an anomalous image without a mask file is an error unless `missing_masks="empty"`.
    """

    def __init__(
        self,
        root: str | Path,
        category: str | None = None,
        split: str = "train",
        image_size: int | tuple[int, int] | None = 256,
        *,
        missing_masks: str = "error",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if missing_masks not in ("error", "empty"):
            raise ValueError(f"missing_masks must be 'error' or 'empty', got {missing_masks!r}")
        self.folder = resolve_category_folder(root, category)
        self.category = self.folder.name
        self.split = split
        self.image_size = _size_hw(image_size)
        self.samples = _index_split(self.folder, split, missing_masks)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        """Image labels in item order (0 normal, 1 anomalous)."""
        return [s.label for s in self.samples]

    @property
    def defect_types(self) -> list[str]:
        """Defect type of every item in order ("good" for normal)."""
        return [s.defect_type for s in self.samples]

    def defect_kinds(self) -> dict[str, str]:
        """{defect type: "structural" | "logical"} for this category (see `defect_kinds`)."""
        return defect_kinds(self.folder)

    def load_mask(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """Boolean (H, W) mask of item `index` at `size` (H, W): the union of its mask files."""
        sample = self.samples[index]
        mask = np.zeros(size, dtype=bool)
        for path in sample.mask_paths:
            with Image.open(path) as m:
                arr = np.asarray(m)
            if arr.ndim == 3:
                arr = arr.max(axis=2)
            binary = Image.fromarray(np.where(arr > 0, 255, 0).astype(np.uint8))
            if binary.size != (size[1], size[0]):
                # Shrinking: a pixel is anomalous when at least half of the area it covers
                # is (a stable majority vote, where nearest neighbour depends on the phase).
                shrinking = binary.size[0] * binary.size[1] > size[0] * size[1]
                method = Image.Resampling.BOX if shrinking else Image.Resampling.NEAREST
                binary = binary.resize((size[1], size[0]), method)
            mask |= np.asarray(binary) >= 128
        return mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = read_rgb(sample.path)
        if self.image_size is not None and image.size != (self.image_size[1], self.image_size[0]):
            image = image.resize((self.image_size[1], self.image_size[0]), Image.Resampling.BILINEAR)
        h, w = image.size[1], image.size[0]
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        mask = torch.from_numpy(self.load_mask(index, (h, w)).astype(np.float32))[None]
        return {"image": pixels, "mask": mask, "label": sample.label, "defect_type": sample.defect_type, "path": str(sample.path)}


def train_validation_split(dataset: Dataset, fraction: float = 0.1, seed: int = 0) -> tuple[Subset, Subset]:
    """Split a dataset into (train, validation) subsets by a seeded permutation.

    The validation part has round(fraction * len) items, at least one when 0 < fraction and
    the dataset has two or more items, and never all of them. Same seed, same split. Both
    subsets list their indices in increasing order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = len(dataset)  # type: ignore[arg-type]
    n_val = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) % (1 << 64), 0x5EED]))).permutation(n)
    val = sorted(int(i) for i in order[:n_val])
    train = sorted(int(i) for i in order[n_val:])
    return Subset(dataset, train), Subset(dataset, val)


def defect_kinds(root: str | Path, category: str | None = None) -> dict[str, str]:
    """{defect type: "structural" | "logical"} for a category folder.

    Read from `defects.json` when present (our generator writes it). Otherwise inferred
    from the test folders: MVTec LOCO's `logical_anomalies` / `structural_anomalies` by
    name, and every other defect folder is structural (all MVTec AD defects are).
    """
    folder = resolve_category_folder(root, category)
    spec = folder / "defects.json"
    if spec.is_file():
        kinds = json.loads(spec.read_text(encoding="utf-8"))
        bad = {k: v for k, v in kinds.items() if v not in ("structural", "logical")}
        if bad:
            raise ValueError(f"{spec}: kinds must be 'structural' or 'logical', got {bad}")
        return {str(k): str(v) for k, v in kinds.items()}
    test = folder / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{folder} has neither defects.json nor a test/ folder to infer defect kinds from")
    return {p.name: LOCO_KINDS.get(p.name, "structural") for p in sorted(test.iterdir()) if p.is_dir() and p.name != "good"}


def stack_split(dataset: Dataset | Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every item of a (small) split stacked: images (N,3,H,W), masks (N,1,H,W), labels (N,),
    defect types and paths as lists. Handy for evaluation with `zoo.metrics.anomaly`."""
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    if not items:
        raise ValueError("empty dataset")
    return {
        "image": torch.stack([it["image"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "defect_type": [it["defect_type"] for it in items],
        "path": [it["path"] for it in items],
    }
