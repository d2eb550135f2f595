"""Weights: our safetensors + JSON sidecar, the local store, and foreign checkpoints.

Loading never unpickles arbitrary objects: safetensors for our files and library folders,
`torch.load(weights_only=True)` for foreign `.pth`/`.ckpt`/`.bin` files.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

if TYPE_CHECKING:
    from zoo.pipeline import Pipeline

FORMAT_TAG = "zoo"
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")
LIBRARY_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "pytorch_model.bin")
# the component folders of a diffusers pipeline folder (`save_pretrained` of a DiffusionPipeline) that read_state merges
PIPELINE_COMPONENTS = ("unet", "vae", "controlnet", "text_encoder", "transformer", "image_encoder", "text_embedding_module")


class WeightsError(ValueError):
    """A checkpoint that cannot be loaded into a model; the message says why."""


class WeightsMismatchError(WeightsError):
    def __init__(self, missing: list[str], unexpected: list[str], mis_shaped: list[tuple[str, tuple, tuple]]):
        self.missing, self.unexpected, self.mis_shaped = missing, unexpected, mis_shaped
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {preview_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {preview_names(unexpected)}")
        if mis_shaped:
            shown = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in mis_shaped]
            parts.append(f"{len(mis_shaped)} mis-shaped keys: {preview_names(shown)}")
        super().__init__("checkpoint does not match the model: " + "; ".join(parts))


def preview_names(names: Sequence[str], limit: int = 10) -> str:
    """The first `limit` names, comma-separated, and how many more: what error messages list."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def meta_shapes(build: Callable[[], nn.Module]) -> dict[str, torch.Size]:
    """Names and shapes of `build()`'s state dict, built on the meta device (no memory, no init time):
    what converters check a foreign checkpoint against."""
    with torch.device("meta"):
        module = build()
    return {k: v.shape for k, v in module.state_dict().items()}


def zoo_home() -> Path:
    return Path(os.environ.get("ZOO_HOME", Path.home() / ".cache" / "zoo"))


def store_dir(model: str) -> Path:
    return zoo_home() / "weights" / model


# -- our format ---------------------------------------------------------------------------
def save_weights(module: nn.Module | dict[str, torch.Tensor], path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write `path` (.safetensors) and its JSON sidecar `path.with_suffix('.json')`, atomically.

    metadata should hold model, variant, config, command and metrics."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"our weights are .safetensors files, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = module.state_dict() if isinstance(module, nn.Module) else module
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    header = {"format": FORMAT_TAG, "model": str(metadata.get("model", "")), "variant": str(metadata.get("variant", ""))}
    _atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    sidecar = json.dumps(metadata, indent=2, default=str).encode()
    _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_bytes(sidecar))
    return path


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; weights are ordinary files
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of one of our weight files ({} if it has none)."""
    sidecar = Path(path).with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.exists() else {}


def _safetensors_header(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


# -- loading ------------------------------------------------------------------------------
def load_into(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict load that names every missing, unexpected and mis-shaped key."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mis_shaped = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mis_shaped:
        raise WeightsMismatchError(missing, unexpected, mis_shaped)
    module.load_state_dict(state, strict=True)


def load_torch_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A foreign PyTorch checkpoint, pickle-free: tensors and plain containers only (plus
    `argparse.Namespace`, a plain attribute bag that DETR-style training checkpoints keep as "args")."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's refusal names the offending global
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(
            f"{path} holds pickled Python objects, not only tensors (a whole nn.Module, as "
            "nelson1425/EfficientAD saves its *_final.pth files, or a checkpoint with custom objects); "
            "loading it would run arbitrary code, so zoo refuses (torch.load(weights_only=True)). "
            "If you trust the file, re-save its state dict once from a trusted Python session "
            "(module.state_dict(), or ckpt['state_dict'] for Lightning) and load that. "
            f"Original error: {first_line}"
        ) from err
    return flatten_state(obj)


def flatten_state(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts of tensors (e.g. {"state_dict": {...}} or {"teacher": {...}}) to flat dotted keys."""
    flat: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        flat[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            flat.update(flatten_state(value, f"{prefix}{key}."))
    return flat


def unnest(state: dict[str, Any], heads: Sequence[str]) -> dict[str, Any]:
    """The part of a flattened checkpoint under the first of `heads` it holds ("ema", "model", ...: the
    `head.` prefix dropped), or the whole state when it holds none."""
    for head in heads:
        sub = {k[len(head) + 1:]: v for k, v in state.items() if k.startswith(head + ".")}
        if sub:
            return sub
    return state


def resolve_weights_path(model: str, spec: str | Path) -> Path:
    """A path as given, or a name in the local store ($ZOO_HOME/weights/MODEL/NAME[.safetensors])."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    for candidate in (store_dir(model) / str(spec), store_dir(model) / f"{spec}.safetensors", store_dir(model) / str(spec) / "model.safetensors"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"weights {str(spec)!r} not found: not a path, nor a name under {store_dir(model)}")


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, is_ours) from a file or folder in any layout we accept."""
    if path.is_dir():
        if (path / "model.safetensors").exists() and (path / "model.json").exists():
            return read_state(path / "model.safetensors")
        components = [c for c in PIPELINE_COMPONENTS if (path / c).is_dir()]
        if components and not any((path / name).exists() for name in LIBRARY_WEIGHT_FILES):
            # a diffusers pipeline folder: each component's weights under its folder name
            return {f"{c}.{key}": value for c in components for key, value in read_state(path / c)[0].items()}, False
        for name in LIBRARY_WEIGHT_FILES:
            if (path / name).exists():
                return read_state(path / name)[0], False
        raise WeightsError(f"{path}: no model.safetensors, diffusion_pytorch_model.safetensors or pytorch_model.bin inside")
    if path.suffix == ".safetensors":
        ours = _safetensors_header(path).get("format") == FORMAT_TAG
        return load_file(str(path)), ours
    if path.suffix in TORCH_SUFFIXES:
        return load_torch_file(path), False
    raise WeightsError(f"{path}: unknown weights format (expected .safetensors, a folder, or {', '.join(TORCH_SUFFIXES)})")


def load_weights(pipeline: Pipeline, spec: str | Path) -> dict[str, Any]:
    """Load weights into `pipeline.model`; returns the sidecar metadata (or {} for foreign files).

    Our files load directly (and must be for the same model and variant config); foreign
    checkpoints go through the family's converter (`card.converter(state, config)`)."""
    card = pipeline.card
    path = resolve_weights_path(card.name, spec)
    state, ours = read_state(path)
    metadata: dict[str, Any] = {}
    if ours:
        file = path if path.suffix == ".safetensors" else path / "model.safetensors"
        header = _safetensors_header(file)
        if header.get("model") and header["model"] != card.name:
            raise WeightsError(f"{path} holds weights for {header['model']!r}, not {card.name!r}")
        metadata = read_metadata(file)
    elif card.converter is not None:
        state = card.converter(state, pipeline.config)
    load_into(pipeline.model, state)
    return metadata
