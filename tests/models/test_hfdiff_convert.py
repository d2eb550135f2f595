"""HF-Diff converters: random-weight checkpoints in the official layouts (ResShift / SinSR / HF-Diff
UNetModelSwin, ResShift's LDM VQGAN f4, DINOv2 in transformers layout) round-trip into our modules."""

import json
import re
from pathlib import Path

import pytest
import torch

from zoo import registry
from zoo.models.hfdiff import micro_config, paper_config
from zoo.models.hfdiff.convert import convert_state_dict, convert_unet, convert_vq, load_dino_folder, merge_official
from zoo.models.hfdiff.model import HFDiffModel, SwinUNet, VQConfig, build_vq, shift_mask
from zoo.weights import WeightsError

OFFICIAL = json.loads((Path(__file__).parent / "data" / "hfdiff_official_keys.json").read_text())


def official_unet_layout(net: SwinUNet, prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Our U-Net's weights written as the official model saves them: the same names, plus the Swin
    buffers it keeps (relative_position_index, attn_mask), under a DDP prefix."""
    state = dict(net.state_dict())
    for name, module in net.named_modules():
        if hasattr(module, "relative_position_index"):
            state[f"{name}.relative_position_index"] = module.relative_position_index
        if hasattr(module, "shift") and hasattr(module, "attn") and module.shift:
            state[f"{name}.attn_mask"] = shift_mask(net.config.image_size, net.config.image_size, module.window_size, module.shift)
    return {prefix + k: v for k, v in state.items()}


def ldm_vq_layout(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers VQModel names -> LDM VQModelTorch names (the official file's), attention as 1x1 convs."""
    out = {}
    for key, value in state.items():
        k = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        k = k.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", k)
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.", k)
        k = k.replace(".resnets.", ".block.").replace(".upsamplers.0.", ".upsample.")
        k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
        k = k.replace("attn_1.group_norm", "attn_1.norm").replace("attn_1.to_q", "attn_1.q").replace("attn_1.to_k", "attn_1.k")
        k = k.replace("attn_1.to_v", "attn_1.v").replace("attn_1.to_out.0", "attn_1.proj_out")
        if "attn_1." in k and k.endswith("weight") and value.dim() == 2:
            value = value[:, :, None, None]
        out[k] = value
    return out


def test_official_layouts_at_paper_size_on_meta():
    """Names and shapes: our U-Net against the official file's (buffers dropped), and our LDM writer
    (used below for value round trips) against the official VQGAN's."""
    cfg = paper_config()
    with torch.device("meta"):
        unet = SwinUNet(cfg.unet)
        vq = build_vq(cfg.autoencoder)
    official = {k: torch.empty(s, device="meta") for k, s in OFFICIAL["unet"].items()}
    converted = convert_unet(official, unet.state_dict())
    assert {k: list(v.shape) for k, v in converted.items()} == {k: list(v.shape) for k, v in unet.state_dict().items()}
    written = ldm_vq_layout(vq.state_dict(), 3)
    assert {k: list(v.shape) for k, v in written.items()} == OFFICIAL["vq"]


def test_unet_round_trip_and_refusals():
    cfg = micro_config()
    torch.manual_seed(0)
    source, target = SwinUNet(cfg.unet), SwinUNet(cfg.unet)
    for p in source.parameters():
        torch.nn.init.normal_(p, std=0.05)
    target.load_state_dict(convert_unet(official_unet_layout(source), target.state_dict()))
    x, t, lq = torch.randn(1, 4, 16, 16), torch.tensor([5]), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(source(x, t, lq), target(x, t, lq))
    bad = official_unet_layout(source)
    bad.pop("module.out.2.weight")
    with pytest.raises(WeightsError, match="out.2.weight"):
        convert_unet(bad, target.state_dict())
    with pytest.raises(WeightsError, match="codec"):  # a bare U-Net through the card's converter: told what to do
        convert_state_dict(official_unet_layout(source, ""), cfg)


def test_vq_round_trip():
    cfg = VQConfig(block_out_channels=(32, 64), layers_per_block=1, latent_channels=3, num_vq_embeddings=16, norm_num_groups=8)
    torch.manual_seed(0)
    source, target = build_vq(cfg), build_vq(cfg)
    for p in source.parameters():
        torch.nn.init.normal_(p, std=0.05)
    target.load_state_dict(convert_vq(ldm_vq_layout(source.state_dict(), 2), target))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(source.decode(source.encode(x).latents).sample, target.decode(target.encode(x).latents).sample, atol=1e-6)


def test_merged_bundle_loads_through_create_model(tmp_path):
    """`unet.` / `teacher.` / `autoencoder.` official parts in one torch file -> create_model(weights=)."""
    cfg = micro_config()
    torch.manual_seed(1)
    student, teacher = SwinUNet(cfg.unet), SwinUNet(cfg.unet)
    codec = HFDiffModel(cfg).codec
    bundle = {**{f"unet.{k}": v for k, v in official_unet_layout(student, "").items()},
              **{f"teacher.{k}": v for k, v in official_unet_layout(teacher, "").items()},
              **{f"autoencoder.{k}": v for k, v in codec.state_dict().items()}}
    torch.save(bundle, tmp_path / "official.pth")
    pipe = registry.create_model("hfdiff", "micro", weights=tmp_path / "official.pth")
    assert torch.equal(pipe.model.teacher.out[2].weight, teacher.out[2].weight)
    assert torch.equal(pipe.model.unet.input_blocks[0][0].weight, student.input_blocks[0][0].weight)
    assert pipe.model.ready[[0, 2, 3]].all() and not pipe.model.is_ready("inn")
    assert torch.equal(merge_official(cfg, student=official_unet_layout(student))["unet.out.2.bias"], student.out[2].bias)


def test_dino_transformers_folder_round_trip(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                     image_size=28, patch_size=14)).eval()
    model.save_pretrained(tmp_path / "dino")
    loaded = load_dino_folder(tmp_path / "dino")
    x = torch.rand(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).pooler_output, loaded(pixel_values=x).pooler_output)
    with pytest.raises(FileNotFoundError):
        load_dino_folder(tmp_path)
