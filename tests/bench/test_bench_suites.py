"""Quick smoke runs of the CPU suites on micro variants (each a few seconds to half a minute).

They check the documents' structure and the figures that must hold whatever the machine's
load: ONNX Runtime computes what eager computes, FLOP counts are exact, anomalib's maps equal
ours on converted weights, every load-generator request succeeds."""

import json

import pytest

from zoo.bench import flops, latency, serving


def test_latency_quick_micro_eager_vs_onnxruntime(tmp_path):
    document = latency.run(quick=True, out_dir=tmp_path, models=["efficientad"], budget_s=40)
    assert document["settings"]["threads"] == 1 and document["machine"]["threads"] == 1
    cells = {(r["variant"], r["batch"]): r for r in document["results"]}
    assert set(cells) == {("micro", 1), ("micro", 8)}
    for cell in cells.values():
        assert cell["backends"]["eager"]["n"] >= 3 and cell["backends"]["eager"]["p90_ms"] >= cell["backends"]["eager"]["median_ms"]
        assert cell["speedup_vs_eager"]["onnxruntime"] > 0
        assert cell["max_abs_diff_vs_eager"]["onnxruntime"] < 1e-4  # the ONNX graph computes the same map
    assert any(s.get("what") == "torch.compile" for s in document["skipped"])  # quick CPU runs say why
    written = json.loads(next(tmp_path.glob("latency-cpu-*.json")).read_text())
    assert written["results"][0]["speedup_vs_eager"] == document["results"][0]["speedup_vs_eager"]
    assert "onnxruntime vs eager" in latency.render(document)


def test_flops_quick_counts_the_toy_exactly(toy_model, tmp_path):
    document = flops.run(quick=True, out_dir=None, models=["toy-anomaly"], budget_s=20)
    cell = next(r for r in document["results"] if r["batch"] == 1)
    assert cell["flops_per_image"] == 55_296 + 2_048  # conv 3->4 k3 on 16x16 plus conv 4->1 k1, 2 FLOPs a MAC
    assert 0 < cell["fraction_of_peak"] and cell["peak_gflops_s"] > 0


def _conv_macs(side_in: int, c_in: int, c_out: int, k: int, stride: int = 1, pad: int = 0) -> tuple[int, int]:
    side = (side_in + 2 * pad - k) // stride + 1
    return side * side * c_out * c_in * k * k, side


def _pdn_s_macs(c_out: int) -> int:
    m1, s = _conv_macs(256, 3, 128, 4)  # 253
    s = (s - 2) // 2 + 1  # avg pool 2/2: 126
    m2, s = _conv_macs(s, 128, 256, 4)  # 123
    s = (s - 2) // 2 + 1  # 61
    m3, s = _conv_macs(s, 256, 256, 3)  # 59
    m4, s = _conv_macs(s, 256, c_out, 4)  # 56
    assert s == 56
    return m1 + m2 + m3 + m4


def _autoencoder_macs() -> int:
    total, side = 0, 256
    for c_in, c_out in ((3, 32), (32, 32), (32, 64), (64, 64), (64, 64)):
        macs, side = _conv_macs(side, c_in, c_out, 4, stride=2, pad=1)
        total += macs
    total += _conv_macs(side, 64, 64, 8)[0]  # bottleneck 8x8 -> 1x1
    for up in (3, 8, 15, 32, 63, 127):  # bilinear upsample, then conv k4 p2
        total += _conv_macs(up, 64, 64, 4, pad=2)[0]
    return total + _conv_macs(56, 64, 64, 3, pad=1)[0] + _conv_macs(56, 64, 384, 3, pad=1)[0]


def test_flops_of_efficientad_s_on_meta_match_hand_count():
    counts = flops.graph_flops("efficientad", "s")
    # teacher PDN-S (C=384), student PDN-S (2C=768), autoencoder; 2 FLOPs a multiply-add.
    expected = 2 * (_pdn_s_macs(384) + _pdn_s_macs(768) + _autoencoder_macs())
    assert counts["efficientad"] == expected  # 75,894,579,200


def test_reference_quick_same_maps_as_anomalib():
    pytest.importorskip("anomalib")
    from zoo.bench import reference

    document = reference.run(quick=True, onnxruntime=False, out_channels=16, infer_reps=(2, 2), train_reps=(1, 1))
    entry = document["results"][0]
    assert entry["model"] == "EfficientAD-S"
    assert entry["parity"]["map_max_abs"] <= 1e-5 * max(1.0, entry["parity"]["map_scale"])
    assert set(entry["inference"]) == {"ours_eager", "anomalib_eager"}
    assert entry["ratios"]["anomalib_eager_vs_ours_eager"] > 0
    assert set(entry["train_step"]) == {"ours", "anomalib"} and entry["ratios"]["train_step_anomalib_vs_ours"] > 0
    assert entry["goals_met"]["onnxruntime_vs_anomalib_eager"] is None  # not measured without ONNX Runtime


def test_reference_says_how_to_install_anomalib(monkeypatch):
    import sys

    from zoo.bench import reference

    monkeypatch.setitem(sys.modules, "anomalib", None)  # import anomalib -> ImportError
    monkeypatch.setitem(sys.modules, "anomalib.models.image.efficient_ad.torch_model", None)
    with pytest.raises(reference.AnomalibMissing, match=r"pip install anomalib==2\.7\.0"):
        reference.run(quick=True)


def test_serving_quick_two_servers_on_loopback(tmp_path):
    document = serving.run(quick=True, out_dir=tmp_path, concurrency=(1, 4), requests=12, time_limit_s=10, budget_s=50)
    runs = document["runs"]
    assert {(r["batching"], r["concurrency"]) for r in runs} == {("off", 1), ("on", 1), ("off", 4), ("on", 4)}
    assert all(r["ok"] == r["sent"] == 12 and not r["errors"] for r in runs)
    assert document["results"]["in_process"]["n"] > 0
    assert document["results"]["http_floor"]["n"] > 0 and 0 < document["results"]["http_floor"]["p50_ms"] < 1000
    mem = document["memory"]
    if mem:  # Linux /proc: the loaded server's resident set, and each request's peak on top of it (MiB)
        assert mem["server_rss_mib"] > 50 and 0 <= mem["request_b1_peak_mib"] <= mem["request_b8_peak_mib"] + 1
    assert document["ratios"]["server_p50_over_in_process"] > 0 and document["ratios"]["batching_throughput_gain_c4"] > 0
    assert all("--host 127.0.0.1" in c for c in document["settings"]["server_commands"].values())
    assert next(tmp_path.glob("serving-cpu-*.json")).is_file()


def test_loadgen_refuses_other_hosts():
    from zoo.bench.loadgen import run_load

    with pytest.raises(ValueError, match="loopback"):
        run_load("http://10.0.0.1:80", "m", b"", 0, 1, 1, 1.0)
