"""The autoencoder-kl card: variants, graphs with derived output sizes, predictions of any size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo import registry
from zoo.diffusion.autoencoder import SD_VAE_PARAMS, preset_config
from zoo.pipeline import TensorSpec
from zoo.results import ImageResult


def test_card_variants_and_stage():
    card = registry.get_card("autoencoder-kl")
    assert card.task == "latent-autoencoder" and card.graphs == ("encode", "decode") and card.result_type == "ImageResult"
    assert set(card.variants) == {"micro", "micro-f4", "micro-f8", "sd-f8"} and card.default_variant == "micro-f4"
    assert card.variants["micro"].config == card.variants["micro-f4"].config == preset_config("micro-f4")
    assert registry.parameter_counts("autoencoder-kl", "sd-f8") == {"total": SD_VAE_PARAMS, "vae": SD_VAE_PARAMS}
    assert [i.kind for i in card.inputs] == ["image"]
    stage = card.train_stages["autoencoder"]
    assert stage.variant_defaults["micro-f4"]["lr"] == 1e-3


@pytest.mark.parametrize("variant, size", [("micro-f4", 32), ("micro-f8", 64)])
def test_graph_output_sizes_follow_the_factor(variant, size):
    pipeline = registry.build_pipeline("autoencoder-kl", variant)
    f = pipeline.config.factor
    encode, decode = pipeline.graph("encode"), pipeline.graph("decode")
    (image,) = encode.example_inputs({"height": size, "width": 2 * size})
    with torch.no_grad():
        (latents,) = pipeline.run_graph("encode", image)
    assert tuple(latents.shape) == encode.outputs[0].concrete_shape({"batch": 2, "height": size, "width": 2 * size})
    assert latents.shape[-2:] == (size // f, 2 * size // f)
    (decoded,) = pipeline.run_graph("decode", latents)
    assert tuple(decoded.shape) == decode.outputs[0].concrete_shape(
        {"batch": 2, "latent_height": size // f, "latent_width": 2 * size // f})


def test_derived_dim_names():
    spec = TensorSpec("x", ("batch", 4, "height/8", "width*2"))
    assert spec.concrete_shape({"batch": 3, "height": 64, "width": 5}) == (3, 4, 8, 10)
    with pytest.raises(KeyError):
        spec.concrete_shape({"batch": 3})


def test_predict_pads_to_the_factor_and_crops_back():
    model = registry.create_model("autoencoder-kl", "micro-f4", weights="random")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (30, 45, 3), dtype=np.uint8), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)]
    results = model.predict(images)
    assert all(isinstance(r, ImageResult) for r in results)
    assert results[0].images[0].shape == (30, 45, 3) and results[0].info["latent_shape"] == [4, 8, 12]
    assert results[1].info["latent_shape"] == [4, 8, 8] and np.isfinite(results[1].info["psnr"])
    resized = model.predict(images[0], size=16)
    assert resized.images[0].shape == (16, 16, 3) and resized.info["latent_shape"] == [4, 4, 4]


def test_encode_decode_tensors_in_chunks():
    model = registry.create_model("autoencoder-kl", "micro-f4", weights="random")
    model.max_batch = 2
    images = torch.rand(5, 3, 32, 32)
    latents = model.encode(images)
    assert latents.shape == (5, 4, 8, 8)
    torch.testing.assert_close(latents, model.model.encode(images).detach(), rtol=0, atol=1e-5)
    assert model.decode(latents).shape == (5, 3, 32, 32)
