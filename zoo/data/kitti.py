"""KITTI object-format reader: `label_2` text, per-frame `calib` (P2), images, BEV masks.

Layout (KITTI's `training/` folder, one per split here): ROOT/SPLIT/image_2/NNNNNN.png,
ROOT/SPLIT/label_2/NNNNNN.txt, ROOT/SPLIT/calib/NNNNNN.txt and, optionally, ROOT/SPLIT/bev_2/NNNNNN.png
(a BEV class map: 0 background, c + 1 for class c of meta.json's `bev_classes`) and ROOT/meta.json
(the BEV grid: `bev_extent` [x_min, x_max, z_min, z_max] metres, `bev_resolution` metres a cell,
rows z far -> near, columns x left -> right).

A label line is `type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]`
(KITTI devkit readme): camera coordinates (x right, y down, z forward), (x, y, z) the bottom
centre of the box, rotation_y about the y axis. A malformed line raises `KittiFormatError`
naming the file and the line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class KittiFormatError(ValueError):
    """A malformed KITTI file; the message starts with `path:line:`."""


@dataclass
class KittiObject:
    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]  # x1 y1 x2 y2 pixels
    dimensions: tuple[float, float, float]  # h w l metres
    location: tuple[float, float, float]  # x y z camera coordinates (bottom centre)
    rotation_y: float
    score: float | None = None

    def to_line(self) -> str:
        h, w, l = self.dimensions  # noqa: E741
        x, y, z = self.location
        fields = [self.type, f"{self.truncated:.2f}", str(int(self.occluded)), f"{self.alpha:.2f}",
                  *(f"{v:.2f}" for v in self.bbox), f"{h:.2f}", f"{w:.2f}", f"{l:.2f}", f"{x:.2f}", f"{y:.2f}", f"{z:.2f}",
                  f"{self.rotation_y:.2f}"]
        if self.score is not None:
            fields.append(f"{self.score:.4f}")
        return " ".join(fields)

    @property
    def box7(self) -> np.ndarray:
        """[x, y, z, l, w, h, ry] (the `Boxes3D` layout)."""
        h, w, l = self.dimensions  # noqa: E741
        return np.array([*self.location, l, w, h, self.rotation_y], np.float32)


def parse_label_line(line: str, where: str = "<string>") -> KittiObject:
    parts = line.split()
    if len(parts) not in (15, 16):
        raise KittiFormatError(f"{where}: expected 15 fields (16 with a score): type truncated occluded alpha x1 y1 x2 y2 "
                               f"h w l x y z rotation_y, got {len(parts)}")
    try:
        v = [float(p) for p in parts[1:]]
    except ValueError as err:
        raise KittiFormatError(f"{where}: a numeric field is not a number ({err})") from None
    if not all(np.isfinite(v)):
        raise KittiFormatError(f"{where}: non-finite number")
    if v[1] != int(v[1]):
        raise KittiFormatError(f"{where}: occluded must be an integer, got {parts[2]}")
    return KittiObject(parts[0], v[0], int(v[1]), v[2], (v[3], v[4], v[5], v[6]), (v[7], v[8], v[9]), (v[10], v[11], v[12]), v[13],
                       v[14] if len(v) == 15 else None)


def parse_labels(text: str, where: str = "<string>") -> list[KittiObject]:
    """Every non-empty line of a label file; `where` names the file in errors (as `where:line`)."""
    return [parse_label_line(line, f"{where}:{i}") for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_labels(path: str | Path) -> list[KittiObject]:
    path = Path(path)
    return parse_labels(path.read_text(), str(path))


def write_labels(path: str | Path, objects: list[KittiObject]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(o.to_line() + "\n" for o in objects))
    return path


def parse_calib(text: str, where: str = "<string>") -> dict[str, np.ndarray]:
    """`KEY: numbers` lines -> {KEY: array}; P0-P3 reshaped (3, 4), R0_rect (3, 3), Tr_* (3, 4)."""
    out: dict[str, np.ndarray] = {}
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise KittiFormatError(f"{where}:{i}: expected 'KEY: numbers'")
        try:
            values = np.array([float(x) for x in rest.split()], np.float64)
        except ValueError:
            raise KittiFormatError(f"{where}:{i}: {key.strip()} has a value that is not a number") from None
        shape = {12: (3, 4), 9: (3, 3)}.get(values.size)
        if key.strip().startswith("P") and values.size != 12:
            raise KittiFormatError(f"{where}:{i}: {key.strip()} needs 12 numbers, got {values.size}")
        out[key.strip()] = values.reshape(shape) if shape else values
    if "P2" not in out:
        raise KittiFormatError(f"{where}: no P2 line")
    return out


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    return parse_calib(path.read_text(), str(path))


def write_calib(path: str | Path, p2: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    p = " ".join(f"{v:.6e}" for v in np.asarray(p2, np.float64).reshape(-1))
    eye = " ".join(f"{v:.6e}" for v in np.eye(3).reshape(-1))
    tr = " ".join(f"{v:.6e}" for v in np.eye(3, 4).reshape(-1))
    path.write_text(f"P0: {p}\nP1: {p}\nP2: {p}\nP3: {p}\nR0_rect: {eye}\nTr_velo_to_cam: {tr}\nTr_imu_to_velo: {tr}\n")
    return path


def camera_from_p2(p2: np.ndarray) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a rectified P2."""
    p2 = np.asarray(p2, np.float64).reshape(3, 4)
    return float(p2[0, 0]), float(p2[1, 1]), float(p2[0, 2]), float(p2[1, 2])


def box_corners(box7: np.ndarray) -> np.ndarray:
    """(N, 7) [x, y, z, l, w, h, ry] -> (N, 8, 3) corners (KITTI devkit order: bottom 4 then top 4)."""
    b = np.asarray(box7, np.float64).reshape(-1, 7)
    x, y, z, l, w, h, ry = (b[:, i:i + 1] for i in range(7))  # noqa: E741
    xs = np.concatenate([l, l, -l, -l, l, l, -l, -l], 1) / 2
    ys = np.concatenate([0 * h] * 4 + [-h] * 4, 1)
    zs = np.concatenate([w, -w, -w, w, w, -w, -w, w], 1) / 2
    c, s = np.cos(ry), np.sin(ry)
    cx = c * xs + s * zs + x
    cz = -s * xs + c * zs + z
    return np.stack([cx, ys + y, cz], -1)


def project(points: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """(..., 3) camera points -> (..., 2) pixels through P2 (points must be in front of the camera)."""
    pts = np.asarray(points, np.float64)
    hom = np.concatenate([pts, np.ones(pts.shape[:-1] + (1,))], -1) @ np.asarray(p2, np.float64).reshape(3, 4).T
    return hom[..., :2] / np.maximum(hom[..., 2:3], 1e-6)


class KittiDataset:
    """One split of a KITTI-format folder; item i -> {"id", "image" (H, W, 3) uint8, "P2" (3, 4),
    "objects" list[KittiObject], "bev" (Hb, Wb) uint8 or None}."""

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        self.dir = self.root / split
        if not (self.dir / "label_2").is_dir():
            raise FileNotFoundError(f"{self.dir / 'label_2'} is missing: a KITTI folder needs SPLIT/image_2, SPLIT/label_2, SPLIT/calib")
        self.ids = sorted(p.stem for p in (self.dir / "label_2").glob("*.txt"))
        meta = self.root / "meta.json"
        self.meta: dict[str, Any] = json.loads(meta.read_text()) if meta.is_file() else {}

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.dir / "image_2" / f"{self.ids[i]}.png"

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        fid = self.ids[i]
        bev_path = self.dir / "bev_2" / f"{fid}.png"
        return {"id": fid, "image": np.asarray(Image.open(self.image_path(i)).convert("RGB")),
                "P2": read_calib(self.dir / "calib" / f"{fid}.txt")["P2"],
                "objects": read_labels(self.dir / "label_2" / f"{fid}.txt"),
                "bev": np.asarray(Image.open(bev_path)) if bev_path.is_file() else None}
