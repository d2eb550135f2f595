"""DocDiff predictor: tiling without seams, batching, options, plug-and-play refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo import registry
from zoo.models.docdiff.pipeline import blend_window, tile_starts
from zoo.results import ImageResult


@pytest.fixture(scope="module")
def pipeline():
    return registry.create_model("docdiff", "micro", weights="random")


def test_tile_layout():
    assert tile_starts(100, 128, 96) == [0]
    assert tile_starts(128, 128, 96) == [0]
    assert tile_starts(300, 128, 96) == [0, 96, 172]
    window = blend_window(128, 32)
    assert window.shape == (128, 128) and window.min() > 0 and window.max() == 1.0
    assert window[0, 0].item() == pytest.approx(1 / 32**2) and window[64, 64].item() == 1.0


def test_stitching_is_seamless(pipeline):
    """With graphs that are exact per-pixel maps (CP = identity, residual 0), tiles must
    reassemble the page exactly: the blend weights are normalised everywhere."""
    coarse_identity = lambda image: (image,)  # noqa: E731
    zero_step = lambda noisy, coarse, t, tp: (torch.zeros_like(noisy), torch.zeros_like(noisy))  # noqa: E731
    pipeline.set_runner("coarse", coarse_identity)
    pipeline.set_runner("refine_step", zero_step)
    try:
        page = torch.rand(3, 300, 217)
        (out, coarse), = pipeline.restore([page], steps=2, tile=True, seed=0)
        torch.testing.assert_close(out, page, rtol=0, atol=1e-6)
        torch.testing.assert_close(coarse, page, rtol=0, atol=1e-6)
    finally:
        pipeline.set_runner("coarse", None)
        pipeline.set_runner("refine_step", None)


def test_big_page_holds_one_chunk_of_tiles_at_a_time(pipeline, monkeypatch):
    """A whole page's tiles are never stacked at once (a 6000² page would hold ~3 GB of tiles,
    noise and outputs): every stack is at most `max_batch` tiles, and chunking changes nothing."""
    page = torch.rand(3, 400, 400)  # 4 x 4 = 16 overlapping tiles of 128 px
    reference = pipeline.restore([page], steps=1, tile=True, seed=0)[0][0]
    largest = []
    real_stack = torch.stack

    def recording_stack(tensors, *args, **kwargs):
        largest.append(len(tensors))
        return real_stack(tensors, *args, **kwargs)

    monkeypatch.setattr(pipeline, "max_batch", 3)
    monkeypatch.setattr(torch, "stack", recording_stack)
    chunked = pipeline.restore([page], steps=1, tile=True, seed=0)[0][0]
    monkeypatch.undo()
    assert largest and max(largest) <= 3
    torch.testing.assert_close(chunked, reference, rtol=0, atol=1e-5)


def test_predict_batch_equals_single_and_options(pipeline):
    rng = np.random.default_rng(1)
    pages = [rng.integers(0, 255, (150, 200, 3), dtype=np.uint8), rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)]
    batch = pipeline.predict(pages, steps=2)
    assert all(isinstance(r, ImageResult) for r in batch)
    assert batch[0].images[0].shape == (150, 200, 3) and batch[1].images[1].shape == (40, 56, 3)
    assert batch[0].info["steps"] == 2 and batch[0].info["images"] == ["restored", "coarse"]
    single = pipeline.predict(pages[0], steps=2)
    assert np.abs(single.images[0].astype(int) - batch[0].images[0]).max() <= 1
    assert pipeline.predict(pages[1]).info["steps"] == 4  # micro's default
    whole = pipeline.predict(pages[1], steps=2, tile=False)
    assert whole.images[0].shape == (40, 56, 3) and not whole.info["tile"]
    other_seed = pipeline.predict(pages[1], steps=2, seed=5)
    assert not np.array_equal(other_seed.images[0], batch[1].images[0])
    with pytest.raises(ValueError):
        pipeline.predict(pages[1], steps=101)


def test_refine_plug_and_play(pipeline):
    page = np.full((64, 80, 3), 200, dtype=np.uint8)
    refined = pipeline.refine([page], steps=1)[0]
    assert refined.images[0].shape == (64, 80, 3) and refined.info["images"] == ["refined"]


def test_graph_specs_run(pipeline):
    for spec in pipeline.graph_specs():
        outputs = pipeline.run_graph(spec.name, *spec.example_inputs())
        assert all(o.shape[-2:] == (128, 128) for o in outputs)
    assert pipeline.graph("refine_step").inputs[2].dtype == "int64"
