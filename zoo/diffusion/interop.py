"""diffusers interop: save our nets as diffusers model folders and load local diffusers folders.

A diffusers model folder holds `config.json` (the constructor's arguments plus `_class_name` and
`_diffusers_version`) and `diffusion_pytorch_model.safetensors` (or a legacy `.bin`). A pipeline
folder (a Stable Diffusion checkout) holds `model_index.json` and one such folder per component
(`vae/`, `unet/`, `text_encoder/`, ...). Everything here reads local paths only
(`from_pretrained(..., local_files_only=True)`), never a hub, and says which file is missing.

`save_diffusers(model, folder)` writes a folder that plain diffusers opens
(`AutoencoderKL.from_pretrained(folder)`); `load_diffusers(path, cls)` opens a model folder, or the
`subfolder` of a pipeline folder, checking that the folder holds the class asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CONFIG_NAME = "config.json"
PIPELINE_INDEX = "model_index.json"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class DiffusersFolderError(FileNotFoundError):
    """A path that is not a loadable diffusers folder; the message names what is missing."""


def read_config(folder: str | Path) -> dict[str, Any]:
    """The `config.json` of a diffusers model folder."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise DiffusersFolderError(f"{folder}: no {CONFIG_NAME} (not a diffusers model folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DiffusersFolderError(f"{path}: not valid JSON ({err})") from err


def is_pipeline_folder(path: str | Path) -> bool:
    return (Path(path) / PIPELINE_INDEX).is_file()


def resolve_model_folder(path: str | Path, subfolder: str | None = None) -> Path:
    """The folder holding the model's `config.json` and weights.

    `path` is a model folder, or a pipeline folder whose `subfolder` (e.g. "vae", "unet") is one.
    When `subfolder` is given and `path` itself is a model folder, `path` is used as is."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DiffusersFolderError(f"{root}: no such file or folder")
    if not root.is_dir():
        raise DiffusersFolderError(f"{root}: a diffusers model is a folder (config.json + {WEIGHT_FILES[0]}), got a file")
    if (root / CONFIG_NAME).is_file():
        folder = root
    elif subfolder and (root / subfolder).is_dir():
        folder = root / subfolder
    elif subfolder:
        kind = "a pipeline folder (model_index.json)" if is_pipeline_folder(root) else "a folder"
        listing = ", ".join(sorted(p.name for p in root.iterdir())[:12]) or "nothing"
        raise DiffusersFolderError(
            f"{root}: {kind} without a {subfolder}/ subfolder and without {CONFIG_NAME}; it holds: {listing}")
    else:
        raise DiffusersFolderError(f"{root}: no {CONFIG_NAME} (not a diffusers model folder; for a pipeline folder name the subfolder)")
    if not (folder / CONFIG_NAME).is_file():
        raise DiffusersFolderError(f"{folder}: no {CONFIG_NAME}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise DiffusersFolderError(f"{folder}: has {CONFIG_NAME} but no weights ({' or '.join(WEIGHT_FILES)})")
    return folder


def model_class(name: str) -> type:
    """A diffusers model class by name (`config.json`'s `_class_name`); only `ModelMixin` subclasses."""
    import diffusers
    from diffusers.models.modeling_utils import ModelMixin

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ModelMixin)):
        raise DiffusersFolderError(f"{name!r} is not a diffusers model class (diffusers {diffusers.__version__})")
    return cls


def load_diffusers(path: str | Path, cls: type | str | None = None, subfolder: str | None = None,
                   torch_dtype: torch.dtype | None = None) -> Any:
    """A diffusers model from a local folder (`from_pretrained(..., local_files_only=True)`).

    cls: the expected class (or its name); None takes `_class_name` from `config.json`. A folder
    holding another class (a UNet where a VAE was asked for) is refused, naming both."""
    folder = resolve_model_folder(path, subfolder)
    config = read_config(folder)
    found = config.get("_class_name")
    if cls is None:
        if not found:
            raise DiffusersFolderError(f"{folder / CONFIG_NAME}: no _class_name; pass cls= to say which model it holds")
        cls = model_class(found)
    elif isinstance(cls, str):
        cls = model_class(cls)
    if found and found != cls.__name__:
        raise DiffusersFolderError(f"{folder} holds a {found}, not a {cls.__name__}")
    # low_cpu_mem_usage=False: the plain loader (diffusers would warn and fall back without accelerate)
    kwargs: dict[str, Any] = {"local_files_only": True, "low_cpu_mem_usage": False}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    return cls.from_pretrained(str(folder), **kwargs)


def save_diffusers(model: Any, folder: str | Path) -> Path:
    """`model.save_pretrained(folder)` with safetensors weights; returns the folder. The result opens
    in plain diffusers with `type(model).from_pretrained(folder)`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_pipeline_folder(components: dict[str, Any], folder: str | Path, pipeline_class: str = "DiffusionPipeline") -> Path:
    """A minimal pipeline folder: each component saved under its own subfolder and a
    `model_index.json` naming them (the layout a Stable Diffusion checkout has), so that loaders
    that take a pipeline folder (`load_diffusers(path, subfolder="vae")`) find their part."""
    import diffusers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"_class_name": pipeline_class, "_diffusers_version": diffusers.__version__}
    for name, model in components.items():
        save_diffusers(model, folder / name)
        index[name] = ["diffusers", type(model).__name__]
    (folder / PIPELINE_INDEX).write_text(json.dumps(index, indent=2))
    return folder
