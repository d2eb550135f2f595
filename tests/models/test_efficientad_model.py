"""EfficientAD networks: parameter counts, shapes, map post-processing by hand, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.models.efficientad.model import (
    Autoencoder,
    EfficientAD,
    EfficientADConfig,
    PDNMedium,
    PDNSmall,
    count_parameters,
    decoder_sizes,
    normalize_map,
    pdn_output_size,
    preset_config,
)


def _meta(config: EfficientADConfig) -> EfficientAD:
    with torch.device("meta"):
        return EfficientAD(config)


@pytest.fixture(scope="module")
def micro() -> EfficientAD:
    torch.manual_seed(0)
    return EfficientAD(preset_config("micro")).eval()


@pytest.mark.parametrize(
    ("size", "teacher", "student", "total"),
    [("s", 2_694_144, 4_267_392, 8_057_856), ("m", 8_026_624, 11_615_488, 20_738_432)],
)
def test_parameter_counts_match_reference(size, teacher, student, total):
    model = _meta(EfficientADConfig(size=size))
    assert count_parameters(model.teacher) == teacher
    assert count_parameters(model.student) == student
    assert count_parameters(model.ae) == 1_096_320
    assert count_parameters(model) == total
    assert isinstance(model.teacher, PDNMedium if size == "m" else PDNSmall)
    assert isinstance(model.ae, Autoencoder)


def test_micro_is_small():
    model = _meta(preset_config("micro"))
    assert count_parameters(model) == 187_104  # 51,088 + 83,920 + 52,096
    assert count_parameters(model) < 300_000


def test_sizes_follow_reference_rules():
    assert pdn_output_size(256, padding=False) == 56
    assert pdn_output_size(256, padding=True) == 64
    assert pdn_output_size(128, padding=False) == 24
    # nelson1425's hard-coded decoder sizes at 256; anomalib's rule ceil(H/4) - 8 for the last one.
    assert decoder_sizes(256, padding=False) == [3, 8, 15, 32, 63, 127, 56]
    assert decoder_sizes(128, padding=False)[-1] == 128 // 4 - 8
    with pytest.raises(ValueError):
        EfficientADConfig(size="l")
    with pytest.raises(ValueError):
        EfficientADConfig(size="s", pdn_widths=(8, 8, 8))


def test_micro_shapes(micro):
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        teacher, student, ae = micro.features(x)
        map_st, map_ae = micro.raw_maps(x)
        anomaly_map, score = micro(x)
    assert teacher.shape == (2, 64, 24, 24)
    assert student.shape == (2, 128, 24, 24)
    assert ae.shape == (2, 64, 24, 24)
    assert map_st.shape == map_ae.shape == (2, 1, 24, 24)
    assert anomaly_map.shape == (2, 1, 128, 128)
    assert score.shape == (2,)
    torch.testing.assert_close(score, anomaly_map.amax(dim=(1, 2, 3)))
    with pytest.raises(ValueError, match="128x128"):
        micro(torch.rand(1, 3, 96, 96))


def test_padded_pdn_gives_quarter_resolution():
    config = EfficientADConfig(size="micro", out_channels=8, image_size=128, ae_channels=8, pdn_widths=(4, 8, 8), padding=True)
    model = EfficientAD(config).eval()
    with torch.no_grad():
        teacher, student, ae = model.features(torch.rand(1, 3, 128, 128))
    assert teacher.shape == (1, 8, 32, 32) and ae.shape == (1, 8, 32, 32) and student.shape == (1, 16, 32, 32)


def test_s_forward_shapes():
    torch.manual_seed(0)
    model = EfficientAD(EfficientADConfig(size="s")).eval()
    with torch.no_grad():
        map_st, map_ae = model.raw_maps(torch.rand(1, 3, 256, 256))
        anomaly_map = model.combine(map_st, map_ae, (256, 256))
    assert map_st.shape == map_ae.shape == (1, 1, 56, 56)
    assert anomaly_map.shape == (1, 1, 256, 256)


def test_normalize_map_hand_values():
    m = torch.tensor([0.2, 0.45, 0.7, 1.2])
    out = normalize_map(m, torch.tensor(0.2), torch.tensor(0.7))
    torch.testing.assert_close(out, torch.tensor([0.0, 0.05, 0.1, 0.2]))


def test_pad_and_resize_hand_values(micro):
    # A constant map of ones, padded by 4 zeros (24 -> 32) and resized x4 to 128 (half-pixel
    # centres): output row r samples source row (r + 0.5) / 4 - 0.5.
    ones = torch.ones(1, 1, 24, 24)
    out = micro.combine(ones, ones, (128, 128))[0, 0]  # default quantiles are the identity
    assert out[0, 64].item() == pytest.approx(0.0)  # pure padding
    assert out[15, 64].item() == pytest.approx(0.375)  # source 3.375: 0.375 of the first real row
    assert out[16, 64].item() == pytest.approx(0.625)
    assert out[17, 64].item() == pytest.approx(0.875)
    assert out[18, 64].item() == pytest.approx(1.0)
    assert out[64, 64].item() == pytest.approx(1.0)
    no_pad = EfficientAD(EfficientADConfig(**{**preset_config("micro").__dict__, "pad_maps": False}))
    torch.testing.assert_close(no_pad.combine(ones, ones, (128, 128)), torch.ones(1, 1, 128, 128))


def test_quantile_normalisation_and_combination_hand_values():
    model = EfficientAD(preset_config("micro"))
    for name, value in (("q_st_start", 0.2), ("q_st_end", 0.7), ("q_ae_start", 1.0), ("q_ae_end", 3.0)):
        getattr(model, name).fill_(value)
    map_st = torch.full((1, 1, 24, 24), 0.45)  # 0.1 * 0.25 / 0.5 = 0.05
    map_ae = torch.full((1, 1, 24, 24), 2.0)  # 0.1 * 1 / 2 = 0.05
    out = model.combine(map_st, map_ae, (128, 128))[0, 0]
    assert out[64, 64].item() == pytest.approx(0.05)
    # The zero padding is normalised too (anomalib's order): 0.5 * (-0.04) + 0.5 * (-0.05).
    assert out[0, 0].item() == pytest.approx(-0.045)
    st_only = model.combine(map_st, map_ae, (128, 128), use_ae=False)[0, 0]
    assert st_only[64, 64].item() == pytest.approx(0.05) and st_only[0, 0].item() == pytest.approx(-0.04)
    ae_only = model.combine(map_st, map_ae, (128, 128), use_st=False)[0, 0]
    assert ae_only[0, 0].item() == pytest.approx(-0.05)


def test_forward_uses_buffers_and_teacher_is_frozen(micro):
    x = torch.rand(1, 3, 128, 128)
    model = EfficientAD(preset_config("micro")).eval()
    model.load_state_dict(micro.state_dict())
    model.teacher_mean.fill_(0.3)
    model.teacher_std.fill_(2.0)
    with torch.no_grad():
        teacher_raw = micro.teacher(micro.normalize_input(x))
        teacher_norm, _, _ = model.features(x)
    torch.testing.assert_close(teacher_norm, (teacher_raw - 0.3) / 2.0)
    expected = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize_input(x), expected)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert all(p.requires_grad for p in model.student.parameters())
    assert set(model.state_dict()) >= {"teacher_mean", "teacher_std", "q_st_start", "q_st_end", "q_ae_start", "q_ae_end"}


def test_calibration_maps_are_padded_resized_raw_maps(micro):
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        cal_st, cal_ae = micro.calibration_maps(x)
        map_st, map_ae = micro.raw_maps(x)
    assert cal_st.shape == (2, 1, 128, 128)
    torch.testing.assert_close(cal_ae, micro.resize_map(map_ae, (128, 128)))
    # With identity quantiles the combined map is just their average.
    with torch.no_grad():
        torch.testing.assert_close(micro(x)[0], 0.5 * cal_st + 0.5 * cal_ae)


def test_onnx_export_dynamic_batch(micro, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = EfficientAD(preset_config("micro")).eval()
    model.load_state_dict(micro.state_dict())
    model.teacher_std.fill_(0.5)
    with torch.no_grad():  # quantiles of the actual maps, so the exported map is of order 1
        cal_st, cal_ae = model.calibration_maps(torch.rand(2, 3, 128, 128))
        for name, maps in (("st", cal_st), ("ae", cal_ae)):
            getattr(model, f"q_{name}_start").fill_(torch.quantile(maps, 0.9).item())
            getattr(model, f"q_{name}_end").fill_(torch.quantile(maps, 0.995).item())
    path = tmp_path / "efficientad_micro.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        model, (torch.rand(2, 3, 128, 128),), str(path), dynamo=True, opset_version=18,
        input_names=["image"], output_names=["anomaly_map", "score"], dynamic_shapes={"image01": {0: batch}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 128, 128)
    onnx_map, onnx_score = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch_map, torch_score = model(x)
    assert onnx_map.shape == (3, 1, 128, 128) and onnx_score.shape == (3,)
    assert torch_map.abs().max() > 0.05
    assert np.abs(onnx_map - torch_map.numpy()).max() <= 1e-4
    assert np.abs(onnx_score - torch_score.numpy()).max() <= 1e-4
