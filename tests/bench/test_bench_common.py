"""zoo.bench.common: statistics, interleaved timing, the results file; zoo.bench.flops' counter."""

import json
import math

import pytest
import torch

from zoo.bench import common
from zoo.bench.flops import module_flops


def test_percentile_matches_linear_interpolation():
    values = [4.0, 1.0, 3.0, 2.0]  # sorted 1 2 3 4
    assert common.percentile(values, 50) == pytest.approx(2.5)
    assert common.percentile(values, 90) == pytest.approx(3.7)  # 3 + 0.7 * (4 - 3)
    assert common.percentile(values, 0) == 1.0
    assert common.percentile(values, 100) == 4.0
    assert math.isnan(common.percentile([], 50))


def test_timing_summary_and_ratios():
    timing = common.Timing([10.0, 30.0, 20.0])
    summary = timing.summary()
    assert summary == {"median_ms": 20.0, "p90_ms": 28.0, "mean_ms": 20.0, "min_ms": 10.0, "n": 3}
    assert common.ratio(30.0, 20.0) == 1.5
    assert common.ratio(None, 2.0) is None and common.ratio(1.0, 0.0) is None
    assert common.round_sig(123456.0) == 123500.0
    assert common.round_sig(0.000123456) == 0.0001235


def test_measure_interleaved_rotates_and_respects_rep_limits():
    order: list[str] = []
    contenders = {name: (lambda n=name: order.append(n)) for name in ("a", "b", "c")}
    timings = common.measure_interleaved(contenders, warmup=1, min_reps=2, max_reps=4, budget_s=0.0)
    # one warm-up round, then min_reps rounds (budget 0 stops right after them)
    assert order[:3] == ["a", "b", "c"]
    assert order[3:] == ["a", "b", "c", "b", "c", "a"]
    assert {k: t.n for k, t in timings.items()} == {"a": 2, "b": 2, "c": 2}
    timings = common.measure_interleaved(contenders, warmup=0, min_reps=1, max_reps=4, budget_s=60.0)
    assert all(t.n == 4 for t in timings.values())  # max_reps caps a generous budget


def test_pin_threads_sets_torch_and_child_env(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert common.pin_threads(1) == 1
        assert torch.get_num_threads() == 1
        import os

        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_device_tag():
    assert common.device_tag({}) == "cpu"
    assert common.device_tag({"gpu": "NVIDIA H200"}) == "h200"
    assert common.device_tag({"gpu": "NVIDIA RTX A6000"}) == "a6000"


def test_write_document_names_file_and_drops_nan(tmp_path):
    doc = common.new_document("latency", quick=False, machine={"cpu": "x"}, command="zoo bench latency", results=[{"v": float("nan")}])
    path = common.write_document(doc, tmp_path)
    assert path.name == f"latency-cpu-{doc['date']}.json"
    loaded = json.loads(path.read_text())
    assert loaded["results"] == [{"v": None}]
    assert loaded["command"] == "zoo bench latency" and loaded["suite"] == "latency"
    assert not list(tmp_path.glob("*.tmp"))


def test_module_flops_hand_computed():
    # conv 3->4, k3, pad 1 on 16x16: 16*16*4 outputs x 27 MACs x 2 = 55,296; 1x1 conv 4->1: 16*16*4*2 = 2,048
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    assert module_flops(net, (torch.rand(1, 3, 16, 16),)) == 55_296 + 2_048
    with torch.device("meta"):
        meta = torch.nn.Linear(8, 5)
    assert module_flops(meta, (torch.empty(3, 8, device="meta"),)) == 2 * 3 * 8 * 5
