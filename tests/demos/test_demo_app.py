"""The Gradio demo, driven by gradio_client: standalone (`zoo demo`) and mounted at /demo."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image
from serving_support import BROKEN, FAKE, live, png_bytes, real_model_names

from zoo.demos.app import api_name, build_demo
from zoo.registry import create_model

gradio_client = pytest.importorskip("gradio_client")

IMAGE = np.random.default_rng(7).integers(0, 255, (20, 28, 3), dtype=np.uint8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "input.png"
    path.write_bytes(png_bytes(IMAGE))
    return str(path)


@pytest.fixture(scope="module")
def standalone(fakes):
    demo = build_demo([FAKE, BROKEN], random_weights=True)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


def test_tab_per_model_and_pixels_match(standalone, image_path):
    client = gradio_client.Client(standalone, verbose=False)
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {"/" + api_name(FAKE), "/" + api_name(BROKEN)}
    params = [p["parameter_name"] for p in endpoints["/" + api_name(FAKE)]["parameters"]]
    assert params == ["image", "threshold", "gain"]  # the card's input, then its options
    drawn_path, document = client.predict(gradio_client.handle_file(image_path), 0.5, 2.0, api_name="/" + api_name(FAKE))
    expected = create_model(FAKE, weights="random").predict(Image.fromarray(IMAGE), threshold=0.5, gain=2.0)
    assert document["score"] == pytest.approx(expected.score, rel=1e-6) and document["threshold"] == 0.5
    assert drawn_path.endswith(".png")
    # a small input is drawn at a whole multiple of its size: 28 px wide, x8 (at most 512 px, at most x8)
    assert np.array_equal(np.asarray(Image.open(drawn_path).convert("RGB")), np.asarray(expected.draw(Image.fromarray(IMAGE), scale=8)))
    # an option left empty takes the card's default
    _, plain = client.predict(gradio_client.handle_file(image_path), None, 1.0, api_name="/" + api_name(FAKE))
    assert "threshold" not in plain and plain["score"] == pytest.approx(expected.score / 2, rel=1e-6)


def test_errors_are_shown_not_fatal(standalone, image_path):
    client = gradio_client.Client(standalone, verbose=False)
    with pytest.raises(Exception, match="weights are corrupt"):
        client.predict(gradio_client.handle_file(image_path), None, 1.0, api_name="/" + api_name(BROKEN))
    with pytest.raises(Exception, match=r"(must be <=|maximum value) 10"):  # Gradio checks the slider itself
        client.predict(gradio_client.handle_file(image_path), None, 50.0, api_name="/" + api_name(FAKE))
    _, document = client.predict(gradio_client.handle_file(image_path), None, 1.0, api_name="/" + api_name(FAKE))
    assert document["type"] == "anomaly"


def test_mounted_on_the_server_shares_its_models(fakes, image_path):
    from zoo.serving import create_app

    app = create_app([FAKE], demo=lambda manager: build_demo(list(manager.entries), get_pipeline=manager.pipeline), random_weights=True)
    with live(app) as server:
        net = app.state.manager.entries[FAKE].pipeline.model.net
        net.batch_sizes.clear()
        client = gradio_client.Client(server.url + "/demo/", verbose=False)
        _, document = client.predict(gradio_client.handle_file(image_path), None, 1.0, api_name="/" + api_name(FAKE))
        assert document["map_shape"] == [20, 28]
        assert net.batch_sizes == [1]  # the server's own pipeline (through its batcher) ran it
        import httpx

        assert httpx.get(server.url + "/").json()["demo"] == "/demo/"
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_every_registered_model_gets_a_tab():
    names = real_model_names()
    demo = build_demo(names)
    fns = {dep.api_name for dep in demo.fns.values() if dep.api_name}
    assert {api_name(n) for n in names} <= fns


def test_mounted_demo_needs_the_key_when_one_is_set(fakes, image_path):
    import httpx

    from zoo.serving import create_app

    app = create_app([FAKE], api_key="k3y", demo=lambda manager: build_demo(list(manager.entries), get_pipeline=manager.pipeline), random_weights=True)
    with live(app) as server:
        assert httpx.get(server.url + "/demo/config").status_code == 401
        with pytest.raises(Exception, match="credentials"):
            gradio_client.Client(server.url + "/demo/", verbose=False)
        client = gradio_client.Client(server.url + "/demo/", auth=("zoo", "k3y"), verbose=False)
        _, document = client.predict(gradio_client.handle_file(image_path), None, 1.0, api_name="/" + api_name(FAKE))
        assert document["map_shape"] == [20, 28]


def test_bundled_examples_bring_their_text():
    """An image example with a STEM.txt beside it fills the card's text input too (PVD's expression),
    so clicking the example and Run works."""
    from zoo.demos.app import _example_rows
    from zoo.registry import get_card

    card = get_card("pvd")
    rows = _example_rows(card)
    names = [spec.name for spec in card.inputs]
    assert rows and all(row[names.index("expression")] for row in rows)
    from pathlib import Path

    assert rows[0][names.index("expression")] == Path(card.examples[0]).with_suffix(".txt").read_text().strip()
