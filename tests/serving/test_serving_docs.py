"""/docs (Swagger UI) and /redoc work offline: every script, stylesheet and icon they load comes from our server."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import pytest
from serving_support import FAKE, http, live

from zoo.serving import create_app


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.scripts.append(found["src"])
        elif tag == "link" and found.get("href"):
            (self.styles if "stylesheet" in (found.get("rel") or "") else self.other).append(found["href"])


@pytest.fixture(scope="module")
def server(fakes):
    app = create_app([FAKE], api_key="docs-key", random_weights=True)
    with live(app) as running:
        yield running


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_loads_everything_from_our_server(server, page):
    with http(server.url) as h:  # no API key: the docs pages and their assets are public
        answer = h.get(page)
        assert answer.status_code == 200 and "text/html" in answer.headers["content-type"]
        html = answer.text
        links = _Links()
        links.feed(html)
        assert links.scripts, f"{page} loads no script"
        if page == "/docs":
            assert links.styles, "/docs loads no stylesheet"
        for url in [*links.scripts, *links.styles, *links.other]:
            absolute = urljoin(server.url + page, url)
            assert urlparse(absolute).netloc == urlparse(server.url).netloc, f"{page} loads {url} from elsewhere"
            asset = h.get(absolute)
            assert asset.status_code == 200 and len(asset.content) > 100, (url, asset.status_code)
        outside = [u for u in re.findall(r"https?://[^\s\"'<>)]+", html) if not u.startswith(server.url)]
        assert not outside, f"{page} names URLs outside this server: {outside}"
        spec = h.get("/openapi.json")
        assert spec.status_code == 200 and spec.json()["info"]["title"] == "zoo"


def test_swagger_bundle_is_the_real_one(server):
    with http(server.url) as h:
        js = h.get("/docs/assets/swagger-ui-bundle.js")
        assert "SwaggerUIBundle" in js.text and len(js.content) > 500_000
        assert "Redoc" in h.get("/docs/assets/redoc.standalone.js").text
        assert h.get("/docs/oauth2-redirect").status_code == 200
        assert h.get("/models").status_code == 401  # the key still guards everything else
