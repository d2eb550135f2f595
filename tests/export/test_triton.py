"""Triton model repositories for every registered model, each config.pbtxt parsed with
Triton's own ModelConfig protobuf (from tritonclient)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import toys
from google.protobuf import text_format

from zoo import registry
from zoo.export.common import ExportError
from zoo.export.triton import config_text, model_config_pb2, parse_config, repository_from_export, validate_config

NAMES = toys.all_names()


@pytest.fixture(scope="module")
def repos(exports, tmp_path_factory):
    """Each model's checked ONNX export laid out as a repository (copied, the export stays)."""
    root = tmp_path_factory.mktemp("triton")
    made = {}
    for name in NAMES:
        out, manifest, weights = exports.get(name, "onnx")
        pipeline = registry.build_pipeline(name, "micro")
        made[name] = (root / name, repository_from_export(pipeline, manifest, out, root / name), weights)
    return made


@pytest.mark.parametrize("name", NAMES)
def test_configs_parse_with_model_config(name, repos):
    repo, manifest, _ = repos[name]
    pipeline = registry.build_pipeline(name, "micro")
    assert manifest["format"] == "triton" and manifest["triton"]["models"] == [s.name for s in pipeline.graph_specs()]
    for spec in pipeline.graph_specs():
        path = repo / spec.name / "config.pbtxt"
        config = validate_config(path, spec)
        assert type(config).__name__ == "ModelConfig"
        assert config.name == spec.name and config.platform == "onnxruntime_onnx"
        assert (repo / spec.name / "1" / "model.onnx").is_file()
        assert config.max_batch_size == spec.dims["batch"][2]
        for tensor, declared in zip(config.input, spec.inputs):
            want = [d if isinstance(d, int) else -1 for d in declared.shape[1:]] or [1]
            assert list(tensor.dims) == want
            assert tensor.HasField("reshape") == (len(declared.shape) == 1)
        types = {t.name: t.data_type for t in (*config.input, *config.output)}
        for declared in (*spec.inputs, *spec.outputs):
            enum = "TYPE_INT64" if declared.dtype == "int64" else "TYPE_FP32"
            assert types[declared.name] == model_config_pb2().DataType.Value(enum)
        batching = config.dynamic_batching
        assert list(batching.preferred_batch_size) == sorted({max(2, spec.dims["batch"][1]), spec.dims["batch"][2]})
        assert batching.max_queue_delay_microseconds == 100
        assert len(config.instance_group) == 1 and config.instance_group[0].count == 1


def test_score_is_reshaped_batch_only(repos):
    repo, _, _ = repos[toys.FIXED]
    config = parse_config((repo / "detector" / "config.pbtxt").read_text())
    score = next(o for o in config.output if o.name == "score")
    assert list(score.dims) == [1] and list(score.reshape.shape) == []
    assert list(next(o for o in config.output if o.name == "anomaly_map").dims) == [1, 32, 32]


def test_dynamic_sizes_are_minus_one(repos):
    repo, manifest, _ = repos[toys.DIFFUSION]
    config = parse_config((repo / "denoiser" / "config.pbtxt").read_text())
    assert list(config.input[0].dims) == [4, -1, -1] and config.max_batch_size == 4
    assert "pipeline" in manifest["triton"]  # several graphs: how to serve the loop is recorded


def test_repository_serves_onnxruntime_backend(repos):
    """The repository doubles as an export dir: same predictions as torch."""
    repo, _, weights = repos[toys.FIXED]
    images = [np.full((20, 30, 3), 90, np.uint8), np.zeros((32, 32, 3), np.uint8)]
    want = registry.create_model(toys.FIXED, "micro", weights=weights).predict(images)
    got = registry.create_model(toys.FIXED, "micro", weights=weights, backend="onnxruntime", export_dir=repo).predict(images)
    for a, b in zip(want, got):
        assert b.score == pytest.approx(a.score, rel=1e-3, abs=1e-4)


def test_tensorrt_plan_config():
    spec = registry.build_pipeline(toys.FIXED, "micro").graph("detector")
    config = parse_config(config_text(spec, "tensorrt_plan"))
    assert config.platform == "tensorrt_plan" and config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    with pytest.raises(ValueError, match="GPU"):
        config_text(spec, "tensorrt_plan", instance_kind="cpu")
    cpu = parse_config(config_text(spec, instance_kind="cpu", instances=2, max_queue_delay_us=500))
    assert cpu.instance_group[0].kind == cpu.instance_group[0].KIND_CPU and cpu.instance_group[0].count == 2
    assert cpu.dynamic_batching.max_queue_delay_microseconds == 500


def test_unbatched_graph_has_no_dynamic_batching():
    from zoo.pipeline import GraphSpec, TensorSpec

    spec = GraphSpec("plain", torch.nn.Identity(), (TensorSpec("x", (3, "n")),), (TensorSpec("y", (3, "n")),), dims={"n": (1, 4, 8)})
    config = parse_config(config_text(spec))
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [3, -1]
    assert not config.HasField("dynamic_batching")


def test_validation_catches_mistakes(repos, tmp_path):
    repo, _, _ = repos[toys.FIXED]
    text = (repo / "detector" / "config.pbtxt").read_text()
    with pytest.raises(text_format.ParseError):
        parse_config(text + "\nmax_batch: 3\n")  # not a ModelConfig field
    wrong = tmp_path / "other" / "config.pbtxt"
    wrong.parent.mkdir()
    wrong.write_text(text)
    with pytest.raises(ExportError, match="differs from its folder") as caught:
        validate_config(wrong)
    assert "model.onnx missing" in str(caught.value)
    too_big = text.replace("preferred_batch_size: [ 2, 8 ]", "preferred_batch_size: [ 2, 16 ]")
    (repo / "detector" / "config.pbtxt").write_text(too_big)
    try:
        with pytest.raises(ExportError, match="above max_batch_size"):
            validate_config(repo / "detector" / "config.pbtxt")
    finally:
        (repo / "detector" / "config.pbtxt").write_text(text)


def test_input_constraints_travel_as_model_parameters():
    """DocDiff's multiple-of-8 sides and timestep range: the same parameters `zoo serve` reports."""
    import json

    pipeline = registry.build_pipeline("docdiff", "micro")
    coarse = parse_config(config_text(pipeline.graph("coarse")))
    assert json.loads(coarse.parameters["zoo_multiple_of"].string_value) == {"image": [1, 8, 8]}  # dims without the batch
    step = parse_config(config_text(pipeline.graph("refine_step")))
    assert json.loads(step.parameters["zoo_valid_range"].string_value) == {"timestep": [0, 99], "prev_timestep": [-1, 99]}
    plain = parse_config(config_text(registry.build_pipeline(toys.FIXED, "micro").graph("detector")))
    assert not plain.parameters  # nothing beyond dims to say
