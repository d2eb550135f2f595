"""Internal errors: the client gets a request id, the log gets the rest; every response names its id."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from serving_support import FAKE, http, live, png_bytes

from zoo.serving import Limits, create_app

SECRET = "/srv/zoo/private/weights.bin is corrupt"


@pytest.fixture
def app(fakes):
    """A fresh app per test: a stopped server's worker pools do not restart."""
    app = create_app([FAKE], limits=Limits(max_body_bytes=10_000), random_weights=True)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(SECRET)

    return app


def test_unhandled_error_answers_with_an_id_only(app, caplog):
    with caplog.at_level(logging.ERROR, logger="zoo.serving.app"), live(app) as server, http(server.url) as h:
        answer = h.get("/boom")
        assert answer.status_code == 500
        request_id = answer.headers["x-request-id"]
        assert answer.json()["request_id"] == request_id and request_id in answer.json()["error"]
        assert SECRET not in answer.text and "RuntimeError" not in answer.text
        mine = h.get("/boom", headers={"X-Request-Id": "trace-42"})  # a proxy's id is kept
        assert mine.headers["x-request-id"] == "trace-42" and mine.json()["request_id"] == "trace-42"
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and SECRET in logged[0].getMessage() and logged[0].exc_info is not None


def test_failing_prediction_hides_the_exception(app, caplog, monkeypatch):
    with caplog.at_level(logging.ERROR, logger="zoo.serving.app"), live(app) as server, http(server.url) as h:
        pipeline = app.state.manager.entries[FAKE].pipeline

        def broken(*args, **kwargs):
            raise OSError(SECRET)

        monkeypatch.setattr(pipeline, "predict", broken)
        answer = h.post(f"/models/{FAKE}/predict", content=png_bytes(np.zeros((8, 8, 3), np.uint8)))
        assert answer.status_code == 500 and SECRET not in answer.text and "OSError" not in answer.text
        request_id = answer.json()["request_id"]
        assert answer.headers["x-request-id"] == request_id
    assert any(request_id in r.getMessage() and SECRET in r.getMessage() for r in caplog.records)


def test_every_response_carries_a_request_id(app):
    with live(app) as server, http(server.url) as h:
        answers = {
            "live": h.get("/v2/health/live"),
            "not found": h.get("/v2/models/nope"),
            "too large": h.post(f"/models/{FAKE}/predict", content=b"x" * 20_000),  # refused by the body limit
            "docs": h.get("/docs"),
            "metrics": h.get("/metrics"),
        }
        ids = {name: a.headers.get("x-request-id") for name, a in answers.items()}
        assert all(ids.values()), ids
        assert len(set(ids.values())) == len(ids)  # one id per request
        assert answers["too large"].status_code == 413
        odd = "bad id <script>"
        assert h.get("/v2/health/live", headers={"X-Request-Id": odd}).headers["x-request-id"] not in (odd, "")
        assert h.get("/v2/health/live", headers={"X-Request-Id": "x" * 65}).headers["x-request-id"] != "x" * 65


def test_huge_png_header_quotes_our_pixel_limit(app):
    from PIL import Image

    from zoo.serving.limits import Limits as Defaults

    png = _png_claiming(60_000, 60_000)
    with live(app) as server, http(server.url) as h:
        answer = h.post(f"/models/{FAKE}/predict", content=png)
    assert answer.status_code == 413
    message = answer.json()["error"]
    assert f"over the {Defaults().max_image_pixels}-pixel limit" in message and str(2 * Image.MAX_IMAGE_PIXELS) not in message


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (one tiny compressed row follows)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_model_without_weights_fails_alone_and_says_why(fakes):
    app = create_app([FAKE])  # the doubles have no bundled weights, and random ones were not asked for
    with live(app) as server, http(server.url) as h:
        entry = app.state.manager.entries[FAKE]
        assert entry.status == "failed" and "no bundled weights" in entry.error and "random" in entry.error
        answer = h.post(f"/models/{FAKE}/predict", content=b"x")
        assert answer.status_code == 503 and "no bundled weights" in answer.json()["error"]
