"""Loading official DocDiff checkpoints (two state dicts: init_predictor, denoiser)."""

from __future__ import annotations

import pytest
import torch

from zoo import registry
from zoo.models.docdiff.convert import convert_state_dict, load_official, merge_official
from zoo.models.docdiff.model import DocDiff, preset_config

MICRO = preset_config("micro")


def _official_files(tmp_path, seed: int = 3):
    """Random-weight checkpoints in the reference layout: `torch.save(unet.state_dict())` each."""
    torch.manual_seed(seed)
    source = DocDiff(MICRO)
    torch.save(source.init_predictor.state_dict(), tmp_path / "init.pth")
    torch.save(source.denoiser.state_dict(), tmp_path / "denoiser.pth")
    return source


def test_reference_key_names():
    keys = set(DocDiff(preset_config("seal")).denoiser.state_dict())
    for name in ("image_proj.weight", "time_emb.lin1.weight", "time_emb.lin2.bias", "down.0.res.conv1.weight",
                 "down.0.res.time_emb.weight", "down.1.conv.weight", "middle.res1.conv2.bias", "middle.dia4.weight",
                 "up.0.res.shortcut.weight", "up.2.conv.weight", "final.weight"):
        assert name in keys, name


def test_load_official_round_trip(tmp_path):
    source = _official_files(tmp_path)
    pipeline = registry.create_model("docdiff", "micro", weights="random")
    load_official(pipeline, tmp_path / "init.pth", tmp_path / "denoiser.pth")
    for key, value in source.state_dict().items():
        assert torch.equal(pipeline.model.state_dict()[key], value), key
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(pipeline.run_graph("coarse", x)[0], source.eval().coarse(x))


def test_merged_file_through_create_model(tmp_path):
    source = _official_files(tmp_path)
    merged = {"init_predictor": source.init_predictor.state_dict(), "denoiser": source.denoiser.state_dict()}
    torch.save(merged, tmp_path / "docdiff.pth")
    pipeline = registry.create_model("docdiff", "micro", weights=tmp_path / "docdiff.pth")
    for key, value in source.state_dict().items():
        assert torch.equal(pipeline.model.state_dict()[key], value), key
    # DataParallel-wrapped whole network state dict
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}
    assert convert_state_dict(wrapped, MICRO).keys() == source.state_dict().keys()


def test_errors_name_the_keys(tmp_path):
    source = _official_files(tmp_path)
    with pytest.raises(ValueError, match="one U-Net only.*init_predictor"):
        convert_state_dict(source.init_predictor.state_dict(), MICRO)
    with pytest.raises(ValueError, match="one U-Net only.*denoiser"):
        convert_state_dict(source.denoiser.state_dict(), MICRO)
    merged = merge_official(source.init_predictor.state_dict(), source.denoiser.state_dict())
    merged.pop("denoiser.final.bias")
    merged["denoiser.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \(1\): denoiser.final.bias.*unexpected \(1\): denoiser.extra.weight"):
        convert_state_dict(merged, MICRO)
    # a paper-size checkpoint does not fit the micro variant: the shapes are named
    big = DocDiff(preset_config("deblur"))
    paper = merge_official(big.init_predictor.state_dict(), big.denoiser.state_dict())
    with pytest.raises(ValueError, match="mis-shaped"):
        convert_state_dict(paper, MICRO)
    assert convert_state_dict(paper, preset_config("deblur")).keys() == big.state_dict().keys()
