"""EfficientAD converters: anomalib and nelson1425 layouts, errors, files, and parity with anomalib."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.models.efficientad.convert import (
    BUFFER_NAMES,
    convert_state_dict,
    detect_layout,
    load_state,
)
from zoo.models.efficientad.model import EfficientAD, EfficientADConfig, decoder_sizes, preset_config

anomalib_model = pytest.importorskip("anomalib.models.image.efficient_ad.torch_model")


def _anomalib(size: str) -> nn.Module:
    """anomalib's EfficientAdModel with random weights and random (set) normalisation buffers."""
    kind = anomalib_model.EfficientAdModelSize.M if size == "m" else anomalib_model.EfficientAdModelSize.S
    model = anomalib_model.EfficientAdModel(teacher_out_channels=384, model_size=kind).eval()
    with torch.no_grad():
        model.mean_std["mean"].copy_(torch.randn(1, 384, 1, 1) * 0.1)
        model.mean_std["std"].copy_(torch.rand(1, 384, 1, 1) * 0.5 + 0.1)
    return model


def _set_quantiles(model: nn.Module, values: dict[str, float]) -> None:
    with torch.no_grad():
        for key, value in values.items():
            model.quantiles[key].fill_(value)


# nelson1425's nn.Sequential layouts (common.py), built here with parametrised widths so the micro
# config can be checked numerically and the paper sizes on the meta device.
def _nelson_pdn_small(out: int, widths: tuple[int, int, int]) -> nn.Sequential:
    w1, w2, w3 = widths
    return nn.Sequential(
        nn.Conv2d(3, w1, 4), nn.ReLU(), nn.AvgPool2d(2, 2), nn.Conv2d(w1, w2, 4), nn.ReLU(), nn.AvgPool2d(2, 2),
        nn.Conv2d(w2, w3, 3), nn.ReLU(), nn.Conv2d(w3, out, 4),
    )


def _nelson_pdn_medium(out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 256, 4), nn.ReLU(), nn.AvgPool2d(2, 2), nn.Conv2d(256, 512, 4), nn.ReLU(), nn.AvgPool2d(2, 2),
        nn.Conv2d(512, 512, 1), nn.ReLU(), nn.Conv2d(512, 512, 3), nn.ReLU(), nn.Conv2d(512, out, 4), nn.ReLU(),
        nn.Conv2d(out, out, 1),
    )


def _nelson_autoencoder(out: int, a: int, image_size: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    widths = [3, a // 2, a // 2, a, a, a]
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(a, a, min(8, image_size // 32)))
    sizes = decoder_sizes(image_size, padding=False)
    for side in sizes[:6]:
        layers += [nn.Upsample(size=side, mode="bilinear"), nn.Conv2d(a, a, 4, padding=2), nn.ReLU(), nn.Dropout(0.2)]
    layers += [nn.Upsample(size=sizes[6], mode="bilinear"), nn.Conv2d(a, a, 3, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(a, out, 3, padding=1))
    return nn.Sequential(*layers)


def test_anomalib_round_trip_and_unset_buffers():
    torch.manual_seed(0)
    theirs = _anomalib("s")
    _set_quantiles(theirs, {"qa_st": 0.5, "qb_st": 2.0, "qa_ae": 0.25, "qb_ae": 1.5})
    state = theirs.state_dict()
    converted = convert_state_dict(state, EfficientADConfig(size="s"))
    ours = EfficientAD(EfficientADConfig(size="s"))
    ours.load_state_dict(converted)  # strict: every entry present and shaped right
    torch.testing.assert_close(ours.ae.encoder[5].weight, theirs.ae.encoder.enconv6.weight)
    torch.testing.assert_close(ours.ae.decoder[7].bias, theirs.ae.decoder.deconv8.bias)
    torch.testing.assert_close(ours.student.conv4.weight, theirs.student.conv4.weight)
    torch.testing.assert_close(ours.teacher_std, theirs.mean_std["std"].detach())
    assert (ours.q_st_start.item(), ours.q_st_end.item(), ours.q_ae_start.item(), ours.q_ae_end.item()) == (0.5, 2.0, 0.25, 1.5)
    # Our own layout passes through unchanged.
    again = convert_state_dict(ours.state_dict(), EfficientADConfig(size="s"))
    assert all(torch.equal(again[k], v) for k, v in ours.state_dict().items())
    # A Lightning checkpoint: `model.` prefix, plus non-model entries that are dropped.
    lightning = {"state_dict": {f"model.{k}": v for k, v in state.items()}}
    lightning["state_dict"]["post_processor.image_threshold"] = torch.tensor(0.5)
    assert set(convert_state_dict(lightning, EfficientADConfig(size="s"))) == set(converted)
    # anomalib's unset (all-zero) buffers mean "no normalisation": our identity values.
    unset = dict(state)
    for key in ("mean_std.mean", "mean_std.std", "quantiles.qa_st", "quantiles.qb_st", "quantiles.qa_ae", "quantiles.qb_ae"):
        unset[key] = torch.zeros_like(state[key])
    identity = convert_state_dict(unset, EfficientADConfig(size="s"))
    assert torch.all(identity["teacher_mean"] == 0) and torch.all(identity["teacher_std"] == 1)
    assert identity["q_st_start"].item() == 0 and identity["q_ae_end"].item() == pytest.approx(0.1)


@pytest.mark.parametrize("size", ["s", "m"])
def test_maps_and_scores_match_anomalib(size):
    """THE parity test: same random weights and buffers, same input, anomalib's eval forward."""
    torch.manual_seed(1)
    theirs = _anomalib(size)
    # Quantiles near the 0.9 / 0.995 quantiles of these random networks' maps (st ~0.2, ae ~0.0015),
    # different for st and ae, so the normalised maps are of order 1 (checked below).
    _set_quantiles(theirs, {"qa_st": 0.15, "qb_st": 0.24, "qa_ae": 0.0011, "qb_ae": 0.0019})
    config = EfficientADConfig(size=size)
    ours = EfficientAD(config).eval()
    ours.load_state_dict(convert_state_dict(theirs.state_dict(), config))
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        reference = theirs(x)
        anomaly_map, score = ours(x)
    assert anomaly_map.shape == reference.anomaly_map.shape == (1, 1, 256, 256)
    spread = (reference.anomaly_map.max() - reference.anomaly_map.min()).item()
    assert 0.05 < spread < 100, spread  # a map whose differences a 1e-4 tolerance can see
    assert (anomaly_map - reference.anomaly_map).abs().max().item() <= 1e-4
    assert (score - reference.pred_score.reshape(-1)).abs().max().item() <= 1e-4


def test_nelson_layout_matches_reference_forward():
    torch.manual_seed(2)
    config = preset_config("micro")
    c, widths = config.out_channels, config.pdn_widths
    teacher, student = _nelson_pdn_small(c, widths).eval(), _nelson_pdn_small(2 * c, widths).eval()
    autoencoder = _nelson_autoencoder(c, config.ae_channels, config.image_size).eval()
    mean, std = torch.randn(1, c, 1, 1) * 0.1, torch.rand(1, c, 1, 1) + 0.5
    nested = {"teacher": teacher.state_dict(), "student": student.state_dict(), "autoencoder": autoencoder.state_dict()}
    assert detect_layout(convert_state_dict(nested, config)) == "ours"
    ours = EfficientAD(config).eval()
    left = load_state(ours, {**nested, "teacher_mean": mean, "teacher_std": std})
    assert left == ["q_ae_end", "q_ae_start", "q_st_end", "q_st_start"]  # nelson1425 keeps no quantiles
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        xn = ours.normalize_input(x)
        t = (teacher(xn) - mean) / std
        s, a = student(xn), autoencoder(xn)
        map_st, map_ae = ours.raw_maps(x)
    # nelson1425's predict(): mean over channels of the squared differences.
    torch.testing.assert_close(map_st, ((t - s[:, :c]) ** 2).mean(1, keepdim=True), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(map_ae, ((a - s[:, c:]) ** 2).mean(1, keepdim=True), rtol=1e-5, atol=1e-6)
    # The flat prefixed form converts to the same dict.
    flat = {f"{part}.{k}": v for part, sd in nested.items() for k, v in sd.items()}
    assert set(convert_state_dict(flat, config)) == set(convert_state_dict(nested, config))
    assert set(load_state(EfficientAD(config), flat)) == set(BUFFER_NAMES)


@pytest.mark.parametrize("size", ["s", "m"])
def test_nelson_paper_sizes_on_meta(size):
    config = EfficientADConfig(size=size)
    with torch.device("meta"):
        pdn = (lambda out: _nelson_pdn_medium(out)) if size == "m" else (lambda out: _nelson_pdn_small(out, (128, 256, 256)))
        nested = {
            "teacher": pdn(384).state_dict(),
            "student": pdn(768).state_dict(),
            "autoencoder": _nelson_autoencoder(384, 64, 256).state_dict(),
        }
        expected = EfficientAD(config).state_dict()
    converted = convert_state_dict(nested, config)
    assert set(converted) == set(expected) - set(BUFFER_NAMES)
    assert all(converted[k].shape == expected[k].shape for k in converted)
    # A lone teacher state dict (nelson1425's teacher_small.pth / teacher_medium.pth).
    teacher_only = convert_state_dict(nested["teacher"], config)
    assert set(teacher_only) == {k for k in expected if k.startswith("teacher.")}


def test_lone_anomalib_teacher_and_errors():
    config = preset_config("micro")
    model = EfficientAD(config)
    teacher_sd = model.teacher.state_dict()  # conv1.weight ...: anomalib's pretrained_teacher_*.pth layout
    fresh = EfficientAD(config)
    left = load_state(fresh, teacher_sd)
    assert torch.equal(fresh.teacher.conv3.weight, model.teacher.conv3.weight)
    assert "student.conv1.weight" in left and "ae.encoder.0.weight" in left and "teacher.conv1.weight" not in left

    full = dict(model.state_dict())
    missing = {k: v for k, v in full.items() if k != "student.conv2.bias"}
    with pytest.raises(ValueError, match=r"missing \(1\): student\.conv2\.bias"):
        convert_state_dict(missing, config)
    with pytest.raises(ValueError, match=r"unexpected \(1\): student\.conv9\.weight"):
        convert_state_dict({**full, "student.conv9.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match=r"mis-shaped \(1\): teacher\.conv1\.weight: got \(1, 3, 4, 4\)"):
        convert_state_dict({**full, "teacher.conv1.weight": torch.zeros(1, 3, 4, 4)}, config)
    with pytest.raises(ValueError, match="missing"):  # an S checkpoint into a micro model fails clearly
        s_sized = {"teacher.0.weight": torch.zeros(128, 3, 4, 4), "autoencoder.0.weight": torch.zeros(32, 3, 4, 4)}
        convert_state_dict(s_sized, config)
    with pytest.raises(ValueError, match="unrecognised"):
        convert_state_dict({"backbone.layer1.weight": torch.zeros(1)}, config)


def test_checkpoint_files_load_pickle_free(tmp_path):
    from safetensors.torch import save_file

    from zoo.weights import WeightsError, read_state

    config = preset_config("micro")
    model = EfficientAD(config)
    torch.save(model.state_dict(), tmp_path / "sd.pth")
    loaded, ours = read_state(tmp_path / "sd.pth")
    assert set(loaded) == set(model.state_dict()) and not ours
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "sd.safetensors"))
    assert set(read_state(tmp_path / "sd.safetensors")[0]) == set(loaded)
    # nelson1425 saves whole modules (teacher_final.pth): refused with a re-save hint.
    torch.save(_nelson_pdn_small(8, (4, 8, 8)), tmp_path / "teacher_final.pth")
    with pytest.raises(WeightsError, match="state dict"):
        read_state(tmp_path / "teacher_final.pth")
