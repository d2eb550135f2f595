"""The ladder suite on a micro graph: every rung timed side by side, each lower precision carrying
the task metric `zoo export` records, and rows for the benchmarks table."""

from __future__ import annotations

import pytest

import zoo.export.quantize as quantize
from zoo.bench import ladder


def test_ladder_quick_on_efficientad_micro(monkeypatch, tmp_path):
    monkeypatch.setattr(quantize, "HELD_OUT_ANOMALY", 16)  # a smoke test, not a measurement
    monkeypatch.setattr(ladder, "REPS", {True: (2, 3, 0.2), False: (2, 3, 0.2)})
    document = ladder.run(quick=True, out_dir=tmp_path, models=["efficientad"], reference=False, threads=1)
    entry = document["graphs"]["efficientad/micro"]
    timing = entry["timings"][1]
    assert {"eager", "ort_fp32", "ov_fp32", "ort_int8", "ov_int8"} <= set(timing)
    assert all(t["median_ms"] > 0 and t["n"] >= 2 for t in timing.values())
    for name in ("ort_int8", "ov_int8"):
        metric = entry["rungs"][name]["task_metric"]
        assert metric["metric"].startswith("image AUROC") and metric["held_out"]["samples"] == 16
        assert entry["rungs"][name]["quantization"]["quantized"]
    speedups = entry["speedups"]["threads_1"]
    assert speedups["eager"] == 1.0 and speedups["spread_p10_p90"]["ort_fp32"][0] <= speedups["spread_p10_p90"]["ort_fp32"][1]
    best = speedups["best_int8"]
    assert best["contender"] in (None, "ort_int8", "ov_int8")
    assert any(row[0].startswith("efficientad micro") for row in document["table_rows"])
    assert "efficientad/micro" in ladder.render(document)
    assert next(tmp_path.glob("ladder-cpu-*.json")).is_file()


def test_spread_and_best():
    low, high = ladder._spread([10.0, 10.0, 10.0], [5.0, 4.0, 2.0])  # per-round ratios 2, 2.5, 5
    assert 2.0 <= low < high <= 5.0
    rung = type("R", (), {"info": {"ov_int8": {"task_metric": {"passed": True}}, "ort_int8": {"task_metric": {"passed": False}}}})()
    timing = {"ort_int8": {"median_ms": 1.0}, "ov_int8": {"median_ms": 2.0}}
    assert ladder._best(rung, timing, ("ort_int8", "ov_int8")) == ("ov_int8", 2.0)  # the refused one never counts
    with pytest.raises(KeyError):
        ladder._best(rung, {"ov_int8": {}}, ("ov_int8",))
