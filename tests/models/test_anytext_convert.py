"""AnyText loaders: an SD1.5-style diffusers pipeline folder (AnyText's starting point), the diffusers
research project's folders (controlnet/ with the auxiliary module inside, text_embedding_module/) and the
official checkpoint's LDM layout, each built tiny with random weights at the micro's sizes."""

import re

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


# -- the official layout, built from our modules: the inverse of diffusers' single-file renaming ---------------
RES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _res(rest):
    head, _, tail = rest.partition(".")
    return RES[head] + "." + tail


def unet_to_ldm(state, layers):
    """diffusers UNet2DConditionModel / ControlNetModel keys -> the original LDM (openaimodel / cldm) keys."""
    L, out = layers, {}
    for k, v in state.items():
        n = None
        if k.startswith("conv_in."):
            n = "input_blocks.0.0." + k[8:]
        elif k.startswith("time_embedding.linear_"):
            n = ("time_embed.0." if "linear_1" in k else "time_embed.2.") + k.split(".")[-1]
        elif k.startswith("conv_norm_out."):
            n = "out.0." + k.split(".")[-1]
        elif k.startswith("conv_out."):
            n = "out.2." + k.split(".")[-1]
        elif mm := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            n = f"input_blocks.{1 + int(mm[1]) * (L + 1) + int(mm[2])}.0.{_res(mm[3])}"
        elif mm := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k):
            n = f"input_blocks.{1 + int(mm[1]) * (L + 1) + int(mm[2])}.1.{mm[3]}"
        elif mm := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
            n = f"input_blocks.{(int(mm[1]) + 1) * (L + 1)}.0.op.{mm[2]}"
        elif mm := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", k):
            n = f"middle_block.{2 * int(mm[1])}.{_res(mm[2])}"
        elif mm := re.match(r"mid_block\.attentions\.0\.(.*)", k):
            n = f"middle_block.1.{mm[1]}"
        elif mm := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            n = f"output_blocks.{int(mm[1]) * (L + 1) + int(mm[2])}.0.{_res(mm[3])}"
        elif mm := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k):
            n = f"output_blocks.{int(mm[1]) * (L + 1) + int(mm[2])}.1.{mm[3]}"
        elif mm := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k):
            b = int(mm[1])
            attn = any(x.startswith(f"up_blocks.{b}.attentions.") for x in state)
            n = f"output_blocks.{b * (L + 1) + L}.{2 if attn else 1}.conv.{mm[2]}"
        elif mm := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", k):
            n = f"zero_convs.{mm[1]}.0.{mm[2]}"
        elif mm := re.match(r"controlnet_mid_block\.(.*)", k):
            n = f"middle_block_out.0.{mm[1]}"
        if n is None:
            raise KeyError(k)
        out[n] = v
    return out


VAE_RES = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state, levels):
    """diffusers AutoencoderKL keys -> the original LDM first-stage keys (attention projections as 1x1 convs)."""
    out = {}
    for k, v in state.items():
        n = k
        for side in ("encoder", "decoder"):
            if not k.startswith(side + "."):
                continue
            rest = k[len(side) + 1:]
            if mm := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.*)", rest):
                i = int(mm[2]) if mm[1] == "down" else levels - 1 - int(mm[2])
                n = f"{side}.{mm[1]}.{i}.block.{mm[3]}.{VAE_RES.get(mm[4], mm[4])}.{mm[5]}"
            elif mm := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", rest):
                n = f"{side}.down.{mm[1]}.downsample.conv.{mm[2]}"
            elif mm := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", rest):
                n = f"{side}.up.{levels - 1 - int(mm[1])}.upsample.conv.{mm[2]}"
            elif mm := re.match(r"mid_block\.resnets\.(\d)\.(\w+)\.(.*)", rest):
                n = f"{side}.mid.block_{int(mm[1]) + 1}.{VAE_RES.get(mm[2], mm[2])}.{mm[3]}"
            elif mm := re.match(r"mid_block\.attentions\.0\.(.*)\.(weight|bias)", rest):
                n = f"{side}.mid.attn_1.{VAE_ATTN[mm[1]]}.{mm[2]}"
                if v.dim() == 2:
                    v = v[:, :, None, None]
            elif rest.startswith("conv_norm_out."):
                n = f"{side}.norm_out.{rest.split('.')[-1]}"
        out["first_stage_model." + n] = v
    return out


def test_official_checkpoint_round_trip(source, tmp_path):
    """anytext_v1.1.ckpt's layout (a ControlLDM state dict under "state_dict"): the UNet and cldm.py's ControlNet
    in LDM naming with glyph/position/fuse blocks, the LDM VAE, CLIP under cond_stage_model.transformer, the
    embedding manager's proj; loaded through create_model, every key lands where it came from."""
    state = source.state_dict()
    layers = source.unet.config.layers_per_block
    part = lambda prefix: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
    checkpoint = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(part("unet."), layers).items()}
    checkpoint.update({f"control_model.{k}": v for k, v in unet_to_ldm(part("controlnet."), layers).items()})
    checkpoint.update({f"control_model.{k}": v for k, v in part("auxiliary.").items()})
    checkpoint.update(vae_to_ldm(part("codec.vae."), len(source.codec.vae.config.block_out_channels)))
    checkpoint.update({f"cond_stage_model.transformer.text_model.{k}": v for k, v in part("text_encoder.").items()})
    checkpoint.update({f"embedding_manager.{k}": v for k, v in part("embedding.").items()})
    path = tmp_path / "anytext_v1.1.ckpt"
    torch.save({"state_dict": {k: v.clone() for k, v in checkpoint.items()}}, path)
    loaded = registry.create_model("anytext", "micro", weights=path).model.state_dict()
    for key, value in state.items():
        if key in ("codec.scaling", "codec.shift"):
            continue  # SD's latent scaling comes from the preset
        torch.testing.assert_close(loaded[key], value.reshape(loaded[key].shape), msg=key)


def test_unknown_layout_names_its_components(source, tmp_path):
    with pytest.raises(ValueError, match="found components"):
        convert_state_dict({"unet.conv_in.weight": torch.zeros(1)}, source.config)
    path = tmp_path / "partial"
    source.unet.save_pretrained(path / "unet")
    with pytest.raises((ValueError, WeightsError)):
        registry.create_model("anytext", "micro", weights=path)
