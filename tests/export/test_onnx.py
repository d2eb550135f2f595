"""ONNX export and parity for every registered model's micro variant (registry-driven), and
the pieces the check is made of, against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import toys

from zoo import registry
from zoo.export.common import FP32_TOLERANCE, ParityError, Tolerance, check_dims, compare, example_dims, read_manifest
from zoo.export.onnx import check_parity, export_onnx, parity_message
from zoo.pipeline import GraphSpec, TensorSpec

NAMES = toys.all_names()


@pytest.mark.parametrize("name", NAMES)
def test_every_model_exports_with_parity(name, exports):
    out, manifest, _ = exports.get(name, "onnx")
    pipeline = registry.build_pipeline(name, "micro")
    specs = pipeline.graph_specs()
    assert read_manifest(out) == json.loads(json.dumps(manifest, default=str))
    assert manifest["model"] == name and manifest["variant"] == "micro" and manifest["format"] == "onnx"
    assert set(manifest["graphs"]) == {s.name for s in specs} == set(registry.get_card(name).graphs)
    for spec in specs:
        entry = manifest["graphs"][spec.name]
        assert (out / entry["file"]).is_file()
        assert entry["exporter"] in ("torch.onnx.export(dynamo=True)", "torch.onnx.export(dynamo=False)")
        assert entry["opset"] == (18 if entry["dynamo"] else 17)
        assert [i["name"] for i in entry["inputs"]] == [t.name for t in spec.inputs]
        assert [o["name"] for o in entry["outputs"]] == [t.name for t in spec.outputs]
        # declared dynamic dims stay dynamic in the file, fixed sizes stay fixed
        for declared, exported in zip(spec.inputs, entry["inputs"]):
            for axis, size in enumerate(declared.shape):
                if isinstance(size, int):
                    assert exported["shape"][axis] == size
                else:
                    assert isinstance(exported["shape"][axis], str), f"{spec.name}.{declared.name} axis {axis} baked in"
        parity = entry["parity"]
        assert parity["passed"], parity_message(spec.name, parity)
        assert parity["tolerance"] == {"abs": 1e-4, "rel": 1e-3}
        assert entry["example_dims"].get("batch", 2) >= 2
        sizes = [c["dims"] for c in parity["checks"]]
        if spec.dims:  # checked at the export sizes and at other sizes
            assert len(sizes) == 2 and sizes[0] != sizes[1]
            assert sizes[1]["batch"] != entry["example_dims"]["batch"]
        for check in parity["checks"]:
            for figures in check["outputs"].values():
                assert figures["max_abs"] <= 1e-4 or figures["max_rel"] <= 1e-3
                # relative to the outputs' own scale too, so tiny outputs cannot pass vacuously
                assert figures["ref_max_abs"] == 0 or figures["rel_l2"] <= 1e-4
        if any(isinstance(d, int) for t in spec.inputs for d in t.shape[1:]) and spec.note:
            assert entry["note"] == spec.note and entry["fixed"]


def test_dynamic_height_width_checked_at_other_sizes(exports):
    _, manifest, _ = exports.get(toys.DIFFUSION, "onnx")
    checks = manifest["graphs"]["denoiser"]["parity"]["checks"]
    assert [c["dims"] for c in checks] == [{"batch": 2, "height": 16, "width": 16}, {"batch": 3, "height": 8, "width": 8}]
    assert manifest["graphs"]["denoiser"]["inputs"][1] == {"name": "timestep", "shape": ["batch"], "dtype": "int64"}


def test_efficientad_fixes_height_width(exports):
    if "efficientad" not in registry._REGISTRY:
        pytest.skip("efficientad is not registered")
    _, manifest, _ = exports.get("efficientad", "onnx")
    entry = manifest["graphs"]["efficientad"]
    size = registry.build_pipeline("efficientad", "micro").config.image_size
    assert entry["inputs"][0]["shape"] == ["batch", 3, size, size]
    assert "fixed" in entry["note"].lower() or "H x W" in entry["note"]


def _spec(dims):
    return GraphSpec("g", torch.nn.Identity(), (TensorSpec("x", ("batch", 3, "height", 8)),), (TensorSpec("y", ("batch", 3, "height", 8)),), dims=dims)


def test_example_and_check_sizes():
    # batch opt 1 is raised to 2 (batch-1 examples bake the batch into reshapes)
    assert example_dims(_spec({"batch": (1, 1, 4), "height": (8, 16, 32)})) == {"batch": 2, "height": 16}
    assert check_dims(_spec({"batch": (1, 2, 4), "height": (8, 16, 32)})) == [{"batch": 2, "height": 16}, {"batch": 3, "height": 8}]
    # batch at its max: the other batch is the min; height at its min: the other is the max
    assert check_dims(_spec({"batch": (1, 2, 2), "height": (16, 16, 32)})) == [{"batch": 2, "height": 16}, {"batch": 1, "height": 32}]
    assert check_dims(_spec({})) == [{}]


def test_compare_figures():
    ref = np.array([1.0, 100.0, 0.0, -2.0], dtype=np.float32)
    got = np.array([1.00005, 100.05, 0.0002, -2.0], dtype=np.float32)
    figures = compare(ref, got, FP32_TOLERANCE)
    # 5e-5 abs passes; 0.05 on 100 is 5e-4 rel, passes; 2e-4 on 0 fails both
    assert figures["mismatched"] == 1 and not figures["passed"]
    assert figures["worst"]["index"] == [2]
    assert figures["max_abs"] == pytest.approx(0.05, rel=1e-3)
    assert compare(ref, got, Tolerance(abs=0.1, rel=0))["passed"] is True
    assert compare(ref, got, Tolerance(abs=0, rel=1e-3))["mismatched"] == 1  # only the 0 -> 2e-4 element
    assert compare(np.array([1, 2]), np.array([1, 3]), Tolerance(abs=10, rel=10))["passed"] is False  # ints exact
    assert "shape" in compare(np.zeros((2, 3)), np.zeros((3, 2)), FP32_TOLERANCE)["error"]
    assert compare(np.array([3.0, 4.0]), np.array([3.0, 4.5]), FP32_TOLERANCE)["rel_l2"] == pytest.approx(0.1)
    nan = compare(np.ones(2, np.float32), np.array([1.0, np.nan], np.float32), FP32_TOLERANCE)
    assert nan["mismatched"] == 1


def test_parity_failure_is_reported(tmp_path):
    """A graph that is exported fine but wrong (perturbed weights stand in for a bad
    exporter): check_parity fails with figures that name the output and sizes."""
    from zoo.export.onnx import export_graph

    pipeline = registry.create_model(toys.FIXED, "micro", weights="random")
    spec = pipeline.graph("detector")
    export_graph(spec, tmp_path / "detector.onnx", "torchscript")
    with torch.no_grad():
        spec.module.teacher[0].bias.add_(0.5)
    parity = check_parity(spec, tmp_path / "detector.onnx")
    assert not parity["passed"]
    message = parity_message("detector", parity)
    assert "anomaly_map: max abs" in message and "{'batch': 3}" in message


def test_baked_batch_falls_back_then_fails(tmp_path):
    """torch.export refuses the batch-dependent branch, so 'auto' falls back to TorchScript,
    which bakes batch 2 in; the check at batch 3 catches it and export.json keeps the figures."""
    try:
        name = toys.register_baked()
        pipeline = registry.create_model(name, "micro", weights="random")
        with pytest.raises(ParityError) as caught:
            export_onnx(pipeline, tmp_path)
        assert "baked" in str(caught.value) and "{'batch': 3}" in str(caught.value)
        entry = read_manifest(tmp_path)["graphs"]["baked"]
        assert entry["dynamo"] is False and entry["fallback_from"][0]["exporter"] == "dynamo"
        assert [c["passed"] for c in entry["parity"]["checks"]] == [True, False]
    finally:
        registry._REGISTRY.pop(toys.BAKED, None)


@pytest.mark.parametrize("exporter,opset", [("torchscript", 17)])
def test_explicit_exporter_is_recorded(exporter, opset, tmp_path):
    pipeline = registry.create_model(toys.FIXED, "micro", weights="random")
    manifest = export_onnx(pipeline, tmp_path, exporter=exporter)
    entry = manifest["graphs"]["detector"]
    assert entry["exporter"] == "torch.onnx.export(dynamo=False)" and entry["opset"] == opset
    assert "fallback_from" not in entry and entry["parity"]["passed"]
