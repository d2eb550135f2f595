"""The torch backend's CUDA fast path. CUDA graph capture needs a GPU and is skipped here with
that reason; the shape cache and the autocast runner run on CPU."""

from __future__ import annotations

import pytest
import torch
import toys

from zoo import registry
from zoo.export.common import ExportError
from zoo.export.cuda import AutocastRunner, ShapeCache, attach_torch_cuda

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU; none on this machine")


def test_shape_cache_builds_once_per_signature():
    built = []

    def build(inputs):
        built.append(tuple(x.shape for x in inputs))
        return lambda *xs: tuple(x * 2 for x in xs)

    cache = ShapeCache(build, max_entries=2)
    a, b, c = torch.ones(1, 3), torch.ones(2, 3), torch.ones(3, 3)
    assert torch.equal(cache(a)[0], a * 2)
    cache(a)
    cache(b)
    assert cache.builds == 2
    cache(a)  # a becomes the most recent, so c evicts b
    cache(c)
    assert list(cache.entries) == [(((1, 3), torch.float32),), (((3, 3), torch.float32),)]
    cache(b)
    assert cache.builds == 4 and built[-1] == ((2, 3),)
    cache(a.long())  # dtype is part of the signature
    assert cache.builds == 5


def test_autocast_runner_returns_fp32_close_to_eager():
    pipeline = registry.create_model(toys.FIXED, "micro", weights="random")
    spec = pipeline.graph("detector")
    inputs = spec.example_inputs()
    runner = AutocastRunner(spec.module, torch.device("cpu"), torch.bfloat16)
    want = pipeline.run_graph("detector", *inputs)
    got = runner(*inputs)
    for w, g in zip(want, got):
        assert g.dtype == torch.float32 and g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=5e-2, atol=5e-2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_attach_without_gpu_is_a_clear_error():
    pipeline = registry.create_model(toys.FIXED, "micro", weights="random")
    with pytest.raises(ExportError, match="CUDA GPU"):
        attach_torch_cuda(pipeline)
    with pytest.raises(ValueError, match="mode"):
        attach_torch_cuda(pipeline, mode="warp")


@needs_cuda
def test_cuda_graphs_match_eager():
    pipeline = registry.create_model(toys.DIFFUSION, "micro", weights="random")
    spec = pipeline.graph("denoiser")
    inputs = spec.example_inputs()
    want = pipeline.run_graph("denoiser", *inputs)
    attach_torch_cuda(pipeline, mode="cudagraphs")
    for _ in range(2):  # capture, then replay
        got = pipeline.run_graph("denoiser", *inputs)
        torch.testing.assert_close(got[0].cpu(), want[0].cpu(), rtol=2e-2, atol=2e-2)
    other = spec.example_inputs({"batch": 3, "height": 8, "width": 8})
    assert pipeline.run_graph("denoiser", *other)[0].shape == (3, 4, 8, 8)
    assert pipeline._runners["denoiser"].builds == 2


def test_attach_rejects_unknown_keywords():
    pipeline = registry.create_model(toys.FIXED, "micro", weights="random")
    with pytest.raises(TypeError, match="export_dir"):
        attach_torch_cuda(pipeline, export_dir="exports")  # an onnxruntime option, never silently dropped
