"""AnyText loaders: an SD1.5-style diffusers pipeline folder (AnyText's starting point) and the diffusers
research project's folders (controlnet/ with the auxiliary module inside, text_embedding_module/), built
tiny with random weights at the micro's sizes; and the official checkpoint's AnyText-specific keys."""

import pytest
import torch
from safetensors.torch import save_file

from zoo import registry
from zoo.models.anytext.convert import convert_state_dict
from zoo.weights import WeightsError


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(3)
    model = registry.build_pipeline("anytext", "micro").model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # no zeros left: every key's origin shows
    return model


def _sd_folder(model, root):
    model.unet.save_pretrained(root / "unet")
    model.codec.vae.save_pretrained(root / "vae")
    model.text_encoder.save_pretrained(root / "text_encoder")
    (root / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return root


def test_sd15_diffusers_folder_starts_controlnet_from_the_unet(source, tmp_path):
    folder = _sd_folder(source, tmp_path / "sd")
    loaded = registry.create_model("anytext", "micro", weights=folder).model
    ours, theirs = loaded.state_dict(), source.state_dict()
    for key in theirs:
        if key.startswith(("unet.", "text_encoder.", "codec.vae.")):
            torch.testing.assert_close(ours[key], theirs[key], msg=key)
    for key, value in ours.items():
        if key.startswith("controlnet.down_blocks."):
            torch.testing.assert_close(value, ours["unet." + key[len("controlnet."):]])
        if key.startswith(("controlnet.controlnet_down_blocks.", "controlnet.controlnet_mid_block.", "auxiliary.fuse_block.",
                           "embedding.proj.0.")):
            assert value.abs().max() == 0, key
    assert ours["codec.scaling"].tolist() == [1.0] * 4  # the micro-f4 preset's scaling factor


def test_research_project_folder_round_trip(source, tmp_path):
    folder = _sd_folder(source, tmp_path / "research")
    state = source.state_dict()
    controlnet = {k[len("controlnet."):]: v.contiguous() for k, v in state.items() if k.startswith("controlnet.")}
    controlnet.update({f"controlnet_cond_embedding.{k[len('auxiliary.'):]}": v.contiguous() for k, v in state.items()
                       if k.startswith("auxiliary.")})
    (folder / "controlnet").mkdir()
    save_file(controlnet, str(folder / "controlnet" / "diffusion_pytorch_model.safetensors"))
    (folder / "text_embedding_module").mkdir()
    save_file({k[len("embedding."):]: v.contiguous() for k, v in state.items() if k.startswith("embedding.")},
              str(folder / "text_embedding_module" / "model.safetensors"))
    loaded = registry.create_model("anytext", "micro", weights=folder).model.state_dict()
    for key, value in state.items():
        if key.startswith("codec.") and not key.startswith("codec.vae."):
            continue  # scaling buffers come from the preset
        torch.testing.assert_close(loaded[key], value, msg=key)


def test_official_checkpoint_anytext_parts(source):
    """The AnyText-specific keys of anytext_v1.1.ckpt (cldm.py's glyph/position/fuse blocks under
    control_model., embedding_manager.proj, cond_stage_model.transformer) land on ours; the LDM-layout
    UNet / ControlNet / VAE keys go through diffusers' own single-file converters."""
    state = source.state_dict()
    checkpoint = {f"control_model.{k[len('auxiliary.'):]}": v for k, v in state.items() if k.startswith("auxiliary.")}
    checkpoint.update({f"embedding_manager.{k[len('embedding.'):]}": v for k, v in state.items() if k.startswith("embedding.")})
    checkpoint.update({f"cond_stage_model.transformer.text_model.{k[len('text_encoder.'):]}": v for k, v in state.items()
                       if k.startswith("text_encoder.")})
    checkpoint["model.diffusion_model.time_embed.0.weight"] = state["unet.time_embedding.linear_1.weight"]
    out = convert_state_dict({f"state_dict.{k}": v for k, v in checkpoint.items()}, source.config)
    for key, value in state.items():
        if key.startswith(("auxiliary.", "embedding.", "text_encoder.")):
            torch.testing.assert_close(out[key], value, msg=key)
    torch.testing.assert_close(out["unet.time_embedding.linear_1.weight"], state["unet.time_embedding.linear_1.weight"])


def test_unknown_layout_names_its_components(source, tmp_path):
    with pytest.raises(ValueError, match="found components"):
        convert_state_dict({"unet.conv_in.weight": torch.zeros(1)}, source.config)
    path = tmp_path / "partial"
    source.unet.save_pretrained(path / "unet")
    with pytest.raises((ValueError, WeightsError)):
        registry.create_model("anytext", "micro", weights=path)
