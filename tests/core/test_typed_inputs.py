"""Typed inputs (issue #12): InputSpec and strict OptionSpec parsing, the Generation result,
and the CLI driving test-time cards (a generator with no inputs, a four-input editor) that no
layer knows by name."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from typed_toys import EDITOR, GENERATOR, TOY_CLASSES, toy_generate
from typer.testing import CliRunner

from zoo import registry
from zoo.cli import app
from zoo.registry import InputSpec, ModelCard, OptionSpec, VariantSpec
from zoo.results import RESULT_TYPES, Generation

runner = CliRunner()


# -- options -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["maybe", "2", 2, "", "tru", [True]])
def test_bool_refuses_what_is_not_a_boolean(value):
    with pytest.raises(ValueError, match=r"option 'tile' expects a boolean"):
        OptionSpec("tile", "bool", True).parse(value)


@pytest.mark.parametrize("value,expected", [("true", True), ("Off", False), ("YES", True), ("0", False), (1, True), (False, False), (np.bool_(True), True)])
def test_bool_accepts_the_usual_words(value, expected):
    assert OptionSpec("tile", "bool", True).parse(value) is expected


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", float("nan"), float("inf"), np.float32("nan")])
def test_float_refuses_nan_and_infinities(value):
    with pytest.raises(ValueError, match=r"option 'guidance' expects a finite float"):
        OptionSpec("guidance", "float", 1.0, minimum=0.0, maximum=4.0).parse(value)


def test_int_is_strict_and_ranges_name_the_field():
    spec = OptionSpec("steps", "int", 2, minimum=1, maximum=8)
    assert spec.parse("3") == 3 and spec.parse(4.0) == 4 and spec.parse(np.int64(5)) == 5
    for bad in ("3.5", 3.5, True, "three"):
        with pytest.raises(ValueError, match=r"option 'steps' expects int"):
            spec.parse(bad)
    with pytest.raises(ValueError, match=r"option 'steps' must be <= 8"):
        spec.parse(9)
    assert spec.parse(None) == 2  # unset: the default


def test_label_takes_a_name_or_an_index_and_parses_to_the_index():
    spec = OptionSpec("class_label", "label", "square", choices=TOY_CLASSES)
    assert spec.parse("triangle") == 2 and spec.parse(0) == 0 and spec.parse("1") == 1 and spec.parse(None) == 1
    with pytest.raises(ValueError, match=r"option 'class_label' must be a class index 0..2"):
        spec.parse(3)
    with pytest.raises(ValueError, match=r"option 'class_label' expects a class name \(circle, square, triangle\)"):
        spec.parse("hexagon")
    with pytest.raises(ValueError, match="needs its class names"):
        OptionSpec("class_label", "label", 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        OptionSpec("x", "integer", 0)


# -- inputs --------------------------------------------------------------------------------
def test_input_kinds_parse_and_name_the_field():
    boxes = InputSpec("boxes", "boxes", maximum=2)
    assert boxes.parse("[[1, 2, 3, 4]]").tolist() == [[1, 2, 3, 4]] and boxes.parse([]).shape == (0, 4)
    for bad, message in [("[[1, 2, 3]]", "expects boxes"), ("[[3, 3, 1, 1]]", "x1 >= x0"), ("[[0, 0, NaN, 1]]", "finite"),
                         ("not json", "not valid JSON"), ([[0, 0, 1, 1]] * 3, "<= 2")]:
        with pytest.raises(ValueError, match=rf"input 'boxes'.*{message}"):
            boxes.parse(bad)
    polygons = InputSpec("outline", "polygons").parse("[[[0, 0], [4, 0], [4, 4]]]")
    assert len(polygons) == 1 and polygons[0].shape == (3, 2) and polygons[0].dtype == np.float32
    with pytest.raises(ValueError, match="input 'outline': each polygon needs at least 3 points"):
        InputSpec("outline", "polygons").parse([[[0, 0], [1, 1]]])
    prompt = InputSpec("prompt", "text", minimum=1, maximum=5)
    assert prompt.parse(b"abc") == "abc"
    with pytest.raises(ValueError, match="input 'prompt' must be a text of length <= 5"):
        prompt.parse("too long")
    with pytest.raises(ValueError, match=r"input 'prompt' \(text\) is required"):
        prompt.parse(None)
    assert InputSpec("mask", "mask", required=False).parse(None) is None
    with pytest.raises(ValueError, match="kind must be one of"):
        InputSpec("audio", "waveform")


def test_card_checks_its_fields_and_lists_them_in_json(typed_toys):
    card = registry.get_card(EDITOR)
    document = card.to_json()
    kinds = {i["name"]: (i["kind"], i["required"]) for i in document["inputs"]}
    assert kinds == {"image": ("image", True), "mask": ("mask", False), "prompt": ("text", True), "boxes": ("boxes", False)}
    assert next(i for i in document["inputs"] if i["name"] == "prompt")["maximum"] == 40
    json.dumps(document)  # every default (numpy arrays included) is JSON-safe
    generator = registry.get_card(GENERATOR).to_json()
    assert generator["inputs"] == [] and {o["name"]: o["kind"] for o in generator["options"]}["class_label"] == "label"
    assert next(o for o in generator["options"] if o["name"] == "class_label")["choices"] == list(TOY_CLASSES)
    with pytest.raises(ValueError, match="has no input 'colour'"):
        card.parse_inputs({"image": 1, "prompt": "x", "colour": 2})
    with pytest.raises(ValueError, match=r"input 'prompt' \(text\) is required"):
        card.parse_inputs({"image": 1})
    common = dict(task="t", title="t", year=2026, arxiv="", repo="", license="", summary="", variants={"micro": VariantSpec(None)}, result_type="Generation")
    with pytest.raises(TypeError, match="inputs must be InputSpec"):
        ModelCard(name="x", inputs=("image",), **common)
    with pytest.raises(ValueError, match="used twice or reserved"):
        ModelCard(name="x", inputs=(InputSpec("seed", "text"),), options=(OptionSpec("seed", "int", 0),), **common)
    with pytest.raises(ValueError, match="used twice or reserved"):
        ModelCard(name="x", inputs=(), options=(OptionSpec("format", "str", "png"),), **common)


def test_generator_predict_takes_none(typed_toys):
    model = registry.create_model(GENERATOR, weights="random")
    one = model.predict(seed=3, class_label="triangle")
    assert isinstance(one, Generation) and one.seeds == [3] and one.info["class_label"] == 2
    assert np.array_equal(one.images[0], toy_generate(3, 2, 2))
    four = model.predict([None] * 4, seed=3)
    assert [g.seeds[0] for g in four] == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="option 'steps' must be <= 8"):
        model.predict(steps=9)


# -- Generation ----------------------------------------------------------------------------
def test_generation_json_draw_save(tmp_path):
    images = [np.full((6, 8, 3), 10 * i, np.uint8) for i in range(3)]
    gen = Generation(images, seeds=[5, 6, 7], steps=2, timings={"sample": 0.25}, info={"class_label": 1})
    document = gen.to_json()
    assert document["type"] == "generation" and document["seeds"] == [5, 6, 7] and document["steps"] == 2
    assert document["shapes"] == [[6, 8, 3]] * 3 and document["timings"] == {"sample": 0.25} and len(document["images_png_base64"]) == 3
    assert "images_png_base64" not in gen.to_json(include_images=False)
    json.dumps(document)
    grid = gen.draw()  # 3 images: 2 columns x 2 rows, at their own pixels (the CLI's --out writes it)
    assert grid.size == (16, 12)
    pixels = np.asarray(grid)
    assert pixels[0, 0, 0] == 0 and pixels[0, 8, 0] == 10 and pixels[6, 0, 0] == 20 and pixels[6, 8, 0] == 0  # empty cell stays black
    assert gen.draw(columns=3).size == (24, 6)
    paths = gen.save(tmp_path / "out.png")
    assert [p.name for p in paths] == ["out-0.png", "out-1.png", "out-2.png"]
    reread = Image.open(paths[1])
    assert reread.text["zoo:seed"] == "6" and reread.text["zoo:steps"] == "2" and np.asarray(reread)[0, 0, 0] == 10
    assert Generation([images[0]], seeds=[1]).save(tmp_path / "one.png") == [tmp_path / "one.png"]
    with pytest.raises(ValueError, match="3 images but 2 seeds"):
        Generation(images, seeds=[1, 2])
    assert RESULT_TYPES["Generation"] is Generation


# -- CLI -----------------------------------------------------------------------------------
def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_generator_json_out_and_summary(typed_toys, tmp_path):
    out = tmp_path / "grid.png"
    args = ["predict", GENERATOR, "--weights", "random", "--opt", "seed=3", "--opt", "class_label=circle", "--opt", "steps=3", "--count", "2"]
    document = _json(runner.invoke(app, [*args, "--json", "--out", str(out)]))
    results = document["results"]
    assert [r["seeds"] for r in results] == [[3], [4]] and results[0]["input"] is None and results[0]["steps"] == 3
    import base64

    from zoo.imageio import decode_image

    decoded = np.asarray(decode_image(base64.b64decode(results[1]["images_png_base64"][0])))
    assert np.array_equal(decoded, toy_generate(4, 3, 0))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid-1.png")), toy_generate(4, 3, 0))
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "seeds: [3]" in text.output and "class_name=circle" in text.output and "image(s), not printed" in text.output
    assert "iVBOR" not in text.output and "..." not in text.output  # no base64, no truncated JSON


@pytest.mark.parametrize("extra,message", [
    (["skimage:coins"], "takes no image INPUT arguments"),
    (["--opt", "invert=maybe"], "option 'invert' expects a boolean"),
    (["--opt", "guidance=nan"], "option 'guidance' expects a finite float"),
    (["--opt", "class_label=7"], "option 'class_label' must be a class index"),
    (["--opt", "tile=maybe"], "has no option 'tile'"),
    (["--prompt", "a cat"], "has no text input for --prompt"),
    (["--count", "0"], "--count must be >= 1"),
])
def test_cli_generator_errors_name_the_field(typed_toys, extra, message):
    result = runner.invoke(app, ["predict", GENERATOR, "--weights", "random", *extra])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_editor_typed_inputs(typed_toys, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(np.full((10, 12, 3), 200, np.uint8)).save(image)
    mask = tmp_path / "mask.png"
    mask_pixels = np.zeros((10, 12), np.uint8)
    mask_pixels[8:, 10:] = 255
    Image.fromarray(mask_pixels).save(mask)
    args = ["predict", EDITOR, str(image), "--weights", "random", "--prompt", "abc", "--input", "boxes=[[0, 0, 2, 3]]", "--input", f"mask={mask}"]
    document = _json(runner.invoke(app, [*args, "--json"]))
    result = document["results"][0]
    assert result["input"] == str(image) and result["info"] == {"prompt": "abc", "boxes": 1}
    out = tmp_path / "side.png"
    assert runner.invoke(app, [*args, "--out", str(out)]).exit_code == 0
    drawn = np.asarray(Image.open(out))  # ImageResult.draw(input): input | result side by side
    assert drawn.shape == (10, 24, 3) and drawn[0, 12 + 1].tolist() == [30, 0, 0] and drawn[9, 12 + 11].tolist() == [0, 0, 0] and drawn[5, 12 + 5].tolist() == [200] * 3
    for extra, message in [([], "input 'prompt' (text) is required"), (["--prompt", "x" * 41], "input 'prompt' must be a text of length <= 40"),
                           (["--prompt", "a", "--input", "boxes=[[0,0,1]]"], "input 'boxes' expects boxes"),
                           (["--prompt", "a", "--input", "colour=red"], "has no input 'colour'"),
                           (["--prompt", "a", "--input", "prompt=b"], "given twice")]:
        result = runner.invoke(app, ["predict", EDITOR, str(image), "--weights", "random", *extra])
        assert result.exit_code == 2 and message in result.output, (extra, result.output)


def test_cli_text_summary_of_a_detector_like_result(toy_model, tmp_path):
    """The existing result types read well too: numbers rounded, no JSON cut off."""
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    result = runner.invoke(app, ["predict", "toy-anomaly", str(image), "--weights", "random", "--opt", "threshold=0.5"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{image}: anomaly" and any(line.startswith("  score: ") for line in lines)
    score = float(next(line for line in lines if line.startswith("  score: ")).split(": ")[1])
    assert math.isfinite(score) and "threshold: 0.5" in result.output


def test_cli_info_lists_typed_inputs_and_options(typed_toys):
    editor = runner.invoke(app, ["info", EDITOR])
    assert editor.exit_code == 0, editor.output
    assert "inputs: image (image), mask (mask, optional), prompt (text, length 1..40), boxes (boxes, optional, <= 4 boxes)" in editor.output
    generator = runner.invoke(app, ["info", GENERATOR]).output
    assert "inputs: none (a generator: options only)" in generator
    assert "option class_label (label, default square, circle|square|triangle): class to draw" in generator
    assert "option seed (int, default 0, >= 0): first seed" in generator


def test_summary_lines_read_every_result_type():
    from zoo.cli import summary_lines
    from zoo.results import Detections, Segmentation

    detections = Detections(np.array([[1, 2, 30.123, 40]]), np.array([0.91234]), np.array([1]), class_names=["a", "cat"]).to_json()
    lines = summary_lines({k: v for k, v in detections.items() if k != "type"})
    assert lines == ["detections: 1", "  - box=[1, 2, 30.12, 40], score=0.9123, label=1, name=cat"]
    segmentation = Segmentation("semantic", np.zeros((4, 4)), segments=[{"id": 0, "label": 2}]).to_json(include_map=True)
    lines = summary_lines({k: v for k, v in segmentation.items() if k != "type"})
    assert "segment_map: 16 values, 0..0" in lines and "kind: semantic" in lines and "  - id=0, label=2, area=16" in lines  # to_json adds each segment's area
    assert summary_lines({"images_png_base64": ["AAAA", "BBBB"]}) == ["images_png: 2 image(s), not printed (--out FILE draws them, --json carries them)"]
