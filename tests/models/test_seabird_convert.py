"""The official KITTI-360 checkpoint layout (snapshot with body / transformer / sem_head / det_head) onto ours."""

from __future__ import annotations

import pytest
import torch

from zoo import registry
from zoo.models.seabird.convert import backbone_key_map, convert_state_dict, official_names, to_official
from zoo.models.seabird.model import SeaBird, preset_config
from zoo.weights import WeightsError, flatten_state, load_torch_file


def test_backbone_names_follow_lukemelas_order():
    config = preset_config("kitti360")
    names = official_names(config)
    assert names["body.backbone.conv_stem.weight"] == "body.backbone_net.model._conv_stem.conv.weight"
    assert names["body.backbone.blocks.0.0.conv_dw.weight"] == "body.backbone_net.model._blocks.0._depthwise_conv.conv.weight"
    assert names["body.backbone.blocks.1.0.conv_pw.weight"] == "body.backbone_net.model._blocks.2._expand_conv.conv.weight"
    assert names["body.backbone.blocks.6.1.bn3.running_var"] == "body.backbone_net.model._blocks.25._bn2.running_var"
    assert names["det_head.hm.2.bias"] == "det_head.hm.2.bias"
    with pytest.raises(KeyError):
        backbone_key_map(["head.weight"])


def test_random_official_checkpoint_round_trip(tmp_path):
    """The paper variant (its backbone is the official EfficientNet-B3): our random weights written in the
    official snapshot structure, saved with torch.save, loaded through create_model's converter path."""
    torch.manual_seed(0)
    config = preset_config("kitti360")
    model = SeaBird(config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    snapshot = to_official(state, config)
    # inplace_abn's ABN keeps no num_batches_tracked: drop them where the official modules use ABN
    for part in ("transformer", "sem_head"):
        snapshot["state_dict"][part] = {k: v for k, v in snapshot["state_dict"][part].items() if not k.endswith("num_batches_tracked")}
    snapshot["state_dict"]["optimizer"] = {"state": {"0": {"momentum_buffer": torch.zeros(3)}}}
    torch.save(snapshot, tmp_path / "model_19.pth")
    loaded = registry.get_card("seabird").converter(load_torch_file(tmp_path / "model_19.pth"), config)
    assert loaded.keys() == state.keys()
    for key, value in loaded.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key


def test_micro_backbone_is_not_the_official_layout():
    with pytest.raises(KeyError, match="no official name"):
        official_names(preset_config("micro"))


def test_wrong_checkpoint_names_missing_keys():
    config = preset_config("kitti360")
    flat = flatten_state(to_official(SeaBird(config).state_dict(), config))
    flat.pop("state_dict.det_head.hm.0.weight")
    flat["state_dict.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"missing 1 .*det_head\.hm\.0\.weight.*unexpected 1 .*extra\.weight"):
        convert_state_dict(flat, config)
