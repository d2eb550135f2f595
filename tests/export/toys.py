"""Throwaway models registered for the export tests, covering the paths real families take:

- `export-toy-fixed`: one graph with H x W fixed (like EfficientAD's autoencoder), squared
  differences averaged over channels, a fixed-size resize, a max-reduced score.
- `export-toy-diffusion`: two graphs and a Python loop over them (like a diffusion sampler):
  a denoiser step taking a latent with dynamic batch, height and width plus an integer
  timestep (sinusoidal embedding, GroupNorm), and a decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo import registry
from zoo.imageio import load_image, to_tensor
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import AnomalyResult, ImageResult

FIXED = "export-toy-fixed"
DIFFUSION = "export-toy-diffusion"
NAMES = (FIXED, DIFFUSION)
BAKED = "export-toy-baked"  # registered only by the tests that need an export to fail


@dataclass
class FixedConfig:
    image_size: int = 32
    width: int = 8


class FixedNet(nn.Module):
    def __init__(self, config: FixedConfig):
        super().__init__()
        self.size = config.image_size
        self.teacher = nn.Sequential(nn.Conv2d(3, config.width, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(config.width, config.width, 3))
        self.student = nn.Sequential(nn.Conv2d(3, config.width, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(config.width, config.width, 3))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image - self.mean
        m = ((self.teacher(x) - self.student(x)) ** 2).mean(dim=1, keepdim=True)
        m = F.interpolate(F.pad(m, (1, 1, 1, 1)), size=(self.size, self.size), mode="bilinear", align_corners=False)
        return m, m.amax(dim=(1, 2, 3))


class FixedPipeline(Pipeline):
    def graph_specs(self) -> list[GraphSpec]:
        s = self.config.image_size
        return [
            GraphSpec(
                "detector", self.model, (TensorSpec("image", ("batch", 3, s, s)),),
                (TensorSpec("anomaly_map", ("batch", 1, s, s)), TensorSpec("score", ("batch",))),
                dims={"batch": (1, 2, 8)}, note=f"H x W fixed at {s} (fixed-size resize)",
            )
        ]

    def _predict(self, items: list[Any], threshold: float | None = None, **_: Any) -> list[AnomalyResult]:
        batch = torch.stack([to_tensor(load_image(i), self.config.image_size) for i in items])
        maps, scores = self.run_graph("detector", batch)
        return [AnomalyResult(float(s), m[0].float().cpu().numpy(), threshold=threshold) for m, s in zip(maps, scores)]


@dataclass
class DiffusionConfig:
    channels: int = 4
    width: int = 16
    steps: int = 3
    timesteps: int = 1000


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (as in DDPM's UNet)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class Denoiser(nn.Module):
    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.width = config.width
        self.inp = nn.Conv2d(config.channels, config.width, 3, padding=1)
        self.time = nn.Linear(config.width, config.width)
        self.norm = nn.GroupNorm(4, config.width)
        self.out = nn.Conv2d(config.width, config.channels, 3, padding=1)

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        h = self.inp(latent) + self.time(timestep_embedding(timestep, self.width))[:, :, None, None]
        return self.out(F.silu(self.norm(h)))


class DiffusionNet(nn.Module):
    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.denoiser = Denoiser(config)
        self.decoder = nn.Sequential(nn.Conv2d(config.channels, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 3, 1), nn.Sigmoid())


class DiffusionPipeline(Pipeline):
    def graph_specs(self) -> list[GraphSpec]:
        c = self.config.channels
        dims = {"batch": (1, 2, 4), "height": (8, 16, 32), "width": (8, 16, 32)}
        latent = TensorSpec("latent", ("batch", c, "height", "width"), value_range=(-1.0, 1.0))
        return [
            GraphSpec(
                "denoiser", self.model.denoiser,
                (latent, TensorSpec("timestep", ("batch",), dtype="int64", value_range=(0, self.config.timesteps - 1))),
                (TensorSpec("noise", ("batch", c, "height", "width")),), dims=dict(dims),
            ),
            GraphSpec("decoder", self.model.decoder, (latent,), (TensorSpec("image", ("batch", 3, "height", "width")),), dims=dict(dims)),
        ]

    def _predict(self, items: list[Any], **_: Any) -> list[ImageResult]:
        """Items are seeds; the sampler loop runs here in Python over the two graphs."""
        latents = torch.stack([torch.randn(self.config.channels, 16, 16, generator=torch.Generator().manual_seed(int(s))) for s in items])
        ts = torch.linspace(self.config.timesteps - 1, 0, self.config.steps).long()
        for t in ts:
            (noise,) = self.run_graph("denoiser", latents, t.repeat(len(items)))
            latents = latents - 0.1 * noise.float().cpu()
        (images,) = self.run_graph("decoder", latents)
        arrays = (images.float().cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        return [ImageResult([a]) for a in arrays]


class BakedBatchNet(nn.Module):
    """Branches on the batch size in Python: torch.export refuses the dynamic batch, the
    TorchScript tracer bakes the branch in, and parity at another batch must catch it."""

    def __init__(self, config: FixedConfig):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        scale = 2.0 if image.shape[0] == 2 else 3.0
        return self.conv(image) * scale


class BakedPipeline(Pipeline):
    def graph_specs(self) -> list[GraphSpec]:
        s = self.config.image_size
        return [GraphSpec("baked", self.model, (TensorSpec("image", ("batch", 3, s, s)),), (TensorSpec("map", ("batch", 1, s, s)),))]

    def _predict(self, items: list[Any], **_: Any) -> list[AnomalyResult]:
        batch = torch.stack([to_tensor(load_image(i), self.config.image_size) for i in items])
        (maps,) = self.run_graph("baked", batch)
        return [AnomalyResult(float(m.max()), m[0].numpy()) for m in maps]


def _card(name: str, task: str, config: Any, result_type: str, graphs: tuple[str, ...]) -> registry.ModelCard:
    return registry.ModelCard(
        name=name, task=task, title="export test double", year=2026, arxiv="0000.00000", repo="-", license="MIT",
        summary="a test double", variants={"micro": registry.VariantSpec(config)}, result_type=result_type,
        graphs=graphs, family_module=__name__,
    )


def all_names() -> list[str]:
    """Every registered model plus the toys: what the registry-driven tests walk."""
    registry._load_families()
    return sorted((set(registry._REGISTRY) - {BAKED, "toy-anomaly"}) | set(NAMES))


def register() -> list[str]:
    """Register both toys (idempotent); returns their names."""
    registry._load_families()
    if FIXED not in registry._REGISTRY:
        card = _card(FIXED, "anomaly-detection", FixedConfig(), "AnomalyResult", ("detector",))
        card.options = (registry.OptionSpec("threshold", "float", None, minimum=0.0),)
        registry.register_model(card)(lambda config: FixedPipeline(FixedNet(config), config))
    if DIFFUSION not in registry._REGISTRY:
        card = _card(DIFFUSION, "image-generation", DiffusionConfig(), "ImageResult", ("denoiser", "decoder"))
        registry.register_model(card)(lambda config: DiffusionPipeline(DiffusionNet(config), config))
    return [FIXED, DIFFUSION]


def register_baked() -> str:
    if BAKED not in registry._REGISTRY:
        card = _card(BAKED, "anomaly-detection", FixedConfig(image_size=8), "AnomalyResult", ("baked",))
        registry.register_model(card)(lambda config: BakedPipeline(BakedBatchNet(config), config))
    return BAKED


def unregister() -> None:
    for name in (FIXED, DIFFUSION, BAKED):
        registry._REGISTRY.pop(name, None)
