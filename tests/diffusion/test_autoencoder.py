"""Latent autoencoder: configs and parameter counts, the loss terms against hand values, the codec's
standardisation, the graphs against diffusers' own calls, and a short training run whose loss falls."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from training_loops import fit_one_batch

from zoo.diffusion.autoencoder import (
    SD_VAE_PARAMS,
    AutoencoderConfig,
    AutoencoderTrainable,
    AutoencoderTrainConfig,
    DecoderGraph,
    EncoderGraph,
    LatentCodec,
    autoencoder_loss,
    build_autoencoder,
    build_autoencoder_task,
    count_parameters,
    kl_divergence,
    preset_config,
)
from zoo.diffusion.perceptual import FeatureDistance, RandomConvFeatures, StageFeatures, build_perceptual


def _codec(name: str = "micro-f4", seed: int = 0) -> LatentCodec:
    torch.manual_seed(seed)
    return LatentCodec.from_config(preset_config(name)).eval()


# -- configs -------------------------------------------------------------------------------------
def test_parameter_counts():
    assert count_parameters(preset_config("sd-f8")) == SD_VAE_PARAMS == 83_653_863
    assert count_parameters(preset_config("micro-f4")) == 954_567
    assert count_parameters(preset_config("micro-f8")) == 1_250_759


@pytest.mark.parametrize("name, size, latent", [("micro-f4", 32, (4, 8, 8)), ("micro-f8", 64, (4, 8, 8))])
def test_latent_shapes(name, size, latent):
    codec = _codec(name)
    assert codec.factor == preset_config(name).factor == size // latent[1]
    with torch.no_grad():
        z = codec.encode(torch.rand(3, 3, size, size))
        assert z.shape == (3, *latent)
        assert codec.decode(z).shape == (3, 3, size, size)


def test_sd_config_is_stable_diffusions():
    config = preset_config("sd-f8").diffusers_config()
    assert config["block_out_channels"] == (128, 256, 512, 512) and config["layers_per_block"] == 2
    assert config["latent_channels"] == 4 and config["scaling_factor"] == 0.18215 and config["norm_num_groups"] == 32
    assert AutoencoderConfig.from_diffusers(config) == preset_config("sd-f8")


def test_config_from_dict_names_unknown_fields():
    assert AutoencoderConfig.from_dict({"block_out_channels": [8, 16]}).block_out_channels == (8, 16)
    with pytest.raises(ValueError, match="channels_typo"):
        AutoencoderConfig.from_dict({"channels_typo": 3})


# -- loss ----------------------------------------------------------------------------------------
def test_kl_divergence_hand_values():
    # KL(N(1, 1) || N(0, 1)) = 0.5 per element; KL(N(0, 2) || N(0, 1)) = 0.5 (2 - 1 - ln 2)
    mean, logvar = torch.ones(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)
    torch.testing.assert_close(kl_divergence(mean, logvar), torch.full((2,), 0.5 * 36))
    kl = kl_divergence(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), math.log(2.0)))
    assert kl.item() == pytest.approx(0.5 * (2 - 1 - math.log(2.0)), rel=1e-6)


def test_kl_matches_diffusers_posterior():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    torch.manual_seed(0)
    moments = torch.randn(3, 8, 4, 4)
    posterior = DiagonalGaussianDistribution(moments)
    torch.testing.assert_close(kl_divergence(posterior.mean, posterior.logvar), posterior.kl())


def test_loss_hand_value_without_perceptual():
    images = torch.zeros(1, 3, 2, 2)
    recon = torch.full((1, 3, 2, 2), 0.5)  # |x - x_hat| = 0.5 everywhere
    mean, logvar = torch.ones(1, 4, 1, 1), torch.zeros(1, 4, 1, 1)  # KL = 0.5 x 4 = 2
    out = autoencoder_loss(images, recon, mean, logvar, None, kl_weight=0.1)
    assert out["l1"].item() == pytest.approx(0.5)
    assert out["kl"].item() == pytest.approx(2.0)
    # LDM: sum(|x - x_hat|) / B + w_KL * sum(KL) / B, divided by the 12 pixel values
    assert out["loss"].item() == pytest.approx((6.0 + 0.1 * 2.0) / 12)


class _Identity(nn.Module):
    def forward(self, images):
        return [images]


def test_feature_distance_hand_value_and_frozen():
    pred = torch.zeros(1, 3, 1, 2)
    target = torch.zeros(1, 3, 1, 2)
    pred[0, 0] = 1.0  # (1, 0, 0) at both positions
    target[0, 1, 0, 0] = 2.0  # (0, 1, 0): unit vectors orthogonal -> |a - b|^2 = 2
    target[0, 0, 0, 1] = 3.0  # (1, 0, 0) after normalisation -> 0
    distance = FeatureDistance(_Identity())
    assert distance(pred, target).item() == pytest.approx((2.0 + 0.0) / 2, rel=1e-6)
    assert distance(target, target).abs().item() < 1e-6
    # the net stays frozen and in eval mode whatever the loop asks
    net = RandomConvFeatures()
    distance = FeatureDistance(net).train()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    distance(x, torch.rand(2, 3, 16, 16)).sum().backward()
    assert x.grad.abs().sum() > 0


def test_stage_features_tap_each_resolution():
    feature_net = pytest.importorskip("zoo.metrics.feature_net")
    net = feature_net.ShapesFeatureNet().eval()
    stages = StageFeatures(net)
    maps = stages(torch.rand(2, 3, 32, 32))
    assert [m.shape[-1] for m in maps] == [32, 16, 8]
    assert [m.shape[1] for m in maps] == [net.config.widths[0], net.config.widths[1], net.config.widths[3]]


def test_build_perceptual_choices():
    assert build_perceptual("none") == (None, "none")
    distance, used = build_perceptual("random")
    assert isinstance(distance, FeatureDistance) and used == "random"
    distance, used = build_perceptual("shapes")  # zoo's shipped classifier (zoo/metrics/weights)
    assert used == "shapes" and isinstance(distance.net, StageFeatures)
    x = torch.rand(2, 3, 32, 32)
    assert distance(x, x).abs().max() < 1e-6 and (distance(x, x.flip(-1)) > 0).all()
    with pytest.raises(ValueError, match="unknown perceptual"):
        build_perceptual("vgg")


def test_timm_perceptual_reads_local_weights_only(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    from zoo.diffusion.perceptual import TimmFeatures

    with pytest.raises(FileNotFoundError, match="local file"):
        TimmFeatures("resnet18", str(tmp_path / "missing.safetensors"))
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    net = TimmFeatures("resnet18", str(path), out_indices=(1, 2))
    torch.testing.assert_close(net.net.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert len(net(torch.rand(1, 3, 32, 32))) == 2


# -- codec ---------------------------------------------------------------------------------------
def test_default_scaling_from_config():
    assert _codec().scaling.tolist() == [0.5] * 4 and _codec().shift.tolist() == [0.0] * 4
    with torch.device("meta"):
        sd = LatentCodec.from_config(preset_config("sd-f8"))
    assert sd.scaling.shape == (4,)
    vae = build_autoencoder(AutoencoderConfig(block_out_channels=(8, 8), norm_num_groups=4, scaling_factor=0.18215))
    assert LatentCodec(vae).scaling.tolist() == pytest.approx([0.18215 * 0.5] * 4)


def test_fit_standardises_to_sigma_data():
    codec = _codec()
    images = torch.rand(24, 3, 32, 32)
    codec.fit(images.split(8))
    with torch.no_grad():
        z = codec.encode(images)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.full((4,), 0.5), atol=1e-3, rtol=0)
    stats = codec.statistics()
    torch.testing.assert_close(torch.tensor(stats["std"]) * codec.scaling, torch.full((4,), 0.5))
    assert stats["sigma_data"] == 0.5
    with pytest.raises(ValueError, match="positive"):
        codec.set_statistics([0.0] * 4, [1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="one a latent channel"):
        codec.set_statistics([0.0] * 3, [1.0] * 3)


def test_graphs_match_diffusers_calls():
    codec = _codec()
    codec.set_statistics([0.1, -0.2, 0.3, 0.0], [1.5, 0.5, 2.0, 1.0])
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        latents = EncoderGraph(codec)(images)
        mean = codec.vae.encode(images * 2 - 1).latent_dist.mean
        shift, scaling = codec.shift.view(1, 4, 1, 1), codec.scaling.view(1, 4, 1, 1)
        torch.testing.assert_close(latents, (mean - shift) * scaling)
        torch.testing.assert_close(latents, codec.encode(images))
        decoded = DecoderGraph(codec)(latents)
        want = ((codec.vae.decode(latents / scaling + shift).sample + 1) / 2).clamp(0, 1)
        torch.testing.assert_close(decoded, want)
        # a bare AutoencoderKL is wrapped with its config's scaling
        torch.testing.assert_close(EncoderGraph(codec.vae)(images), mean * 0.5)


def test_posterior_sample_is_seeded():
    codec = _codec()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = codec.encode(images, sample=True, generator=torch.Generator().manual_seed(3))
        b = codec.encode(images, sample=True, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(a, b)
        assert not torch.equal(a, codec.encode(images))


# -- training ------------------------------------------------------------------------------------
def test_defaults_are_ldms():
    c = AutoencoderTrainConfig()
    assert (c.optimizer, c.betas, c.kl_weight, c.perceptual_weight, c.batch_size) == ("adam", (0.5, 0.9), 1e-6, 1.0, 12)
    assert c.lr == pytest.approx(4.5e-6 * 12)


def test_training_step_terms_and_gradients():
    codec = _codec()
    module = AutoencoderTrainable(codec, AutoencoderTrainConfig(perceptual_net="random"), FeatureDistance(RandomConvFeatures()))
    out = module.training_step({"image": torch.rand(2, 3, 32, 32), "label": torch.tensor([0, 1])})
    assert set(out) == {"loss", "l1", "perceptual", "kl"}
    expected = out["l1"] + out["perceptual"] + 1e-6 * out["kl"] / (3 * 32 * 32)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()
    assert codec.vae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert codec.vae.decoder.conv_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.perceptual.parameters())


def test_short_run_loss_falls(tmp_path):
    codec = _codec()
    config = AutoencoderTrainConfig(batch_size=8, perceptual_net="random", train_images=16, val_images=8, stats_images=16)
    task = build_autoencoder_task(codec, "synthetic", config, seed=0, workdir=tmp_path)
    assert task.dataset[0]["image"].shape == (3, 32, 32) and len(task.extra["validation"]) == 8
    batch = {"image": torch.stack([task.dataset[i]["image"] for i in range(8)])}
    optimizer = torch.optim.Adam([p for p in task.module.parameters() if p.requires_grad], lr=2e-3, betas=config.betas)
    torch.manual_seed(0)
    losses = fit_one_batch(task.module, batch, optimizer, 40)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    metrics = task.finalize(task.module)
    assert math.isfinite(metrics["psnr"]) and 0 < metrics["ssim"] <= 1
    # finalize standardised the latents with statistics measured on the training images
    stds = [metrics[f"latent_std_{c}"] for c in range(4)]
    torch.testing.assert_close(codec.scaling, 0.5 / torch.tensor(stds))
    assert task.to_pipeline(task.module) is codec


def test_user_image_folder_holds_out_every_tenth(tmp_path):
    from PIL import Image

    for i in range(12):
        Image.new("RGB", (40, 30), (20 * i, 100, 50)).save(tmp_path / f"{i:02d}.png")
    config = AutoencoderTrainConfig(perceptual_net="none", perceptual_weight=0.0)
    task = build_autoencoder_task(_codec(), str(tmp_path), config, seed=0, workdir=tmp_path / "run")
    assert len(task.dataset) == 11 and len(task.extra["validation"]) == 1
    assert task.dataset[0]["image"].shape == (3, 32, 32) and task.module.perceptual is None
    few = tmp_path / "few"
    few.mkdir()
    Image.new("RGB", (32, 32)).save(few / "a.png")
    with pytest.raises(ValueError, match="at least 10"):
        build_autoencoder_task(_codec(), str(few), config, seed=0, workdir=tmp_path / "run2")
