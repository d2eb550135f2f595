"""Autoencoder predictor: an image -> ImageResult with its reconstruction through the latents.

Two graphs, each exported on its own (the latent families run the decoder after their sampler):
- `encode`: image (B, 3, H, W) in [0, 1] -> latents (B, C, H/f, W/f), the posterior mean standardised;
- `decode`: latents -> image in [0, 1].
An input whose sides are not multiples of the downsampling factor f is padded (edge replicate)
up to the next multiple and the reconstruction cropped back. `size` > 0 resizes the input to a
size x size square first (the micro variants were trained at 32 x 32).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.diffusion.autoencoder import AutoencoderConfig, DecoderGraph, EncoderGraph, LatentCodec
from zoo.imageio import load_image, to_tensor, to_uint8_array
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import ImageResult


class AutoencoderPipeline(Pipeline):
    model: LatentCodec
    config: AutoencoderConfig
    max_batch = 32

    def graph_specs(self) -> list[GraphSpec]:
        f, c, rgb = self.config.factor, self.config.latent_channels, self.config.image_channels
        image_dims = {"batch": (1, 2, 16), "height": (4 * f, 8 * f, 64 * f), "width": (4 * f, 8 * f, 64 * f)}
        latent_dims = {"batch": (1, 2, 16), "latent_height": (4, 8, 64), "latent_width": (4, 8, 64)}
        return [
            GraphSpec("encode", EncoderGraph(self.model), (TensorSpec("image", ("batch", rgb, "height", "width")),),
                      (TensorSpec("latents", ("batch", c, f"height/{f}", f"width/{f}"), value_range=(-2.0, 2.0)),),
                      dims=image_dims, note=f"height and width must be multiples of {f} (the downsampling factor)",
                      multiple_of={"height": f, "width": f}),
            GraphSpec("decode", DecoderGraph(self.model),
                      (TensorSpec("latents", ("batch", c, "latent_height", "latent_width"), value_range=(-1.5, 1.5)),),
                      (TensorSpec("image", ("batch", rgb, f"latent_height*{f}", f"latent_width*{f}")),),
                      dims=latent_dims, note=f"the image is {f}x the latent size"),
        ]

    # -- tensors (what the latent families call; any runtime backend) --------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], sides multiples of the factor -> standardised latents, in chunks."""
        return torch.cat([self.run_graph("encode", images[i : i + self.max_batch])[0].float().cpu()
                          for i in range(0, len(images), self.max_batch)])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardised latents -> images (B, 3, h*f, w*f) in [0, 1], in chunks."""
        return torch.cat([self.run_graph("decode", latents[i : i + self.max_batch])[0].float().cpu()
                          for i in range(0, len(latents), self.max_batch)])

    # -- prediction ----------------------------------------------------------------------------
    def _predict(self, items: list[Any], size: int = 0, **_: Any) -> list[ImageResult]:
        f = self.config.factor
        images = [to_tensor(load_image(item), int(size) if size else None) for item in items]
        padded = []
        for image in images:
            h, w = image.shape[-2:]
            ph, pw = -(-h // f) * f, -(-w // f) * f
            padded.append(F.pad(image[None], (0, pw - w, 0, ph - h), mode="replicate")[0] if (ph, pw) != (h, w) else image)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(padded):
            by_shape.setdefault(tuple(image.shape), []).append(i)
        recons: list[torch.Tensor | None] = [None] * len(items)
        latent_shapes: list[list[int]] = [[] for _ in items]
        for indices in by_shape.values():
            latents = self.encode(torch.stack([padded[i] for i in indices]))
            decoded = self.decode(latents)
            for k, i in enumerate(indices):
                h, w = images[i].shape[-2:]
                recons[i] = decoded[k, :, :h, :w]
                latent_shapes[i] = list(latents.shape[1:])
        results = []
        for image, recon, shape in zip(images, recons, latent_shapes):
            mse = float(((recon - image) ** 2).mean())
            psnr = float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))
            results.append(ImageResult([to_uint8_array(recon)], info={"images": ["reconstruction"], "latent_shape": shape,
                                                                 "factor": f, "psnr": round(psnr, 3)}))
        return results
