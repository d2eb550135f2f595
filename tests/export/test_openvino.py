"""The openvino backend: every registered model's graphs through OpenVINO match the torch backend
(fp32), reached through the `zoo.backends` entry point; `--format openvino` writes IR with the
parity manifest; bf16 runs where the CPU reports it and is judged by the task metric."""

from __future__ import annotations

import json

import numpy as np
import pytest
import toys

from zoo import registry
from zoo.export import LADDER, export_model, summary_lines
from zoo.export.common import FP32_TOLERANCE, ExportError, compare
from zoo.export.openvino import OpenVinoRunner, bf16_unsupported_reason, compile_config, compile_model, export_openvino

NAMES = toys.all_names()


@pytest.mark.parametrize("name", NAMES)
def test_every_model_openvino_fp32_matches_torch(name, exports):
    """OpenVINO reads the `--format onnx` folder (same manifest and checks): graphs agree at fp32 tolerance."""
    out, _, weights = exports.get(name, "onnx")
    torch_pipe = registry.create_model(name, "micro", weights=weights)
    ov_pipe = registry.create_model(name, "micro", weights=weights, backend="openvino", export_dir=out, threads=1)
    assert ov_pipe.backend == "openvino"
    for spec in torch_pipe.graph_specs():
        assert isinstance(ov_pipe._runners[spec.name], OpenVinoRunner)
        dims = {k: v[0] for k, v in spec.dims.items()}  # the smallest sizes: another shape than the export's
        inputs = spec.example_inputs(dims, seed=7)
        for want, got in zip(torch_pipe.run_graph(spec.name, *inputs), ov_pipe.run_graph(spec.name, *inputs)):
            assert got.dtype == want.dtype and got.shape == want.shape
            figures = compare(want.numpy(), got.numpy(), FP32_TOLERANCE)
            assert figures["passed"], (spec.name, figures)


def test_entry_point_and_ladder():
    assert registry.available_backends()["openvino"].value == "zoo.export.openvino:attach_openvino"
    assert LADDER["openvino-int8"] == ("openvino", "int8") and LADDER["onnx-int8"] == ("onnxruntime", "int8")
    config = compile_config("f32", threads=1)
    # fp32 pinned: OpenVINO's CPU plugin would pick bf16 by itself on CPUs that have it
    assert config["INFERENCE_PRECISION_HINT"] == "f32" and config["INFERENCE_NUM_THREADS"] == "1"
    assert compile_config("bf16")["INFERENCE_PRECISION_HINT"] == "bf16"
    with pytest.raises(ValueError, match="precision"):
        compile_config("fp8")


def test_export_openvino_writes_ir_and_manifest(exports, tmp_path):
    weights = exports.weights(toys.FIXED)
    manifest = export_model(toys.FIXED, "openvino", tmp_path, variant="micro", weights=weights)
    entry = manifest["graphs"]["detector"]
    assert manifest["format"] == "openvino" and "openvino" in manifest["versions"]
    assert (tmp_path / "detector.xml").is_file() and (tmp_path / "detector.bin").is_file()
    assert entry["inference_precision"] == "f32" and entry["parity_fp32"]["passed"] and entry["parity"]["passed"]
    assert entry["parity"]["tolerance"] == {"abs": 1e-4, "rel": 1e-3}
    assert json.loads((tmp_path / "export.json").read_text())["graphs"]["detector"]["ir"] == "detector.xml"
    assert any("parity at" in line for line in summary_lines(manifest))
    # predictions read the same as torch's
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    want = registry.create_model(toys.FIXED, "micro", weights=weights).predict(image)
    got = registry.create_model(toys.FIXED, "micro", weights=weights, backend="openvino", export_dir=tmp_path).predict(image)
    assert got.score == pytest.approx(want.score, rel=1e-3, abs=1e-4)
    np.testing.assert_allclose(got.map, want.map, rtol=1e-3, atol=1e-4)
    # other weights are refused, as for onnxruntime
    with pytest.raises(ExportError, match="other weights"):
        registry.create_model(toys.FIXED, "micro", weights="random", backend="openvino", export_dir=tmp_path)
    with pytest.raises(ExportError, match="export_dir"):
        registry.create_model(toys.FIXED, "micro", weights=weights, backend="openvino")


def test_bf16_where_the_cpu_has_it(exports, tmp_path):
    reason = bf16_unsupported_reason()
    if reason:
        pytest.skip(reason)
    weights = exports.weights(toys.FIXED)
    pipeline = registry.create_model(toys.FIXED, "micro", weights=weights)
    # The toy's weights are random (AUROC near 0.5), where bf16's rounding may move AUROC by a few
    # thousandths either side of the 0.005 tolerance: the test checks the judgement, not its verdict.
    manifest = export_openvino(pipeline, tmp_path, precision="bf16", weights=weights, calibration_size=8, raise_on_failure=False)
    entry = manifest["graphs"]["detector"]
    assert entry["inference_precision"] == "bf16"
    metric = entry["task_metric"]
    assert metric["metric"].startswith("image AUROC") and metric["tolerance"] == 0.005
    assert metric["held_out"]["samples"] == 96 and "split test" in metric["held_out"]["source"]
    drops = [figure["drop"] for figure in metric["figures"].values()]
    assert drops and metric["passed"] == all(drop <= metric["tolerance"] for drop in drops)
    if metric["passed"]:  # the backend serves what passed, in bf16 ...
        served = registry.create_model(toys.FIXED, "micro", weights=weights, backend="openvino", export_dir=tmp_path)
        assert served._runners["detector"].precision == "bf16"
    else:  # ... and refuses what did not
        with pytest.raises(ExportError):
            registry.create_model(toys.FIXED, "micro", weights=weights, backend="openvino", export_dir=tmp_path)
    # bf16 really ran: it differs from fp32, by little
    spec = pipeline.graph("detector")
    runner = OpenVinoRunner(compile_model(tmp_path / entry["file"], "bf16"), spec, precision="bf16")
    x = spec.example_inputs({"batch": 2}, seed=5)
    want, got = pipeline.run_graph("detector", *x), runner(*x)
    diff = float((want[0] - got[0]).abs().max())
    assert 0 < diff < 0.1 * float(want[0].abs().max())


def test_an_ir_openvino_cannot_compile_is_refused_with_its_message(exports, tmp_path, monkeypatch):
    """An IR OpenVINO cannot compile (seen: ViDT's NNCF int8 IR) is refused with OpenVINO's message in the manifest."""
    import zoo.export.openvino as ov
    from zoo.export.common import ParityError

    real = ov.compile_model

    def failing(path, precision="f32", *args, **kwargs):
        if precision == "int8":
            raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:132:\nCheck 'input_order_shape' failed")
        return real(path, precision, *args, **kwargs)

    monkeypatch.setattr(ov, "compile_model", failing)
    weights = exports.weights(toys.FIXED)
    with pytest.raises(ParityError, match="could not compile"):
        export_openvino(registry.create_model(toys.FIXED, "micro", weights=weights), tmp_path, precision="int8", weights=weights, calibration_size=4)
    entry = json.loads((tmp_path / "export.json").read_text())["graphs"]["detector"]
    assert not entry["parity"]["passed"] and "input_order_shape" in entry["parity"]["checks"][0]["error"]
