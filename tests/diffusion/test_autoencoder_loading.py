"""Loading autoencoders: our safetensors, random-weight diffusers folders, SD pipeline folders, the
original LDM checkpoint layout, the card's converter, and the save_pretrained round trip into plain
diffusers."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DModel

from zoo.diffusion.autoencoder import (
    AutoencoderConfig,
    LatentCodec,
    build_autoencoder,
    convert_vae_state_dict,
    load_autoencoder,
    preset_config,
)
from zoo.diffusion.interop import DiffusersFolderError, save_pipeline_folder
from zoo.weights import WeightsError, WeightsMismatchError, save_weights

SMALL = AutoencoderConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16)


def _vae(config: AutoencoderConfig = SMALL, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return build_autoencoder(config).eval()


def _images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5))


def _same_outputs(a: LatentCodec, b: LatentCodec, size: int = 16) -> None:
    x = _images(size=size)
    with torch.no_grad():
        torch.testing.assert_close(a.encode(x), b.encode(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(a.decode(a.encode(x)), b.decode(b.encode(x)), rtol=0, atol=1e-6)


def test_random_diffusers_folder(tmp_path):
    vae = _vae()
    vae.save_pretrained(tmp_path / "vae")  # plain diffusers, no statistics in the config
    codec = load_autoencoder(tmp_path / "vae")
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(codec.posterior_mean(x), vae.encode(x * 2 - 1).latent_dist.mean)
    assert codec.scaling.tolist() == [0.5] * 4  # scaling_factor 1.0 x sigma_data


def test_sd_pipeline_folder(tmp_path):
    vae = _vae(AutoencoderConfig(block_out_channels=(8, 16), norm_num_groups=4, sample_size=16, scaling_factor=0.18215))
    unet = UNet2DModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    root = save_pipeline_folder({"vae": vae, "unet": unet}, tmp_path / "sd", "StableDiffusionPipeline")
    assert (root / "model_index.json").is_file() and (root / "unet" / "config.json").is_file()
    codec = load_autoencoder(root)
    assert codec.scaling.tolist() == pytest.approx([0.18215 * 0.5] * 4)
    _same_outputs(codec, LatentCodec(vae))
    # a pipeline folder without its VAE says so
    no_vae = save_pipeline_folder({"unet": unet}, tmp_path / "no-vae")
    with pytest.raises(DiffusersFolderError, match=r"without a vae/ subfolder"):
        load_autoencoder(no_vae)


def test_folder_errors_name_what_is_missing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DiffusersFolderError, match="config.json"):
        load_autoencoder(empty)
    _vae().save_pretrained(tmp_path / "no-weights")
    (tmp_path / "no-weights" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(DiffusersFolderError, match="no weights.*diffusion_pytorch_model.safetensors"):
        load_autoencoder(tmp_path / "no-weights")
    UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
                up_block_types=("UpBlock2D",) * 2).save_pretrained(tmp_path / "unet")
    with pytest.raises(DiffusersFolderError, match="holds a UNet2DModel, not a AutoencoderKL"):
        load_autoencoder(tmp_path / "unet")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_autoencoder(tmp_path / "nothing-here")


def test_save_pretrained_round_trip_opens_in_plain_diffusers(tmp_path):
    codec = LatentCodec(_vae())
    codec.fit(_images(8).split(4))
    folder = codec.save_pretrained(tmp_path / "ours")
    plain = AutoencoderKL.from_pretrained(folder, local_files_only=True).eval()
    assert plain.config.scaling_factor == 0.5
    assert plain.config.latents_mean == pytest.approx(codec.statistics()["mean"])
    x = _images()
    with torch.no_grad():
        # diffusers' SDXL convention reproduces our standardised latents from its config alone
        z = plain.encode(x * 2 - 1).latent_dist.mean
        mean = torch.tensor(plain.config.latents_mean).view(1, 4, 1, 1)
        std = torch.tensor(plain.config.latents_std).view(1, 4, 1, 1)
        torch.testing.assert_close((z - mean) * plain.config.scaling_factor / std, codec.encode(x), rtol=0, atol=1e-5)
    again = load_autoencoder(folder)
    torch.testing.assert_close(again.scaling, codec.scaling)
    torch.testing.assert_close(again.shift, codec.shift)
    _same_outputs(again, codec)


def test_our_safetensors_with_sidecar(tmp_path):
    import dataclasses

    codec = LatentCodec(_vae())
    codec.set_statistics([0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0])
    path = save_weights(codec, tmp_path / "run" / "model.safetensors",
                        {"model": "autoencoder-kl", "variant": "custom", "config": dataclasses.asdict(SMALL)})
    for where in (path, tmp_path / "run"):
        loaded = load_autoencoder(where)
        torch.testing.assert_close(loaded.scaling, codec.scaling)
        _same_outputs(loaded, codec)
    path.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match="sidecar"):
        load_autoencoder(path)
    assert torch.equal(load_autoencoder(path, config=SMALL).shift, codec.shift)


# -- the original LDM / Stable Diffusion layout -------------------------------------------------
def to_ldm_layout(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL names -> CompVis LDM names (the layout of SD's .ckpt files), written
    here from the two codebases' module names so the converter is checked against an independent map."""
    out = {}
    for key, value in state.items():
        k = key
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", k)
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
                   lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample.", k)
        k = k.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
        k = k.replace("mid_block.attentions.0.", "mid.attn_1.").replace("conv_shortcut.", "nin_shortcut.")
        k = k.replace("conv_norm_out.", "norm_out.").replace("attn_1.group_norm.", "attn_1.norm.")
        k = k.replace("attn_1.to_q.", "attn_1.q.").replace("attn_1.to_k.", "attn_1.k.").replace("attn_1.to_v.", "attn_1.v.")
        k = k.replace("attn_1.to_out.0.", "attn_1.proj_out.")
        if "attn_1." in k and k.endswith(".weight") and value.dim() == 2:
            value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out[k] = value
    return out


def test_ldm_checkpoint_layout(tmp_path):
    config = AutoencoderConfig(block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=16)
    vae = _vae(config)
    ldm = to_ldm_layout(vae.state_dict(), levels=3)
    assert "encoder.down.0.block.0.conv1.weight" in ldm and "decoder.up.2.block.0.conv1.weight" in ldm
    full_ckpt = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    full_ckpt["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1)  # the rest of an SD checkpoint
    torch.save({"state_dict": full_ckpt}, tmp_path / "sd.ckpt")
    codec = load_autoencoder(tmp_path / "sd.ckpt", config=config)
    _same_outputs(codec, LatentCodec(vae))
    with pytest.raises(WeightsError, match="needs config="):
        load_autoencoder(tmp_path / "sd.ckpt")
    # a checkpoint of another size names the mis-shaped keys
    with pytest.raises(WeightsMismatchError, match="mis-shaped"):
        load_autoencoder(tmp_path / "sd.ckpt", config=AutoencoderConfig(block_out_channels=(16, 16, 16), norm_num_groups=4))


def test_convert_keeps_our_layout_and_fills_statistics():
    config = SMALL
    codec = LatentCodec(_vae())
    ours = convert_vae_state_dict(codec.state_dict(), config)
    assert set(ours) == set(codec.state_dict())
    foreign = convert_vae_state_dict(codec.vae.state_dict(), config)
    assert set(foreign) == set(codec.state_dict()) and foreign["scaling"].tolist() == [0.5] * 4


def test_card_converter_loads_a_diffusers_folder(tmp_path):
    from zoo import registry

    torch.manual_seed(1)
    vae = build_autoencoder(preset_config("micro-f4")).eval()
    vae.save_pretrained(tmp_path / "vae")
    pipeline = registry.create_model("autoencoder-kl", "micro-f4", weights=tmp_path / "vae")
    _same_outputs(pipeline.model, LatentCodec(vae), size=32)
