"""PVD predictor: {"image", "expression"} -> `Grounding` (box, N-vertex polygon, mask).

Preprocessing (our choice): the image is resized to config.image_size square (bilinear; no
letterbox, as `RefCocoDataset(image_size=...)` resizes for training) and normalised with the
ImageNet mean / std; the expression is WordPiece-tokenised to config.max_tokens ids (tokenizer.py);
an empty, over-long or non-UTF-8 expression is a ValueError naming the input.

Graph "encode" (`PVDEncoder`): images (B, 3, S, S), tokens (B, L) -> memory (B, M, d),
memory_valid (B, M), centre (B, 2), centre_logits (B, g*g).
Graph "denoise" (`VertexDenoiser`): memory, memory_valid, centre, x_t (B, K, 2), t (B,), slots (B, K)
-> x0 (B, K, 2): one denoising step over all K vertices at once; K = 2 for a box, N for a polygon.

Sampling (`sample_vertices`): DDIM (eta 0) over `steps` timesteps from x_T ~ N(0, I), the box and
the polygon each their own chain through the same graph; the starting noise of every expression
comes from `seed` alone (so a batch equals single calls). Vertices go back to the image through the
Center Anchor Mechanism (`from_signal`), then to input pixels; the box is the min/max of its corners,
the mask the rasterised polygon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.data.referring import polygon_to_mask
from zoo.imageio import load_image, to_tensor
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.registry import InputSpec
from zoo.results import Grounding

from .model import BOX_VERTICES, IMAGENET_MEAN, IMAGENET_STD, PVDConfig, PVDModel, ddim_step, ddim_timesteps, from_signal
from .tokenizer import ExpressionError, encode

EXPRESSION = "expression"
MAX_EXPRESSION_CHARS = 200
# the card's text input; parsing an expression through it (None, non-UTF-8 bytes, empty or over-long: ValueError)
EXPRESSION_INPUT = InputSpec(EXPRESSION, "text", help="a referring expression, e.g. 'the small red triangle left of the blue circle'",
                             minimum=1, maximum=MAX_EXPRESSION_CHARS)


def normalise(images: Tensor) -> Tensor:
    """[0, 1] images (B, 3, H, W) -> ImageNet-normalised."""
    mean = images.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = images.new_tensor(IMAGENET_STD)[:, None, None]
    return (images - mean) / std


def sample_vertices(denoise: Callable[..., Tensor], memory: Tensor, memory_valid: Tensor, centre: Tensor, slots: Tensor,
                    noise: Tensor, alphas_cumprod: Tensor, steps: int, config: PVDConfig) -> Tensor:
    """DDIM from `noise` (B, K, 2) -> image-normalised vertices (B, K, 2) (Center Anchor Mechanism
    or absolute coordinates, as the config says)."""
    times = ddim_timesteps(config.timesteps, steps)
    x = noise
    x0 = noise
    for i, t in enumerate(times):
        tt = torch.full((x.shape[0],), float(t))
        x0 = denoise(memory, memory_valid, centre, x, tt, slots).float()
        if i + 1 < len(times):
            x = ddim_step(x, x0, float(alphas_cumprod[t]), float(alphas_cumprod[times[i + 1]]))
    return from_signal(x0, centre.float(), config)


class PVDPipeline(Pipeline):
    """Tokenise + resize -> "encode" -> DDIM over "denoise" (box, polygon) -> `Grounding`."""

    model: PVDModel

    def graph_specs(self) -> list[GraphSpec]:
        from .model import PVDEncoder

        c = self.config
        s, length, d = int(c.image_size), int(c.max_tokens), int(c.d_model)
        m = c.grid * c.grid + length
        low = min((0.0 - mu) / sd for mu, sd in zip(IMAGENET_MEAN, IMAGENET_STD))
        high = max((1.0 - mu) / sd for mu, sd in zip(IMAGENET_MEAN, IMAGENET_STD))
        ids = (0.0, float(c.vocab_size - 1))
        encoder: PVDEncoder = self.model.encoder()
        note = f"fixed {s}x{s} input and {length} tokens: the pipeline resizes every image and pads every expression"
        encode_spec = GraphSpec(
            "encode", encoder,
            (TensorSpec("images", ("batch", 3, s, s), value_range=(low, high)),
             TensorSpec("tokens", ("batch", length), "int64", ids, valid_range=ids)),
            (TensorSpec("memory", ("batch", m, d), value_range=(-3.0, 3.0)), TensorSpec("memory_valid", ("batch", m)),
             TensorSpec("centre", ("batch", 2)), TensorSpec("centre_logits", ("batch", c.grid * c.grid), value_range=(-10.0, 10.0))),
            dims={"batch": (1, 2, 16)}, note=note)
        slots = (0.0, float(c.slots - 1))
        denoise_spec = GraphSpec(
            "denoise", self.model.denoiser,
            (TensorSpec("memory", ("batch", m, d), value_range=(-3.0, 3.0)), TensorSpec("memory_valid", ("batch", m)),
             TensorSpec("centre", ("batch", 2)), TensorSpec("x_t", ("batch", "vertices", 2), value_range=(-2.0, 2.0)),
             TensorSpec("t", ("batch",), value_range=(0.0, float(c.timesteps - 1))),
             TensorSpec("slots", ("batch", "vertices"), "int64", slots, valid_range=slots)),
            (TensorSpec("x0", ("batch", "vertices", 2), value_range=(-2.0, 2.0)),),
            dims={"batch": (1, 2, 16), "vertices": (2, BOX_VERTICES + 4, c.polygon_vertices)},
            note=f"memory length fixed at {m} ({c.grid}x{c.grid} visual cells + {length} tokens)")
        return [encode_spec, denoise_spec]

    # -- inputs -----------------------------------------------------------------------------
    def _expression(self, item: Any) -> str:
        value = item.get(EXPRESSION) if isinstance(item, dict) else None
        spec = self.card.input(EXPRESSION) if self.card is not None else EXPRESSION_INPUT
        return str(spec.parse(value))

    def preprocess(self, items: list[Any]) -> tuple[Tensor, Tensor, list[tuple[int, int]], list[str]]:
        c = self.config
        images, sizes, texts = [], [], []
        for item in items:
            if not isinstance(item, dict) or "image" not in item:
                raise ValueError("pvd takes {'image': ..., 'expression': '...'} items")
            texts.append(self._expression(item))
            tensor = to_tensor(load_image(item["image"]))
            sizes.append((int(tensor.shape[-2]), int(tensor.shape[-1])))
            images.append(F.interpolate(tensor[None], size=(c.image_size, c.image_size), mode="bilinear",
                                        align_corners=False, antialias=True)[0])
        try:
            tokens = encode(texts, c.vocab, c.max_tokens, EXPRESSION)
        except ExpressionError as err:
            raise ValueError(str(err)) from None
        return normalise(torch.stack(images)), tokens, sizes, texts

    # -- prediction -------------------------------------------------------------------------
    def ground(self, images: Tensor, tokens: Tensor, steps: int, seed: int) -> dict[str, Tensor]:
        """Normalised images + tokens -> image-normalised "box" (B, 4), "polygon" (B, N, 2), "centre", "score"."""
        c = self.config
        memory, valid, centre, logits = (t.float().cpu() for t in self.run_graph("encode", images, tokens))
        b = images.shape[0]
        gen = torch.Generator().manual_seed(int(seed))
        box_noise = torch.randn(BOX_VERTICES, 2, generator=gen)
        poly_noise = torch.randn(c.polygon_vertices, 2, generator=gen)

        def denoise(*args: Tensor) -> Tensor:
            return self.run_graph("denoise", *args)[0].cpu()

        ab = torch.as_tensor(self.model.alphas_cumprod).cpu()
        corners = sample_vertices(denoise, memory, valid, centre, self.model.slots(b, False), box_noise.expand(b, -1, -1),
                                  ab, steps, c)
        polygon = sample_vertices(denoise, memory, valid, centre, self.model.slots(b, True), poly_noise.expand(b, -1, -1),
                                  ab, steps, c)
        box = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=-1).clamp(0, 1)
        return {"box": box, "polygon": polygon.clamp(0, 1), "centre": centre, "score": logits.softmax(-1).max(-1).values}

    def _predict(self, items: list[Any], steps: int = 0, seed: int = 0, **_: Any) -> list[Grounding]:
        images, tokens, sizes, texts = self.preprocess(items)
        out = self.ground(images, tokens, int(steps) or int(self.config.sample_steps), seed)
        results = []
        for i, ((h, w), text) in enumerate(zip(sizes, texts)):
            scale = np.array([w, h], np.float32)
            box = out["box"][i].numpy().reshape(2, 2) * scale
            polygon = out["polygon"][i].numpy() * scale
            results.append(Grounding(box.reshape(4), float(out["score"][i]), polygon=polygon,
                                     mask=polygon_to_mask(polygon, h, w), expression=text))
        return results
