"""TensorRT: a clear error where it cannot run (here: no `tensorrt`, no GPU), and everything up
to the builder checked against a recording stand-in for the TensorRT Python API."""

from __future__ import annotations

import json
import types

import pytest
import torch
import toys
from typer.testing import CliRunner

from zoo import registry
from zoo.export import tensorrt as trt_mod
from zoo.export.tensorrt import TensorRTUnavailable, build_engine, profile_shapes, require_tensorrt


def _real_tensorrt_usable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_no_tensorrt = pytest.mark.skipif(_real_tensorrt_usable(), reason="TensorRT and a GPU are present")


@needs_no_tensorrt
def test_clear_error_names_what_is_missing():
    with pytest.raises(TensorRTUnavailable) as caught:
        require_tensorrt()
    message = str(caught.value)
    if not torch.cuda.is_available():
        assert "CUDA GPU" in message
    assert "tensorrt" in message and "onnx" in message.lower()


@needs_no_tensorrt
def test_cli_stops_before_any_work(tmp_path):
    from zoo.cli import app

    result = CliRunner().invoke(app, ["export", toys.FIXED, "--format", "tensorrt", "--out", str(tmp_path / "engine")])
    assert result.exit_code == 2
    assert "TensorRT" in result.output and "missing" in result.output
    assert not (tmp_path / "engine").exists()


@needs_no_tensorrt
def test_backend_refuses_clearly(tmp_path):
    with pytest.raises(TensorRTUnavailable):
        registry.create_model(toys.FIXED, "micro", weights="random", backend="tensorrt", export_dir=tmp_path)


def test_profiles_from_card_dims():
    spec = registry.build_pipeline(toys.DIFFUSION, "micro").graph("denoiser")
    assert profile_shapes(spec) == {
        "latent": ((1, 4, 8, 8), (2, 4, 16, 16), (4, 4, 32, 32)),
        "timestep": ((1,), (2,), (4,)),
    }
    fixed = registry.build_pipeline(toys.FIXED, "micro").graph("detector")
    assert profile_shapes(fixed) == {"image": ((1, 3, 32, 32), (2, 3, 32, 32), (8, 3, 32, 32))}


class FakeTensorRT:
    """Records the calls build_engine makes; shaped like the TensorRT 10/11 Python API."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                fake.calls.append(("logger", level))

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

        class Cache:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def serialize(self) -> bytes:
                return b"cache:" + self.data

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", pool, size))

            def create_timing_cache(self, data):
                return Cache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                fake.calls.append(("timing_cache", cache.data, ignore_mismatch))

            def get_timing_cache(self):
                return self.cache

            def add_optimization_profile(self, profile):
                fake.calls.append(("add_profile",))

        class Parser:
            def __init__(self, network, logger):
                self.num_errors = 0

            def parse_from_file(self, path):
                fake.calls.append(("parse", path))
                return True

        class Builder:
            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags):
                fake.calls.append(("network_flags", flags))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build",))
                return b"PLAN"

        self.module = types.SimpleNamespace(
            Logger=Logger, Builder=Builder, OnnxParser=Parser, __version__="fake-10.0",
            NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=5),
            MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
        )


def test_build_engine_calls(tmp_path, exports):
    out, manifest, _ = exports.get(toys.DIFFUSION, "onnx-fp16")
    spec = registry.build_pipeline(toys.DIFFUSION, "micro").graph("denoiser")
    fake = FakeTensorRT()
    plan = tmp_path / "denoiser.plan"
    info = build_engine(out / manifest["graphs"]["denoiser"]["file"], plan, spec, workspace=1 << 20, trt=fake.module)
    calls = fake.calls
    assert ("network_flags", 1 << 5) in calls  # strongly typed: precision from the fp16 ONNX, no FP16 flag
    assert ("set_shape", "latent", (1, 4, 8, 8), (2, 4, 16, 16), (4, 4, 32, 32)) in calls
    assert ("set_shape", "timestep", (1,), (2,), (4,)) in calls
    assert ("workspace", "workspace", 1 << 20) in calls and ("timing_cache", b"", False) in calls
    assert calls.index(("add_profile",)) < calls.index(("build",))
    assert plan.read_bytes() == b"PLAN"
    assert (tmp_path / "timing.cache").read_bytes() == b"cache:"
    side = json.loads((tmp_path / "denoiser.plan.json").read_text())
    assert side == info and side["strongly_typed"] and side["profile"]["latent"]["max"] == [4, 4, 32, 32]
    # a second build starts from the saved timing cache
    build_engine(out / manifest["graphs"]["denoiser"]["file"], plan, spec, trt=fake.module)
    assert ("timing_cache", b"cache:", False) in fake.calls


def test_parse_errors_are_reported(tmp_path, exports):
    out, manifest, _ = exports.get(toys.FIXED, "onnx")
    fake = FakeTensorRT()

    class BadParser:
        num_errors = 1

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            return False

        def get_error(self, i):
            return "unsupported op Foo"

    fake.module.OnnxParser = BadParser
    spec = registry.build_pipeline(toys.FIXED, "micro").graph("detector")
    with pytest.raises(trt_mod.ExportError, match="unsupported op Foo"):
        build_engine(out / "detector.onnx", tmp_path / "d.plan", spec, trt=fake.module)
