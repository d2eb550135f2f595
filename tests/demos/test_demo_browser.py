"""The demo mounted at /demo under the server, as a browser uses it: every file the page
references after a click comes from our own server (200, an image), checked over HTTP the
way the page asks for it and in a real headless chromium (tests/demos/demo_browser.py)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import demo_browser as chromium
import httpx
import pytest
from PIL import Image
from serving_support import FAKE, live

from zoo.demos.app import build_demo


@pytest.fixture(scope="module")
def server(fakes) -> Iterator[Any]:
    from zoo.serving import create_app

    app = create_app([FAKE], demo=lambda manager: build_demo(list(manager.entries), get_pipeline=manager.pipeline), random_weights=True)
    with live(app) as running:
        yield running


def _urls(value: Any) -> list[str]:
    if isinstance(value, dict):
        return ([value["url"]] if isinstance(value.get("url"), str) else []) + [u for v in value.values() for u in _urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in _urls(v)]
    return []


def _assert_image_from(server_url: str, url: str) -> Image.Image:
    assert url.startswith(server_url + "/demo/"), f"{url} is not under {server_url}/demo/"
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200, (url, answer.status_code)
    assert answer.headers["content-type"].startswith("image/"), (url, answer.headers["content-type"])
    return Image.open(io.BytesIO(answer.content))


def test_clicked_example_file_urls_are_served(server):
    """What the page posts when a bundled example is clicked; every file URL in the answer loads."""
    config = httpx.get(server.url + "/demo/config", timeout=30).json()
    loaders = [d for d in config["dependencies"] if str(d.get("api_name", "")).startswith("load_example")]
    assert loaders, "no bundled example to click"
    for dependency in loaders:
        body = {"data": [0], "fn_index": dependency["id"], "trigger_id": dependency["targets"][0][0], "session_hash": "h2test"}
        answer = httpx.post(server.url + "/demo/gradio_api/run/predict", json=body, timeout=30)
        assert answer.status_code == 200, answer.text[:300]
        urls = _urls(answer.json()["data"])
        assert urls, f"the example loader answered no file: {answer.text[:300]}"
        for url in urls:
            assert _assert_image_from(server.url, url).size == (384, 303)  # skimage's coins (width, height), the double's example


@pytest.mark.skipif(chromium.CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_example_click_in_chromium_shows_the_image_and_runs(server):
    with chromium.Browser(width=1200, height=900) as page:
        chromium.open_tab(page, server.url + "/demo/", FAKE)
        pictures = f"[...document.querySelectorAll('img')].filter({chromium.VISIBLE}).filter(i => !i.src.startsWith('data:'))"
        # the example's thumbnail first, so the input image is the picture the click adds
        thumbnails = page.wait_for(f"(() => {{ const p = {pictures}; return p.length && p.every(i => i.complete && i.naturalWidth) && p.length; }})()", timeout_s=30)
        chromium.click_visible(page, ".gallery-item")
        # the input image appears beside the examples' thumbnails and every visible picture decoded
        page.wait_for(f"{pictures}.length > {thumbnails}", timeout_s=30)
        page.wait_for(f"[...document.querySelectorAll('img')].filter({chromium.VISIBLE}).every(i => i.complete)", timeout_s=30)
        shown = page.evaluate(pictures + ".map(i => [i.src, i.naturalWidth])")
        for src, width in shown:
            assert width > 0, f"broken image on the page: {src}"
            _assert_image_from(server.url, src)
        chromium.run_first_example(page, timeout_s=60)  # clicks it again, then Run: the result is drawn
        result = page.evaluate(f"[...document.querySelectorAll('img')].filter({chromium.VISIBLE}).filter(i => i.src.includes('.png') && !i.src.includes('coins')).map(i => [i.src, i.naturalWidth])")
        assert result and all(width > 0 for _, width in result), result
        assert any(width == 384 for _, width in result), result  # coins, 384 px wide: drawn at its size (512 // 384 = 1)
        # the threshold box was left empty: the browser sent no threshold (a number box sends 0,
        # which flagged every image as anomalous)
        shown = page.wait_for("document.body.innerText.includes('map_mean') && document.body.innerText")
        assert "score" in shown
        assert "is_anomalous" not in shown and "threshold\": 0" not in shown
