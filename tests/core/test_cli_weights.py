"""The command line never serves, predicts or exports random weights unless asked (--random-weights)."""

from typer.testing import CliRunner

from zoo.cli import app

runner = CliRunner()


def test_predict_refuses_a_variant_without_weights(toy_model):
    refused = runner.invoke(app, ["predict", "toy-anomaly", "skimage:camera", "--json"])
    assert refused.exit_code == 2 and "no bundled weights" in refused.output and "--random-weights" in refused.output
    asked = runner.invoke(app, ["predict", "toy-anomaly", "skimage:camera", "--random-weights", "--json"])
    assert asked.exit_code == 0, asked.output
    both = runner.invoke(app, ["predict", "toy-anomaly", "skimage:camera", "--random-weights", "--weights", "mine.safetensors"])
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_export_refuses_a_variant_without_weights(toy_model, tmp_path):
    refused = runner.invoke(app, ["export", "toy-anomaly", "--format", "onnx", "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2 and "--random-weights" in refused.output and not (tmp_path / "a" / "export.json").exists()


def test_serve_refuses_a_named_variant_without_weights(toy_model, monkeypatch):
    import uvicorn

    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kwargs: ran.append(asgi))
    refused = runner.invoke(app, ["serve", "--models", "toy-anomaly", "--no-demo"])
    assert refused.exit_code == 2 and "toy-anomaly:micro has no bundled weights" in refused.output and "--random-weights" in refused.output
    assert not ran
    asked = runner.invoke(app, ["serve", "--models", "toy-anomaly", "--no-demo", "--random-weights"])
    assert asked.exit_code == 0, asked.output
    assert ran and ran[0].state.manager.random_weights


def test_demo_takes_random_weights(toy_model, monkeypatch):
    from zoo import demos
    calls = []
    monkeypatch.setattr(demos, "launch_demo", lambda **kwargs: calls.append(kwargs))
    assert runner.invoke(app, ["demo", "--models", "toy-anomaly", "--random-weights"]).exit_code == 0
    assert calls[0]["random_weights"] is True
