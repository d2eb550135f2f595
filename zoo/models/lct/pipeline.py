"""sLCT predictor: seeds (and a class) -> Generation.

The model is the consistency denoiser f(x, sigma, class) plus the latent autoencoder it was
trained on (`zoo.diffusion.autoencoder.LatentCodec`, frozen). Three graphs, each exported on its
own, so the sampling loop below runs the same over PyTorch, ONNX Runtime or any other runtime:

- `denoise`: (latents, sigma, class_label) -> x0, one consistency-function call (the class input
  only when the network is class-conditional);
- `decode`: standardised latents -> image in [0, 1];
- `encode`: image -> standardised latents (not used to sample; exported for editing and tests).

Sampling is CM's multistep consistency sampler (Algorithm 1, `zoo.diffusion.consistency`) over
`denoise`, then one `decode`. Every image draws its noise (the first draw and each step's) from
its own generator seeded with its seed, so an image does not depend on the others in its batch,
and equal seeds give equal images on every backend.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zoo.diffusion.autoencoder import AutoencoderConfig, DecoderGraph, EncoderGraph, LatentCodec
from zoo.diffusion.autoencoder import preset_config as autoencoder_preset
from zoo.diffusion.consistency import karras_sigmas, sample_consistency, sample_diffusion, sampling_sigmas
from zoo.imageio import to_uint8_array
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import Generation

from .model import LCTConfig, build_model

# EDM's deterministic Heun sampler with 18 noise levels (35 network calls), its CIFAR-10 setting.
EDM_STEPS = 18


@dataclass
class LatentLCTConfig:
    """A variant: the consistency network, the autoencoder whose latents it models, the data."""

    net: LCTConfig
    autoencoder_variant: str = "micro-f4"  # the `autoencoder-kl` variant whose latents the network models
    autoencoder: AutoencoderConfig | None = None  # None: that variant's preset
    image_size: int = 32
    data: str = "shapes"  # zoo.data.generation.ClassImageSet kind `zoo train` uses by default
    class_names: tuple[str, ...] = ()  # names of the network's classes (empty: unconditional)
    sample_steps: int = 0  # default steps of `predict` (0: 1 for consistency, 18 Heun levels for edm)
    # "consistency": the sLCT model (f with the boundary condition, CM's multistep sampler);
    # "edm": the same network as an EDM diffusion denoiser (the multi-step baseline, Heun sampler)
    parametrisation: str = "consistency"

    @property
    def default_steps(self) -> int:
        return self.sample_steps or (1 if self.parametrisation == "consistency" else EDM_STEPS)

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names)
        if self.parametrisation not in ("consistency", "edm"):
            raise ValueError(f"parametrisation must be 'consistency' or 'edm', got {self.parametrisation!r}")
        if self.autoencoder is None:
            self.autoencoder = autoencoder_preset(self.autoencoder_variant)
        elif isinstance(self.autoencoder, dict):  # a config read back from a weights sidecar
            self.autoencoder = AutoencoderConfig.from_dict(self.autoencoder)
        if isinstance(self.net, dict):
            self.net = LCTConfig(**self.net)
        if self.net.num_classes and len(self.class_names) != self.net.num_classes:
            raise ValueError(f"{self.net.num_classes} classes but {len(self.class_names)} class names")
        f = 2 ** (len(self.autoencoder.block_out_channels) - 1)
        if self.image_size != self.net.latent_size * f:
            raise ValueError(f"image_size {self.image_size} != latent_size {self.net.latent_size} x f{f}")


class LatentConsistencyModel(nn.Module):
    """What the weights file holds: `denoiser.*` (the consistency function) and `codec.*` (the
    frozen autoencoder and its latent statistics). `autoencoder_ready` records that the codec
    holds trained weights (training loads them once, a fine-tuning run keeps its own)."""

    def __init__(self, config: LatentLCTConfig):
        super().__init__()
        self.config = config
        self.denoiser = build_model(config.net)
        self.denoiser.boundary = config.parametrisation == "consistency"
        self.codec = LatentCodec.from_config(config.autoencoder)
        self.codec.requires_grad_(False)
        self.register_buffer("autoencoder_ready", torch.zeros((), dtype=torch.bool))


class DenoiseGraph(nn.Module):
    """(latents, sigma (B,), [class_label (B,) int64]) -> x0: one call of f."""

    def __init__(self, denoiser: nn.Module, conditional: bool):
        super().__init__()
        self.denoiser = denoiser
        self.conditional = conditional

    def forward(self, latents: Tensor, sigma: Tensor, class_label: Tensor | None = None) -> Tensor:
        return self.denoiser(latents, sigma, class_label if self.conditional else None)


class LatentConsistencyPipeline(Pipeline):
    model: LatentConsistencyModel
    config: LatentLCTConfig
    max_batch = 64

    @property
    def conditional(self) -> bool:
        return self.config.net.num_classes > 0

    def graph_specs(self) -> list[GraphSpec]:
        net = self.config.net
        latent = ("batch", net.latent_channels, net.latent_size, net.latent_size)
        image = ("batch", 3, self.config.image_size, self.config.image_size)
        inputs = [TensorSpec("latents", latent, value_range=(-2.0, 2.0)),
                  TensorSpec("sigma", ("batch",), value_range=(net.sigma_min, net.sigma_max))]
        if self.conditional:
            inputs.append(TensorSpec("class_label", ("batch",), dtype="int64", value_range=(0, net.num_classes - 1),
                                     valid_range=(0, net.num_classes - 1)))  # indexes the class embedding
        dims = {"batch": (1, 2, 64)}
        note = f"the network runs at the latent size it was trained at ({net.latent_size}x{net.latent_size})"
        return [
            GraphSpec("denoise", DenoiseGraph(self.model.denoiser, self.conditional), tuple(inputs),
                      (TensorSpec("denoised", latent, value_range=(-2.0, 2.0)),), dims=dict(dims), note=note),
            GraphSpec("decode", DecoderGraph(self.model.codec), (TensorSpec("latents", latent, value_range=(-1.5, 1.5)),),
                      (TensorSpec("image", image),), dims=dict(dims), note=note),
            GraphSpec("encode", EncoderGraph(self.model.codec), (TensorSpec("image", image),),
                      (TensorSpec("latents", latent, value_range=(-2.0, 2.0)),), dims=dict(dims), note=note),
        ]

    # -- sampling --------------------------------------------------------------------------
    def sample_latents(self, seeds: Sequence[int], steps: int, labels: Tensor | None = None) -> Tensor:
        """Latents of one image per seed after an n-step consistency sample (batch-independent)."""
        net = self.config.net
        shape = (net.latent_channels, net.latent_size, net.latent_size)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def draw(_shape: Sequence[int]) -> Tensor:
            return torch.stack([torch.randn(shape, generator=g) for g in generators])

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            args = (x, sigma) if labels is None else (x, sigma, labels)
            return self.run_graph("denoise", *args)[0].float().cpu()

        if self.config.parametrisation == "edm":
            sigmas = [float(s) for s in karras_sigmas(steps, net.sigma_min, net.sigma_max, net.rho)]
            return sample_diffusion(denoise, (len(seeds), *shape), sigmas, method="heun", draw_noise=draw)
        sigmas = sampling_sigmas(steps, net.sigma_max, net.sigma_min, net.rho)
        return sample_consistency(denoise, (len(seeds), *shape), sigmas, sigma_min=net.sigma_min, draw_noise=draw)

    def network_calls(self, steps: int) -> int:
        """Network evaluations (NFE) of one sample: n for consistency, 2n - 1 for EDM's Heun."""
        return 2 * steps - 1 if self.config.parametrisation == "edm" else steps

    def class_labels(self, seeds: Sequence[int], class_label: int | None) -> Tensor | None:
        """The class of each image: the one asked for, or one drawn from the image's seed."""
        if not self.conditional:
            return None
        if class_label is not None:
            return torch.full((len(seeds),), int(class_label), dtype=torch.int64)
        n = self.config.net.num_classes
        return torch.tensor([int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(int(s) + 7919))) for s in seeds],
                            dtype=torch.int64)

    def generate(self, seeds: Sequence[int], steps: int = 0, class_label: int | None = None) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        """(images (B, 3, H, W) in [0, 1], class labels, timings) for these seeds, in chunks of max_batch."""
        steps = int(steps) or self.config.default_steps
        labels = self.class_labels(seeds, class_label)
        images, timings = [], {"sample": 0.0, "decode": 0.0}
        for i in range(0, len(seeds), self.max_batch):
            chunk = list(seeds[i : i + self.max_batch])
            chunk_labels = labels[i : i + self.max_batch] if labels is not None else None
            start = time.perf_counter()
            latents = self.sample_latents(chunk, steps, chunk_labels)
            mid = time.perf_counter()
            images.append(self.run_graph("decode", latents)[0].float().cpu().clamp(0, 1))
            timings["sample"] += mid - start
            timings["decode"] += time.perf_counter() - mid
        return torch.cat(images), labels, timings

    def _predict(self, items: list[Any], seed: int = 0, steps: int = 0, class_label: int | None = None,
                 count: int = 1, **_: Any) -> list[Generation]:
        """Item i of the batch makes `count` images with seeds seed + i*count ... seed + (i+1)*count - 1."""
        count = max(1, int(count))
        seeds = [int(seed) + i for i in range(len(items) * count)]
        n = int(steps) or self.config.default_steps
        images, labels, timings = self.generate(seeds, n, class_label)
        share = {k: v * count / len(seeds) for k, v in timings.items()}
        info: dict[str, Any] = {"sampler": "consistency" if self.config.parametrisation == "consistency" else "edm-heun",
                                "network_calls": self.network_calls(n)}
        if self.config.parametrisation == "consistency":
            info["sigmas"] = sampling_sigmas(n, self.config.net.sigma_max, self.config.net.sigma_min, self.config.net.rho)
        results = []
        for i in range(len(items)):
            part = slice(i * count, (i + 1) * count)
            extra: dict[str, Any] = {}
            if labels is not None:
                extra["class_labels"] = [int(v) for v in labels[part]]
                extra["class_names"] = [self.config.class_names[int(v)] for v in labels[part]]
            results.append(Generation([to_uint8_array(im) for im in images[part]], seeds=seeds[part], steps=n, timings=share,
                                      info={**info, **extra}))
        return results
