"""AnyText's prompt parsing, conditions, input errors, and the pipeline (generation and editing)."""

import numpy as np
import pytest

from zoo import registry
from zoo.models.anytext.glyphs import (
    TextLineError,
    auto_positions,
    box_polygon,
    conditions,
    fonts,
    parse_prompt,
    position_mask,
    validate_lines,
)
from zoo.results import Generation

HAS_CJK = any("CJK" in f for f in fonts())


@pytest.fixture(scope="module")
def pipeline():
    return registry.create_model("anytext", "micro", weights="random")


def test_quoted_lines_become_placeholders():
    assert parse_prompt('a sign that reads "OPEN" and “24h”') == ("a sign that reads * and *", ["OPEN", "24h"])
    assert parse_prompt("no text here") == ("no text here", [])


def test_glyphs_are_drawn_inside_their_positions():
    polygons = [box_polygon((4, 8, 60, 28)), box_polygon((10, 36, 54, 56))]
    cond = conditions(["OPEN", "24H"], polygons, 64, 2, 3)
    glyphs, positions = cond["glyphs"][0], cond["positions"][0]
    assert glyphs.shape == (128, 128) and positions.shape == (64, 64) and cond["line_images"].shape == (3, 80, 512)
    inside = position_mask([p * 2 for p in polygons], 128)
    assert glyphs.sum() > 50 and (glyphs * inside).sum() / glyphs.sum() > 0.95
    assert positions.sum() == pytest.approx(56 * 20 + 44 * 20, rel=0.1)
    assert cond["line_images"][2].max() == 0 and cond["line_images"][0].max() > 0.9
    assert cond["boxes"][0].tolist() == [4, 8, 61, 29]  # PIL fills the polygon boundary too


@pytest.mark.skipif(not HAS_CJK, reason="Debian's fonts-noto-cjk is not installed")
def test_cjk_lines_render_with_noto_cjk():
    cond = conditions(["文档增强"], [box_polygon((4, 16, 60, 48))], 64, 2, 1)
    assert cond["glyphs"].sum() > 50


@pytest.mark.parametrize("lines,polygons,message", [
    (["A"] * 3, [], "at most 2"),
    (["ABCDEFGHIJ"], [], "at most 8"),
    (["OPEN"], [box_polygon((-5, 0, 30, 20))], "outside"),
    (["OPEN"], [box_polygon((0, 0, 30, 70))], "outside"),
    (["OK", "NO"], [box_polygon((0, 0, 30, 20))], "one position per line"),
    (["\U0001F9FF"], [], "no installed font has the glyphs"),
])
def test_bad_lines_are_clear_errors(lines, polygons, message):
    with pytest.raises(TextLineError, match=message):
        validate_lines(lines, polygons or auto_positions(len(lines), 64), 64, 2, 8)


def test_generation(pipeline):
    out = pipeline.predict({"prompt": 'a sign that reads "OPEN"', "boxes": np.array([[4, 20, 60, 44]], np.float32)}, steps=2, count=2)
    assert isinstance(out, Generation) and len(out.images) == 2 and out.images[0].shape == (64, 64, 3)
    assert out.info["lines"] == ["OPEN"] and out.info["mode"] == "generate" and out.steps == 2
    assert out.seeds == [0, 1] and not np.array_equal(out.images[0], out.images[1])
    assert out.condition.shape == (64, 64, 3) and out.condition.max() > 200


def test_editing_uses_the_masked_image(pipeline):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)
    mask = np.zeros((80, 96), np.uint8)
    mask[20:50, 10:80] = 255
    out = pipeline.predict({"prompt": 'a wall with "SALE"', "image": picture, "mask": mask}, steps=2)
    assert out.info["mode"] == "edit" and len(out.info["positions"]) == 1
    x0, y0 = np.min(out.info["positions"][0], 0)
    assert 5 <= x0 <= 10 and 14 <= y0 <= 18  # the mask's rectangle in the 64-px frame


def test_request_errors_are_value_errors(pipeline):
    with pytest.raises(ValueError, match="outside"):
        pipeline.predict({"prompt": 'a "OK" sign', "boxes": np.array([[0, 0, 100, 20]], np.float32)}, steps=1)
    with pytest.raises(ValueError, match="at most 2"):
        pipeline.predict({"prompt": '"A" "B" "C"'}, steps=1)
    card = registry.get_card("anytext")
    with pytest.raises(ValueError, match="a number of items"):
        card.parse_inputs({"prompt": "x", "boxes": [[0, 0, 1, 1]] * 6})
