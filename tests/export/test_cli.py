"""`zoo export` and `zoo predict --backend onnxruntime` from the command line."""

from __future__ import annotations

import json

import pytest
import toys
from typer.testing import CliRunner

from zoo import registry
from zoo.cli import app


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_export_json_then_predict_on_onnxruntime(runner, exports, tmp_path):
    weights = exports.weights(toys.FIXED)
    out = tmp_path / "onnx"
    result = runner.invoke(app, ["export", toys.FIXED, "--weights", str(weights), "--format", "onnx", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert document["graphs"]["detector"]["parity"]["passed"] and (out / "detector.onnx").is_file()
    assert json.loads((out / "export.json").read_text())["weights_sha256"] == document["weights_sha256"]

    args = ["predict", toys.FIXED, "skimage:brick", "--weights", str(weights), "--opt", "threshold=0.5", "--json"]
    on_torch = json.loads(runner.invoke(app, args).stdout)
    on_ort = runner.invoke(app, [*args, "--backend", "onnxruntime", "--export-dir", str(out)])
    assert on_ort.exit_code == 0, on_ort.output
    on_ort_doc = json.loads(on_ort.stdout)
    assert on_ort_doc["backend"] == "onnxruntime"
    assert on_ort_doc["results"][0]["score"] == pytest.approx(on_torch["results"][0]["score"], rel=1e-3, abs=1e-4)


def test_export_text_summary(runner, tmp_path):
    result = runner.invoke(app, ["export", toys.FIXED, "--weights", "random", "--format", "onnx", "--out", str(tmp_path), "--exporter", "torchscript"])
    assert result.exit_code == 0, result.output
    assert "parity at {'batch': 3}: ok" in result.stdout and "dynamo=False" in result.stdout


def test_export_rejects_bad_format_and_model(runner, tmp_path):
    result = runner.invoke(app, ["export", toys.FIXED, "--format", "tflite", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "onnx-fp16" in result.output
    result = runner.invoke(app, ["export", "no-such-model", "--format", "onnx", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown model" in result.output


def test_parity_failure_exits_nonzero_with_report(runner, tmp_path):
    try:
        name = toys.register_baked()
        result = runner.invoke(app, ["export", name, "--weights", "random", "--format", "onnx", "--out", str(tmp_path), "--json"])
        assert result.exit_code == 1
        assert "parity check failed" in result.output and "max abs" in result.output
        document = json.loads(result.stdout)
        assert "error" in document and document["graphs"]["baked"]["parity"]["passed"] is False
    finally:
        registry._REGISTRY.pop(toys.BAKED, None)
