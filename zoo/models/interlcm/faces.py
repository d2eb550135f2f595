"""Faces in real photos: detection with five landmarks, alignment to the FFHQ template, paste back.

The official pipeline (CodeFormer's `FaceRestoreHelper`: RetinaFace landmarks, a similarity transform to
the FFHQ 5-point template of a 512 crop, restoration of each crop, inverse affine and a soft mask) with
facenet-pytorch's MTCNN as the detector: its weights ship inside its wheel, so detection works offline
(`pip install --no-deps facenet-pytorch==2.6.0`; its own pins are ancient). Defined behaviour:

- no face: `find_faces` returns []; the pipeline then restores the whole image as one aligned crop
  (mode "auto", as the paper's aligned test sets are) or returns it unchanged (mode "detect");
- many faces: the `max_faces` largest (by eye distance) are restored, the rest counted as skipped;
- tiny faces: a face whose eye distance is under `min_eye_distance` px (the official eye_dist_threshold 5)
  is skipped, and counted;
- huge images: detection runs on a copy whose long side is at most `detect_side` px (landmarks scaled
  back); warps and paste-back work inside each face's bounding region only, so memory grows with the faces,
  not with the photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

# FFHQ's five-point template for a 512 x 512 crop (eyes, nose tip, mouth corners), as facexlib / CodeFormer use it.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)


@dataclass
class Face:
    """One detected face: box (x0, y0, x1, y1) and landmarks (5, 2) in the photo's pixels, detector score."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


@dataclass
class FaceSearch:
    """What detection found: the faces kept for restoration and how many were skipped, and why."""

    faces: list[Face] = field(default_factory=list)
    too_small: int = 0
    over_limit: int = 0
    detect_scale: float = 1.0


@lru_cache(maxsize=1)
def _mtcnn() -> Any:
    try:
        from facenet_pytorch import MTCNN
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("face detection needs facenet-pytorch (its MTCNN weights ship in the wheel): "
                          "pip install --no-deps facenet-pytorch==2.6.0") from err
    return MTCNN(keep_all=True, device="cpu", post_process=False)


def detector_available() -> bool:
    try:
        import facenet_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def mtcnn_detect(image: np.ndarray) -> list[Face]:
    """All MTCNN detections of an RGB uint8 (H, W, 3) image, with landmarks."""
    import torch

    with torch.inference_mode():
        boxes, probs, points = _mtcnn().detect(image, landmarks=True)
    if boxes is None:
        return []
    return [Face(np.asarray(b, np.float64), np.asarray(p, np.float64), float(s)) for b, s, p in zip(boxes, probs, points)]


def find_faces(image: np.ndarray, detect: Any = mtcnn_detect, max_faces: int = 16, min_eye_distance: float = 5.0,
               detect_side: int = 1280) -> FaceSearch:
    """Faces to restore in an RGB uint8 image (module docstring for the rules). `detect` maps an image to
    `Face`s (MTCNN by default; tests inject their own)."""
    h, w = image.shape[:2]
    scale = min(1.0, detect_side / max(h, w))
    small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    found = [Face(f.box / scale, f.landmarks / scale, f.score) for f in detect(small)]
    kept = [f for f in found if f.eye_distance >= min_eye_distance]
    kept.sort(key=lambda f: -f.eye_distance)
    return FaceSearch(kept[:max_faces], too_small=len(found) - len(kept), over_limit=max(0, len(kept) - max_faces), detect_scale=scale)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, translation) taking src points to dst
    (Umeyama 1991, without reflection)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / s.var(0).sum())
    t = mu_d - scale * rot @ mu_s
    return np.concatenate([scale * rot, t[:, None]], axis=1)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the aligned size x size crop, the 2x3 affine photo -> crop) for five landmarks (FFHQ template scaled to `size`)."""
    matrix = similarity_transform(landmarks.astype(np.float64), FFHQ_TEMPLATE_512 * (size / 512.0))
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return crop, matrix


def face_region(matrix: np.ndarray, size: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The photo region (x0, y0, x1, y1) the crop covers under the inverse affine, clipped to the photo."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    pts = corners @ inverse.T
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
    return max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1))


def soft_mask(size: int) -> np.ndarray:
    """The crop's blending mask (size, size) float32: 1 inside, eroded by size / 16 and feathered by a
    Gaussian, so the pasted face fades into the photo (CodeFormer's paste-back mask, without the parser)."""
    mask = np.zeros((size, size), np.float32)
    border = max(1, size // 16)
    mask[border:-border, border:-border] = 1.0
    blur = max(3, (size // 8) | 1)
    return cv2.GaussianBlur(mask, (blur, blur), 0)


def paste_face(photo: np.ndarray, restored: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Blend one restored crop (uint8 (S, S, 3)) back into `photo` (uint8, modified and returned) through the
    inverse affine, inside the face's region only."""
    size = restored.shape[0]
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = face_region(matrix, size, h, w)
    if x1 <= x0 or y1 <= y0:
        return photo
    inverse = cv2.invertAffineTransform(matrix)
    inverse[:, 2] -= (x0, y0)  # into the region's coordinates
    region = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(restored.astype(np.float32), inverse, region, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(soft_mask(size), inverse, region, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
    patch = photo[y0:y1, x0:x1].astype(np.float32)
    photo[y0:y1, x0:x1] = np.clip(mask * face + (1 - mask) * patch + 0.5, 0, 255).astype(np.uint8)
    return photo
