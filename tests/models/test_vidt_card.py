"""`zoo info` shows, beside our parameter counts, the paper's where its table counts differently
(ViDT / ViDT+: the official fps_calculator.py convention), with how that number is counted."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from zoo import registry
from zoo.cli import app
from zoo.models.vidt.model import paper_param_count, preset_config

# The paper's Params column in M (arXiv 2110.03921 / 2204.07962, official README)
PAPER_M = {("vidt", "nano"): 15, ("vidt", "tiny"): 37, ("vidt", "small"): 60, ("vidt", "base"): 99,
           ("vidt-plus", "nano"): 16, ("vidt-plus", "tiny"): 38, ("vidt-plus", "small"): 61, ("vidt-plus", "base"): 100}


@pytest.mark.parametrize("name", ["vidt", "vidt-plus"])
def test_card_paper_counts_are_the_official_convention(name):
    card = registry.get_card(name)
    assert card.variants["micro"].paper_table_params is None  # not in the paper
    for variant in ("nano", "tiny", "small", "base"):
        table = card.variants[variant].paper_table_params
        assert table["total"] == paper_param_count(preset_config(variant, plus=name == "vidt-plus"))
        assert math.floor(table["total"] / 1e6) == PAPER_M[name, variant]
        assert "fps_calculator" in table["how"] and ("heads" in table["how"]) == (name == "vidt-plus")


def test_zoo_info_json_shows_the_paper_count_beside_ours():
    result = CliRunner().invoke(app, ["info", "vidt-plus", "--json"])
    assert result.exit_code == 0, result.output
    variants = json.loads(result.output)["variants"]
    tiny = variants["tiny"]
    assert tiny["params"]["total"] == 39_340_471  # ours
    assert tiny["paper_table_params"]["total"] == 38_856_597 != tiny["params"]["total"]
    assert tiny["paper_table_params"]["how"]
    assert "paper_table_params" not in variants["micro"]
    text = CliRunner().invoke(app, ["info", "vidt-plus"]).output
    assert "paper's count: 38,856,597" in text
