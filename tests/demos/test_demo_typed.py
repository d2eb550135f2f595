"""The Gradio demo builds each tab from the card's typed inputs (issue #12): a generator tab
with no image input showing the generated grid, a four-input editor tab, and option widgets
that keep an unset default empty. Driven by gradio_client, with test-time cards."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from serving_support import png_bytes  # noqa: E402
from typed_toys import EDITOR, GENERATOR, toy_generate  # noqa: E402

from zoo.demos.app import UNSET, api_name, build_demo, captioned_sheet  # noqa: E402
from zoo.registry import create_model  # noqa: E402

gradio_client = pytest.importorskip("gradio_client")

PICTURE = np.full((10, 12, 3), 200, np.uint8)
MASK = np.zeros((10, 12), np.uint8)
MASK[8:, 10:] = 255


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(typed_toys):
    pipelines = {name: create_model(name, weights="random") for name in (GENERATOR, EDITOR)}
    demo = build_demo([GENERATOR, EDITOR], get_pipeline=pipelines.__getitem__)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("typed-demo")
    (folder / "picture.png").write_bytes(png_bytes(PICTURE))
    (folder / "mask.png").write_bytes(png_bytes(MASK))
    return {"picture": str(folder / "picture.png"), "mask": str(folder / "mask.png")}


def test_tabs_take_the_typed_inputs(demo_url):
    client = gradio_client.Client(demo_url, verbose=False)
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    generator = endpoints["/" + api_name(GENERATOR)]["parameters"]
    assert [p["parameter_name"] for p in generator] == ["seed", "steps", "class_label", "guidance", "invert"]  # no image
    assert [p["component"] for p in generator] == ["Number", "Slider", "Dropdown", "Slider", "Checkbox"]
    editor = endpoints["/" + api_name(EDITOR)]["parameters"]
    assert [(p["parameter_name"], p["component"]) for p in editor] == [
        ("image", "Image"), ("mask", "Image"), ("prompt", "Textbox"), ("boxes", "Textbox"), ("strength", "Slider")]


def test_generator_tab_shows_the_generated_image(demo_url):
    client = gradio_client.Client(demo_url, verbose=False)
    drawn, document = client.predict(3, 3, "triangle", 1.0, False, api_name="/" + api_name(GENERATOR))
    assert document["type"] == "generation" and document["seeds"] == [3] and document["info"]["class_name"] == "triangle"
    sample = toy_generate(3, 3, 2)  # 8 px: shown x8, pixels kept (nearest)
    assert np.array_equal(np.asarray(Image.open(drawn).convert("RGB")), sample.repeat(8, 0).repeat(8, 1))
    # an unset seed (empty number box) is the card's default, not 0 by accident of the widget
    _, default = client.predict(None, 2, "square", 1.0, True, api_name="/" + api_name(GENERATOR))
    assert default["seeds"] == [0]
    with pytest.raises(Exception, match=r"(must be <=|maximum value) 4"):  # the slider's range is the card's
        client.predict(3, 2, "square", 5.0, False, api_name="/" + api_name(GENERATOR))


def test_editor_tab_runs_every_kind(demo_url, files):
    client = gradio_client.Client(demo_url, verbose=False)
    handle = gradio_client.handle_file
    drawn, document = client.predict(handle(files["picture"]), handle(files["mask"]), "abc", "[[0, 0, 2, 3]]", 1.0, api_name="/" + api_name(EDITOR))
    want = PICTURE.copy()
    want[0:3, 0:2] = (30, 0, 0)
    want[MASK > 127] = 0
    # an image result: the input and the output side by side, each above its caption (lossless PNG, x8 nearest)
    sheet = np.asarray(Image.open(drawn).convert("RGB"))
    _, boxes = captioned_sheet([(Image.fromarray(PICTURE), "input"), (Image.fromarray(want), "result")])
    assert sheet.shape[1] == boxes[1][2] and sheet.shape[0] > boxes[1][3]  # the captions below
    for (left, top, right, bottom), picture in zip(boxes, (PICTURE, want)):
        assert np.array_equal(sheet[top:bottom:8, left:right:8], picture)
    # the JSON panel carries no base64 blob: a note says where the images are
    assert "PNG image(s)" in document["images_png_base64"] and document["shapes"] == [[10, 12, 3]]
    assert all(len(str(v)) < 200 for v in document.values())
    _, no_extras = client.predict(handle(files["picture"]), None, "ab", "", 1.0, api_name="/" + api_name(EDITOR))
    assert no_extras["info"] == {"prompt": "ab", "boxes": 0}
    for args, message in [((handle(files["picture"]), None, "", "", 1.0), "input 'prompt' (text) is required"),
                          ((handle(files["picture"]), None, "a", "[[0, 0, 1]]", 1.0), "input 'boxes' expects boxes"),
                          ((None, None, "a", "", 1.0), "input 'image' (image) is required")]:
        with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
            client.predict(*args, api_name="/" + api_name(EDITOR))


def test_unset_option_defaults_stay_empty():
    """EfficientAD's threshold defaults to None: its widget stays empty (a placeholder says so),
    never a 0 that would mark every pixel anomalous. Not a gr.Number: the browser's number box
    turns an empty value into 0 (tests/demos/test_demo_browser.py runs it in chromium)."""
    import gradio as gr

    demo = build_demo(["efficientad"])  # models load on first use: building needs no weights
    boxes = [b for b in demo.blocks.values() if getattr(b, "label", None) == "threshold"]
    assert len(boxes) == 1 and isinstance(boxes[0], gr.Textbox) and boxes[0].value == "" and boxes[0].placeholder == UNSET
