"""zoo.bench.pvd helpers: the loss-variation figure by hand, the arms the ablation trains, mean and spread."""

import json

import pytest

from zoo.bench.common import mean_std
from zoo.bench.pvd import arms, loss_variation


def test_loss_variation_over_the_second_half(tmp_path):
    rows = [{"step": i, "diffusion_box": b, "diffusion_polygon": p} for i, (b, p) in enumerate([(9, 9), (9, 9), (1, 1), (2, 2)])]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    # second half: totals 2 and 4 -> population std 1, mean 3
    assert loss_variation(tmp_path / "log.jsonl") == pytest.approx(1 / 3)


def test_arms_and_spread():
    names = {a.name: a for a in arms()}
    assert set(names) == {"pvd", "no-asl", "absolute"}
    assert names["no-asl"].train["asl_weight"] == "0" and names["absolute"].config == {"anchor": "absolute"}
    out = mean_std([0.5, 0.7, float("nan"), None])
    assert out["mean"] == pytest.approx(0.6) and out["std"] == pytest.approx(0.1414, abs=1e-4) and out["n"] == 2
    assert mean_std([])["n"] == 0 and mean_std([3.0])["std"] == 0.0
