"""diffusers folder interop: save and load local model folders, class checks, pipeline subfolders."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DModel

from zoo.diffusion.interop import (
    DiffusersFolderError,
    load_diffusers,
    model_class,
    read_config,
    resolve_model_folder,
    save_diffusers,
    save_pipeline_folder,
)


def _unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()


def test_round_trip_infers_the_class(tmp_path):
    unet = _unet()
    folder = save_diffusers(unet, tmp_path / "unet")
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    assert read_config(folder)["_class_name"] == "UNet2DModel"
    loaded = load_diffusers(folder)
    assert type(loaded) is UNet2DModel
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 7])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t).sample, unet(x, t).sample, rtol=0, atol=0)
    assert type(load_diffusers(folder, "UNet2DModel")) is UNet2DModel


def test_pipeline_subfolder_and_errors(tmp_path):
    root = save_pipeline_folder({"unet": _unet()}, tmp_path / "pipe")
    index = json.loads((root / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert resolve_model_folder(root, "unet") == root / "unet"
    assert type(load_diffusers(root, subfolder="unet")) is UNet2DModel
    with pytest.raises(DiffusersFolderError, match="name the subfolder"):
        load_diffusers(root)
    with pytest.raises(DiffusersFolderError, match="without a vae/ subfolder.*unet"):
        load_diffusers(root, subfolder="vae")
    with pytest.raises(DiffusersFolderError, match="holds a UNet2DModel, not a AutoencoderKL"):
        load_diffusers(root / "unet", "AutoencoderKL")
    with pytest.raises(DiffusersFolderError, match="got a file"):
        load_diffusers(root / "model_index.json")


def test_only_model_classes():
    assert model_class("AutoencoderKL").__name__ == "AutoencoderKL"
    with pytest.raises(DiffusersFolderError, match="not a diffusers model class"):
        model_class("DDIMScheduler")
    with pytest.raises(DiffusersFolderError, match="not a diffusers model class"):
        model_class("os")
