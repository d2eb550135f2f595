"""zoo.bench.lct: the ablation adds one technique per arm, and the tail statistics mean what they say."""

import numpy as np

from zoo.bench.ablation import seed_summary
from zoo.bench.common import mean_std
from zoo.bench.lct import ICT, _tail_stats, arms


def test_each_arm_adds_one_technique():
    by_name = {a.name: a for a in arms()}
    assert list(by_name) == ["ict", "+cauchy", "+diffusion", "+ot", "+adaptive-c", "+nsln", "edm"]
    assert by_name["ict"].train == ICT
    assert by_name["+cauchy"].train == {**ICT, "loss": "cauchy"}
    assert by_name["+adaptive-c"].train == {}  # the card's defaults: every sLCT switch on
    assert by_name["+nsln"].config["net"].out_norm == "nonscaling"
    assert by_name["edm"].config == {"parametrisation": "edm"}


def test_tail_statistics():
    rng = np.random.default_rng(0)
    gauss = _tail_stats(rng.standard_normal(400_000))
    uniform = _tail_stats(rng.uniform(size=400_000))
    heavy = _tail_stats(rng.standard_cauchy(400_000))
    assert abs(gauss["excess_kurtosis"]) < 0.05 and abs(uniform["excess_kurtosis"] + 1.2) < 0.05
    assert heavy["excess_kurtosis"] > 100 and heavy["max_abs_z"] > gauss["max_abs_z"] > uniform["max_abs_z"]
    assert uniform["beyond_4sd"] == 0 and 0 < gauss["beyond_4sd"] < 1e-4


def test_summary_over_seeds():
    ict = arms()[0]
    runs = {"ict": {0: {"metrics": {"fid_1step": 10.0}}, 1: {"metrics": {"fid_1step": 14.0}}}}
    summary = seed_summary((ict,), runs, steps=5, seeds=[0, 1])["arms"][0]["summary"]["fid_1step"]
    assert summary == mean_std([10.0, 14.0]) and summary["mean"] == 12.0 and abs(summary["std"] - 2.828) < 1e-3
