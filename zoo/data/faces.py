"""Aligned face images for blind face restoration: FFHQ-style folders, the faces scikit-image ships, and
procedural faces, all aligned to the FFHQ five-point layout (eyes at 37.7 % / 62.3 % across and 46.9 %
down, mouth at 72.5 % down of the crop; zoo.models.interlcm.faces.FFHQ_TEMPLATE_512).

- `FaceFolder(root, size)`: every image of a folder (FFHQ's `ffhq_512/00000.png` layout: aligned crops),
  resized to `size`.
- `bundled_faces(size)`: scikit-image's `astronaut` face aligned by its five MTCNN landmarks (measured once,
  written below, so no detector is needed to train) and the 200 `lfw_subset` crops (25 x 25 grey, roughly
  centred, cropped to the FFHQ layout's face box and resized).
- `procedural_face(rng, size)`: a drawn face (skin-toned head, hair, brows, eyes with irises, nose, mouth,
  a background) at the template's landmarks with random jitter, colours and shapes; deterministic by rng.
- `FacePairs`: on-the-fly (LQ, HQ) pairs with CodeFormer's degradation (zoo.data.degradation), item i a
  function of (seed, i), horizontal flip with p 1/2 (the official `use_hflip`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data._io import list_images, read_rgb
from zoo.data._rng import rng_for
from zoo.data.degradation import CodeFormerDegradation, codeformer_degrade

# FFHQ template points as fractions of the crop side (eyes, nose, mouth corners).
TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]]) / 512.0
# MTCNN's landmarks of skimage.data.astronaut() (facenet-pytorch 2.6.0, p 0.99999).
ASTRONAUT_LANDMARKS = np.array([[205.01, 101.73], [246.76, 103.71], [224.67, 128.96], [201.72, 139.25], [245.27, 141.86]])


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity src -> dst (rotation, scale, translation)."""
    a = np.zeros((2 * len(src), 4))
    a[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))]
    a[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))]
    p, *_ = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)
    return np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])


def align_to_template(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 photo and five landmarks -> the aligned (size, size, 3) uint8 crop."""
    return cv2.warpAffine(image, _similarity(landmarks, TEMPLATE * size), (size, size), flags=cv2.INTER_AREA
                          if size < 128 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


@lru_cache(maxsize=4)
def _bundled(size: int) -> tuple[np.ndarray, ...]:
    import skimage.data

    astronaut = np.asarray(skimage.data.astronaut())
    # warp at 4x then area-resize: no aliasing for small crops
    faces = [cv2.resize(align_to_template(astronaut, ASTRONAUT_LANDMARKS, size * 4), (size, size), interpolation=cv2.INTER_AREA)]
    lfw = skimage.data.lfw_subset()  # (200, 25, 25) float in [0, 1]
    for grey in lfw:
        g = (np.clip(grey, 0, 1) * 255).astype(np.uint8)[2:23, 2:23]  # the face box of the FFHQ layout, roughly
        faces.append(np.repeat(cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC)[:, :, None], 3, axis=2))
    for f in faces:
        f.flags.writeable = False
    return tuple(faces)


def bundled_faces(size: int) -> list[np.ndarray]:
    """scikit-image's astronaut (aligned) and its 200 lfw_subset faces, uint8 (size, size, 3)."""
    return list(_bundled(int(size)))


def procedural_face(rng: np.random.Generator, size: int) -> np.ndarray:
    """A drawn face at the FFHQ layout (module docstring), uint8 (size, size, 3). Drawn at 4x, area-resized."""
    s = size * 4
    bg = rng.uniform(40, 220, 3)
    img = np.empty((s, s, 3), np.uint8)
    img[:] = bg
    # a soft background gradient
    ramp = np.linspace(-1, 1, s)[None, :, None] * rng.uniform(-30, 30, 3)
    img = np.clip(img + ramp, 0, 255).astype(np.uint8)
    pts = TEMPLATE * s + rng.normal(0, 0.012 * s, TEMPLATE.shape)
    eye_l, eye_r, nose, mouth_l, mouth_r = pts
    eye_d = np.linalg.norm(eye_r - eye_l)
    centre = (eye_l + eye_r) / 2 * 0.5 + (mouth_l + mouth_r) / 2 * 0.5
    skin = np.array([rng.uniform(90, 240), 0, 0])
    skin[1] = skin[0] * rng.uniform(0.65, 0.85)
    skin[2] = skin[0] * rng.uniform(0.5, 0.75)
    hair = rng.uniform(10, 120, 3) * rng.uniform(0.4, 1.6)
    head_w, head_h = eye_d * rng.uniform(1.05, 1.3), eye_d * rng.uniform(1.45, 1.75)

    def ell(c, axes, colour, angle=0.0, thickness=-1):
        cv2.ellipse(img, (int(c[0]), int(c[1])), (max(1, int(axes[0])), max(1, int(axes[1]))), angle, 0, 360,
                    tuple(int(v) for v in np.clip(colour, 0, 255)), thickness, cv2.LINE_AA)

    ell(centre - [0, head_h * 0.25], (head_w * 1.08, head_h * 0.95), hair)  # hair behind the head
    ell(centre, (head_w, head_h), skin)  # head
    ell(centre - [0, head_h * 0.75], (head_w * 0.95, head_h * 0.35), hair)  # fringe
    white, iris = np.array([235, 235, 230]), rng.uniform(20, 140, 3)
    for eye in (eye_l, eye_r):
        ell(eye, (eye_d * 0.2, eye_d * 0.09), white)
        ell(eye + rng.normal(0, eye_d * 0.02, 2), (eye_d * 0.075, eye_d * 0.075), iris)
        ell(eye, (eye_d * 0.03, eye_d * 0.03), (15, 15, 15))
        ell(eye - [0, eye_d * 0.22], (eye_d * 0.22, eye_d * 0.05), hair * 0.8)  # brow
    ell(nose, (eye_d * 0.09, eye_d * 0.07), skin * 0.78)
    mouth_c = (mouth_l + mouth_r) / 2
    lips = skin * np.array([1.0, 0.55, 0.55]) * rng.uniform(0.7, 0.95)
    ell(mouth_c, (np.linalg.norm(mouth_r - mouth_l) / 2, eye_d * rng.uniform(0.05, 0.12)), lips)
    small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return small


class FaceFolder(Dataset):
    """Aligned face crops in a folder (FFHQ layout), uint8 (size, size, 3) arrays by index."""

    def __init__(self, root: str | Path, size: int):
        self.paths = list_images(root, recursive=True)
        if not self.paths:
            raise ValueError(f"{root}: no images (an FFHQ-style folder of aligned face crops)")
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        image = np.asarray(read_rgb(self.paths[index]))
        if image.shape[:2] != (self.size, self.size):
            mode = cv2.INTER_AREA if image.shape[0] > self.size else cv2.INTER_CUBIC
            image = cv2.resize(image, (self.size, self.size), interpolation=mode)
        return image


class FacePairs(Dataset):
    """{"lq": (3, S, S), "gt": (3, S, S)} float in [0, 1]: HQ face i % n (or a procedural face when
    `faces` is None or for indices past `procedural_from`), flipped with p 1/2, degraded by CodeFormer's
    pipeline; all draws from rng_for(seed, "faces", i)."""

    def __init__(self, faces: Sequence[np.ndarray] | Callable[[int], np.ndarray] | None, size: int, length: int, seed: int = 0,
                 procedural_share: float = 0.0, config: CodeFormerDegradation | None = None, degrade: bool = True):
        self.faces = faces
        self.size, self.length, self.seed = int(size), int(length), int(seed)
        self.procedural_share = float(procedural_share) if faces is not None else 1.0
        self.config = config or CodeFormerDegradation()
        self.degrade = degrade

    def __len__(self) -> int:
        return self.length

    def hq(self, index: int, rng: np.random.Generator) -> np.ndarray:
        if self.faces is None or rng.random() < self.procedural_share:
            return procedural_face(rng, self.size)
        if callable(self.faces):
            return np.asarray(self.faces(index))
        face = np.asarray(self.faces[index % len(self.faces)])
        return face if face.shape[0] == self.size else cv2.resize(face, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = rng_for(self.seed, "faces", index)
        hq = self.hq(index, rng).astype(np.float32) / 255.0
        if rng.random() < 0.5:
            hq = np.ascontiguousarray(hq[:, ::-1])
        lq = codeformer_degrade(hq, rng, self.config) if self.degrade else hq
        return {"lq": torch.from_numpy(lq).permute(2, 0, 1).contiguous(), "gt": torch.from_numpy(hq).permute(2, 0, 1).contiguous()}
