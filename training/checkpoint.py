"""Training checkpoints: atomic writes, retention, and RNG state that `weights_only` loads.

A checkpoint is `checkpoints/step-000123.pt` (123 updates done). It is written to a temp
file in the same folder and moved into place with `os.replace`, so a crash mid-write
never leaves a truncated checkpoint behind. `last.pt` points at the newest one.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
KEEP = 2
_NAME = re.compile(r"^step-(\d+)\.pt$")
_TEMP_MARK = ".tmp-"


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:06d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every finished checkpoint in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def remove_temp_files(folder: Path) -> None:
    """Delete temp files that an interrupted write left behind."""
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            if _TEMP_MARK in path.name:
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success move it onto `path`, on failure delete it."""
    temp = path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}")
    try:
        yield temp
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if os.path.lexists(temp):
            temp.unlink()


def save_checkpoint(state: dict[str, Any], folder: Path, step: int, keep: int = KEEP) -> Path:
    """Write `state` as step-<step>.pt atomically, point last.pt at it, keep the newest `keep`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    with _atomic_target(path) as temp:
        torch.save(state, temp)
    _point_last(folder, path)
    for _, old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _point_last(folder: Path, target: Path) -> None:
    """last.pt as a relative symlink (replaced atomically); a copy where symlinks are not allowed."""
    last = folder / LAST
    temp = folder / f".{LAST}{_TEMP_MARK}{os.getpid()}"
    try:
        if os.path.lexists(temp):
            temp.unlink()
        os.symlink(target.name, temp)
        os.replace(temp, last)
    except OSError:
        if os.path.lexists(temp):
            temp.unlink()
        with _atomic_target(last) as copy_temp:
            shutil.copyfile(target, copy_temp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors and plain containers only."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def capture_rng() -> dict[str, Any]:
    """Global RNG states of torch (CPU and every CUDA device), numpy and `random`, as tensors
    and plain Python values so that `torch.load(weights_only=True)` reads them back."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_state[0]), "state": list(py_state[1]), "gauss_next": py_state[2]},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`. CUDA states are restored only if the device count matches."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda", [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].cpu().numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (evaluation, finalize) without moving the training RNG streams."""
    saved = capture_rng()
    try:
        yield
    finally:
        restore_rng(saved)
