"""The onnxruntime backend: same predictions as the torch backend for every registered model,
reached through the `zoo.backends` entry point, and clear refusals of unusable exports."""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np
import pytest
import torch
import toys
from registry_inputs import example_inputs

from zoo import registry
from zoo.export.common import FP32_TOLERANCE, ExportError, compare, dims_from_inputs
from zoo.export.fp16 import fp16_tolerance
from zoo.export.runtime import OnnxRuntimeRunner, available_cpus, session_options

NAMES = toys.all_names()


def _close(a: Any, b: Any, path: str = "") -> None:
    """Result JSON documents equal, numbers within fp32 parity tolerance."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-3, abs=1e-4), path
    else:
        assert a == b, path


@pytest.mark.parametrize("fmt", ["onnx", "onnx-fp16"])
@pytest.mark.parametrize("name", NAMES)
def test_graphs_match_torch_backend(name, fmt, exports):
    out, _, weights = exports.get(name, fmt)
    torch_pipe = registry.create_model(name, "micro", weights=weights)
    ort_pipe = registry.create_model(name, "micro", weights=weights, backend="onnxruntime", export_dir=out)
    assert ort_pipe.backend == "onnxruntime"
    for spec in torch_pipe.graph_specs():
        tol = FP32_TOLERANCE if fmt == "onnx" else fp16_tolerance(spec)
        assert isinstance(ort_pipe._runners[spec.name], OnnxRuntimeRunner)
        dims = {k: v[0] for k, v in spec.dims.items()}  # the smallest sizes: yet another shape
        inputs = spec.example_inputs(dims, seed=7)
        for want, got in zip(torch_pipe.run_graph(spec.name, *inputs), ort_pipe.run_graph(spec.name, *inputs)):
            assert got.dtype == want.dtype and got.shape == want.shape
            figures = compare(want.numpy(), got.numpy(), tol)
            assert figures["passed"], figures


@pytest.mark.parametrize("name", [n for n in NAMES if n != toys.DIFFUSION])
def test_image_predictions_match(name, exports):
    """predict() on images (or seeds, for a generator): pre- and postprocessing unchanged, results equal."""
    card = registry.get_card(name)
    rng = np.random.default_rng(0)
    images = example_inputs(card, rng, count=3)  # seeds for a generator: the sampling loop over the exported graphs
    out, _, weights = exports.get(name, "onnx")
    want = registry.create_model(name, "micro", weights=weights).predict(images)
    got = registry.create_model(name, "micro", weights=weights, backend="onnxruntime", export_dir=out).predict(images)
    for a, b in zip(want, got):
        if hasattr(a, "images"):
            # generated/restored images: fp32 differences may round a pixel to the next uint8
            for x, y in zip(a.images, b.images):
                assert np.abs(x.astype(int) - y.astype(int)).max() <= 1
            a_doc, b_doc = a.to_json(include_images=False), b.to_json(include_images=False)
            a_doc.pop("timings", None), b_doc.pop("timings", None)  # wall-clock, not a result
            _close(a_doc, b_doc)
        else:
            _close(a.to_json(), b.to_json())
        if hasattr(a, "map"):
            np.testing.assert_allclose(b.map, a.map, rtol=1e-3, atol=1e-4)


def test_python_loop_over_onnx_graphs(exports):
    """A diffusion-like sampler: the loop stays in Python, each step an ONNX Runtime call."""
    out, _, weights = exports.get(toys.DIFFUSION, "onnx")
    want = registry.create_model(toys.DIFFUSION, "micro", weights=weights).predict([1, 2])
    got = registry.create_model(toys.DIFFUSION, "micro", weights=weights, backend="onnxruntime", export_dir=out).predict([1, 2])
    for a, b in zip(want, got):
        assert np.abs(a.images[0].astype(int) - b.images[0].astype(int)).max() <= 1  # uint8 rounding


def test_entry_points_registered():
    backends = registry.available_backends()
    assert backends["onnxruntime"].value == "zoo.export.runtime:attach_onnxruntime"
    assert backends["tensorrt"].value == "zoo.export.tensorrt:attach_tensorrt"


def test_refuses_other_weights(exports):
    out, _, _ = exports.get(toys.FIXED, "onnx")
    with pytest.raises(ExportError, match="other weights"):
        registry.create_model(toys.FIXED, "micro", weights="random", backend="onnxruntime", export_dir=out)
    # opting out runs, and then differs from this pipeline's own torch graphs
    pipe = registry.create_model(toys.FIXED, "micro", weights="random", backend="onnxruntime", export_dir=out, check_weights=False)
    assert pipe.backend == "onnxruntime"


def test_refuses_bad_exports(exports, tmp_path):
    out, manifest, weights = exports.get(toys.FIXED, "onnx")
    with pytest.raises(ExportError, match="export_dir"):
        registry.create_model(toys.FIXED, "micro", weights=weights, backend="onnxruntime")
    with pytest.raises(ExportError, match="export.json"):
        registry.create_model(toys.FIXED, "micro", weights=weights, backend="onnxruntime", export_dir=tmp_path)
    # another model's export
    other, _, _ = exports.get(toys.DIFFUSION, "onnx")
    with pytest.raises(ExportError, match=toys.DIFFUSION):
        registry.create_model(toys.FIXED, "micro", weights=weights, backend="onnxruntime", export_dir=other)
    # an export whose parity check failed
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    bad = json.loads((broken / "export.json").read_text())
    bad["graphs"]["detector"]["parity"]["passed"] = False
    (broken / "export.json").write_text(json.dumps(bad))
    with pytest.raises(ExportError, match="failed their parity check"):
        registry.create_model(toys.FIXED, "micro", weights=weights, backend="onnxruntime", export_dir=broken)
    # a missing file
    (broken / "export.json").write_text(json.dumps(manifest, default=str))
    (broken / "detector.onnx").unlink()
    with pytest.raises(ExportError, match="missing"):
        registry.create_model(toys.FIXED, "micro", weights=weights, backend="onnxruntime", export_dir=broken)


def test_unknown_backend_lists_available():
    with pytest.raises(ValueError, match="onnxruntime"):
        registry.create_model(toys.FIXED, "micro", weights="random", backend="nope")


def test_session_threads_and_dims():
    options = session_options()
    assert options.intra_op_num_threads == available_cpus() >= 1
    assert options.inter_op_num_threads == 1
    assert session_options(threads=1).intra_op_num_threads == 1
    spec = registry.build_pipeline(toys.DIFFUSION, "micro").graph("denoiser")
    sizes = dims_from_inputs(spec, (torch.zeros(3, 4, 8, 12), torch.zeros(3, dtype=torch.int64)))
    assert sizes == {"batch": 3, "height": 8, "width": 12}
