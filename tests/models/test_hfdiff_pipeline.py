"""HF-Diff predictor: tiling with overlap and blending (no seams, bounded memory), samplers, result type."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo import registry
from zoo.results import ImageResult


@pytest.fixture(scope="module")
def pipe():
    return registry.create_model("hfdiff", "micro", weights="random")


def _nearest(lr, noise):
    return (F.interpolate(lr, scale_factor=4.0, mode="nearest"),)


def test_tiles_blend_back_to_the_whole_image(pipe):
    """A translation-equivariant stand-in for the `sr` graph (nearest x4): the tiled, blended result
    equals the whole-image result exactly, so tiling itself adds nothing (no seams)."""
    pipe.set_runner("sr", _nearest)
    try:
        image = torch.rand(3, 70, 90)
        out, info = pipe.upscale(image)
        assert info["tiles"] == 3 * 4 and out.shape == (280, 360, 3)
        want = (F.interpolate(image[None], scale_factor=4.0, mode="nearest")[0].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(out.astype(np.float64) - want).max() <= 1.0
    finally:
        pipe.set_runner("sr", None)


def test_disagreeing_tiles_leave_no_seam_and_memory_is_one_band(pipe):
    """Each tile off by its own constant (the worst case of tiles that disagree): the ramps spread
    the difference, so no step between neighbouring output columns or rows exceeds a fraction of it;
    the float accumulator stays one band of 4 x tile rows whatever the image height."""
    offsets = iter(np.random.default_rng(0).uniform(0.0, 0.4, 400))

    def shifted(lr, noise):
        return (torch.stack([F.interpolate(t[None], scale_factor=4.0, mode="nearest")[0] * 0 + 0.3 + next(offsets) for t in lr]),)

    pipe.set_runner("sr", shifted)
    try:
        out, info = pipe.upscale(torch.rand(3, 40, 160))
        flat = out.astype(np.float64) / 255.0
        jumps = max(np.abs(np.diff(flat, axis=1)).max(), np.abs(np.diff(flat, axis=0)).max())
        spread = flat.max() - flat.min()
        assert spread > 0.02 and jumps < 0.25 * spread
        _, tall = pipe.upscale(torch.rand(3, 200, 160))
        assert tall["accumulator_elements"] == info["accumulator_elements"] == 4 * (32 * 4) * (160 * 4)
    finally:
        pipe.set_runner("sr", None)


def test_predict_both_samplers(pipe):
    lr = np.random.default_rng(0).integers(0, 255, (20, 28, 3), dtype=np.uint8)
    one = pipe.predict(lr, seed=3)
    assert isinstance(one, ImageResult) and one.images[0].shape == (80, 112, 3)
    assert one.info["sampler"] == "one-step" and one.info["network_calls"] == 1
    assert np.array_equal(one.images[0], pipe.predict(lr, seed=3).images[0])  # a seed reproduces
    teacher = pipe.predict(lr, seed=3, sampler="teacher")
    assert teacher.images[0].shape == (80, 112, 3) and teacher.info["network_calls"] == 15
    with pytest.raises(ValueError):
        pipe.predict(lr, sampler="ten-step")
