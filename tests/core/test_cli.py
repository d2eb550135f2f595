"""CLI smoke tests: every command with --json prints one JSON document on stdout."""

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from zoo.cli import app

runner = CliRunner()


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_and_info_json(toy_model):
    names = [card["name"] for card in _json(runner.invoke(app, ["list", "--json"]))]
    assert "toy-anomaly" in names
    only = _json(runner.invoke(app, ["list", "--task", "anomaly-detection", "--json"]))
    assert {c["task"] for c in only} == {"anomaly-detection"}
    info = _json(runner.invoke(app, ["info", "toy-anomaly", "--json"]))
    assert info["variants"]["micro"]["params"]["total"] == 117


def test_unknown_model_is_a_clear_error(toy_model):
    result = runner.invoke(app, ["info", "toy-anomly"])
    assert result.exit_code == 2
    assert "did you mean toy-anomaly" in result.output


def test_predict_json_and_overlay(toy_model, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    out = tmp_path / "overlay.png"
    document = _json(runner.invoke(app, ["predict", "toy-anomaly", str(image), "--weights", "random", "--opt", "threshold=0.5", "--json", "--out", str(out)]))
    assert document["results"][0]["threshold"] == 0.5
    assert Image.open(out).size == (16, 16)


def test_predict_bad_inputs(toy_model, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = runner.invoke(app, ["predict", "toy-anomaly", str(bad), "--weights", "random"])
    assert result.exit_code == 2 and "not an image" in result.output
    result = runner.invoke(app, ["predict", "toy-anomaly", "skimage:camera", "--weights", "random", "--opt", "threshold"])
    assert result.exit_code == 2 and "key=value" in result.output


def test_train_json_resume_and_predict_with_the_result(tmp_path):
    """`zoo train` end to end on the real EfficientAD micro: JSON summary, the run folder's
    files, --resume of a finished run, and the weights loaded back by `zoo predict`."""
    out = tmp_path / "run"
    args = ["train", "efficientad", "--steps", "4", "--set", "log_every=1", "--set", "ckpt_every=2",
            "--out", str(out), "--no-progress", "--json"]
    summary = _json(runner.invoke(app, args))
    assert summary["steps"] == 4 and summary["variant"] == "micro" and summary["stage"] == "anomaly"
    assert 0.0 <= summary["metrics"]["image_auroc"] <= 1.0
    assert {"model.safetensors", "model.json", "log.jsonl", "checkpoints"} <= {p.name for p in out.iterdir()}
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if "loss" in line] == [1, 2, 3, 4]
    again = runner.invoke(app, args)  # a fresh run into a used folder is refused, nothing overwritten
    assert again.exit_code == 2 and "resume" in again.output
    resumed = _json(runner.invoke(app, args + ["--resume"]))
    assert resumed["steps"] == 4
    document = _json(runner.invoke(app, ["predict", "efficientad", "skimage:brick", "--weights", str(out / "model.safetensors"), "--json"]))
    assert document["results"][0]["map_shape"] == [512, 512]
