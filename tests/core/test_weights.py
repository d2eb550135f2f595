import json

import pytest
import torch
from safetensors.torch import save_file

from zoo import registry
from zoo.weights import WeightsError, WeightsMismatchError, load_into, load_weights, save_weights, store_dir


def test_save_load_round_trip_with_sidecar(toy_model, tmp_path):
    model = registry.create_model("toy-anomaly", weights="random")
    path = save_weights(model.model, tmp_path / "w" / "model.safetensors", {"model": "toy-anomaly", "variant": "micro", "command": "zoo train toy", "metrics": {"auroc": 0.9}})
    assert json.loads(path.with_suffix(".json").read_text())["metrics"]["auroc"] == 0.9
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    other = registry.create_model("toy-anomaly", weights=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key])
    # the folder form loads too
    registry.create_model("toy-anomaly", weights=path.parent)


def test_store_name_lookup(toy_model, tmp_path):
    model = registry.create_model("toy-anomaly", weights="random")
    save_weights(model.model, store_dir("toy-anomaly") / "mine.safetensors", {"model": "toy-anomaly"})
    loaded = registry.create_model("toy-anomaly", weights="mine")
    assert torch.equal(loaded.state_dict()["head.bias"], model.state_dict()["head.bias"])
    with pytest.raises(FileNotFoundError, match="not found"):
        registry.create_model("toy-anomaly", weights="nothing-here")


def test_mismatch_names_missing_unexpected_and_misshaped(toy_model):
    model = registry.create_model("toy-anomaly", weights="random")
    state = dict(model.state_dict())
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(1)
    state["encoder.weight"] = torch.zeros(2, 3, 3, 3)
    with pytest.raises(WeightsMismatchError) as info:
        load_into(model.model, state)
    message = str(info.value)
    assert "missing keys: head.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "encoder.weight (checkpoint (2, 3, 3, 3) vs model (4, 3, 3, 3))" in message


def test_weights_for_another_model_are_refused(toy_model, tmp_path):
    model = registry.create_model("toy-anomaly", weights="random")
    path = save_weights(model.model, tmp_path / "model.safetensors", {"model": "efficientad"})
    with pytest.raises(WeightsError, match="for 'efficientad', not 'toy-anomaly'"):
        load_weights(model, path)


def test_foreign_pth_goes_through_converter_pickle_free(toy_model, tmp_path):
    model = registry.create_model("toy-anomaly", weights="random")
    torch.save({"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "official.pth")
    toy_model.converter = lambda state, config: {k.split("state_dict.net.", 1)[1]: v for k, v in state.items()}
    loaded = registry.create_model("toy-anomaly", weights=tmp_path / "official.pth")
    assert torch.equal(loaded.state_dict()["encoder.weight"], model.state_dict()["encoder.weight"])
    # DETR-style training checkpoints keep their argparse "args" beside the weights: allowed
    import argparse

    torch.save({"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}, "args": argparse.Namespace(lr=1e-4)},
               tmp_path / "with_args.pth")
    assert torch.equal(registry.create_model("toy-anomaly", weights=tmp_path / "with_args.pth").state_dict()["encoder.weight"],
                       model.state_dict()["encoder.weight"])
    # a pickled object is refused, with advice
    torch.save({"model": torch.nn.Linear(1, 1)}, tmp_path / "pickled.pth")
    with pytest.raises(WeightsError, match="weights_only=True"):
        registry.create_model("toy-anomaly", weights=tmp_path / "pickled.pth")


def test_library_folder_layout(toy_model, tmp_path):
    model = registry.create_model("toy-anomaly", weights="random")
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    loaded = registry.create_model("toy-anomaly", weights=folder)
    assert torch.equal(loaded.state_dict()["head.weight"], model.state_dict()["head.weight"])


def test_unknown_format(toy_model, tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown weights format"):
        registry.create_model("toy-anomaly", weights=tmp_path / "weights.npz")
