"""`zoo serve` and `zoo demo` from the command line (uvicorn and Gradio's launch stubbed out)."""

from __future__ import annotations

import pytest
from serving_support import FAKE
from typer.testing import CliRunner

from zoo.cli import app


@pytest.fixture
def captured(monkeypatch):
    import uvicorn

    calls = {}

    def fake_run(asgi, **kwargs):
        calls.update(kwargs, app=asgi)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.delenv("ZOO_API_KEY", raising=False)
    return calls


def test_serve_prints_urls_and_passes_settings(fakes, captured):
    result = CliRunner().invoke(app, ["serve", "--models", FAKE, "--random-weights", "--port", "8123", "--max-batch-size", "4", "--max-queue-delay-ms", "2", "--queue-size", "3", "--timeout-s", "7", "--no-demo"])
    assert result.exit_code == 0, result.output
    for url in ("http://127.0.0.1:8123/v2", "http://127.0.0.1:8123/docs", "http://127.0.0.1:8123/models"):
        assert url in result.output
    assert "/demo" not in result.output
    assert captured["host"] == "127.0.0.1" and captured["port"] == 8123
    manager = captured["app"].state.manager
    assert list(manager.entries) == [FAKE]
    assert (manager.batching.max_batch_size, manager.batching.max_queue_delay_s, manager.batching.queue_size, manager.batching.timeout_s) == (4, 0.002, 3, 7)


def test_serve_mounts_the_demo_by_default(fakes, captured):
    result = CliRunner().invoke(app, ["serve", "--models", FAKE, "--random-weights"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8000/demo/" in result.output
    assert any(getattr(route, "path", "") == "/demo" for route in captured["app"].routes)


def test_serve_and_demo_refuse_open_binding_without_key(fakes, captured):
    runner = CliRunner()
    refused = runner.invoke(app, ["serve", "--models", FAKE, "--random-weights", "--host", "0.0.0.0", "--no-demo"])
    assert refused.exit_code == 2 and "API key" in refused.output and "app" not in captured
    allowed = runner.invoke(app, ["serve", "--models", FAKE, "--random-weights", "--host", "0.0.0.0", "--no-demo"], env={"ZOO_API_KEY": "k"})
    assert allowed.exit_code == 0 and captured["host"] == "0.0.0.0"
    assert runner.invoke(app, ["serve", "--models", "no-such-model", "--no-demo"]).exit_code == 2
    assert runner.invoke(app, ["serve", "--models", FAKE, "--random-weights", "--queue-size", "0", "--no-demo"]).exit_code == 2
    demo = runner.invoke(app, ["demo", "--host", "0.0.0.0", "--models", FAKE])
    assert demo.exit_code == 2 and "API key" in demo.output
