"""Typed-input test doubles (issue #12), registered at test time so that no layer knows them:

- `toy-generator`: inputs=(), options seed/steps/class_label (a "label")/guidance/invert, result
  Generation; one graph "render" that a pretend sampler calls `steps` times. Its parameters are
  constants, so `toy_generate` computes the same images by hand.
- `toy-editor`: image + optional mask + text prompt + optional boxes -> ImageResult (boxes
  painted red with len(prompt) * 10, the mask's white pixels blanked).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

GENERATOR = "toy-generator"
EDITOR = "toy-editor"
TOY_CLASSES = ("circle", "square", "triangle")


@dataclass
class ToyGenConfig:
    image_size: int = 8


class ToyGenNet(nn.Module):
    """One denoising step of a pretend sampler: x, label -> sigmoid(scale * (x - 0.5) + bias[label]).
    Parameters are constants (no RNG), so every instance computes the same images."""

    def __init__(self, config: ToyGenConfig):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.bias = nn.Parameter(torch.linspace(-1.0, 1.0, len(TOY_CLASSES) * 3).reshape(len(TOY_CLASSES), 3))

    def forward(self, x, label):
        return (torch.sigmoid(self.scale * (x - 0.5) + self.bias[label][:, :, None, None]),)


def toy_generate(seed: int, steps: int, label: int, size: int = 8, invert: bool = False, guidance: float = 1.0):
    """What toy-generator computes for one seed, by hand (uint8 (S, S, 3))."""
    net = ToyGenNet(ToyGenConfig(size))
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for _ in range(steps):
            x = net(x * guidance, torch.tensor([label]))[0]
    if invert:
        x = 1 - x
    return (x[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")


def register_typed_toys():
    """Registers toy-generator (inputs=(), options seed/steps/class_label/guidance/invert, result
    Generation) and toy-editor (image + optional mask + text + optional boxes -> ImageResult)."""
    import time

    import numpy as np

    from zoo import registry
    from zoo.imageio import load_image
    from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
    from zoo.results import Generation, ImageResult

    registry._load_families()

    class ToyGenPipeline(Pipeline):
        def graph_specs(self):
            s = self.config.image_size
            return [GraphSpec("render", self.model, (TensorSpec("x", ("batch", 3, s, s)), TensorSpec("label", ("batch",), "int64", (0, 2))),
                              (TensorSpec("y", ("batch", 3, s, s)),))]

        def _predict(self, items, seed=0, steps=2, class_label=1, guidance=1.0, invert=False, **_):
            if any(item is not None for item in items):
                raise ValueError("toy-generator takes no inputs")
            started = time.perf_counter()
            s = self.config.image_size
            seeds = [seed + i for i in range(len(items))]
            x = torch.cat([torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(k)) for k in seeds])
            labels = torch.full((len(items),), class_label, dtype=torch.int64)
            for _ in range(steps):
                x = self.run_graph("render", x * guidance, labels)[0]
            if invert:
                x = 1 - x
            arrays = (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
            took = time.perf_counter() - started
            info = {"class_label": class_label, "class_name": TOY_CLASSES[class_label], "guidance": guidance}
            return [Generation([a], seeds=[k], steps=steps, timings={"total": took}, info=info) for a, k in zip(arrays, seeds)]

    class ToyEditPipeline(Pipeline):
        def graph_specs(self):
            return [GraphSpec("edit-identity", self.model, (TensorSpec("x", ("batch", 3, 4, 4)),), (TensorSpec("y", ("batch", 3, 4, 4)),))]

        def _predict(self, items, strength=1.0, **_):
            out = []
            for item in items:
                image = np.asarray(load_image(item["image"])).copy()
                colour = (len(item["prompt"]) * 10) % 256
                for x0, y0, x1, y1 in item["boxes"].round().astype(int):
                    image[y0:y1, x0:x1] = (int(colour * strength), 0, 0)
                if item["mask"] is not None:
                    mask = np.asarray(load_image(item["mask"]).convert("L").resize(image.shape[1::-1])) > 127
                    image[mask] = 0
                out.append(ImageResult([image], info={"prompt": item["prompt"], "boxes": len(item["boxes"])}))
            return out

    common = dict(year=2026, arxiv="0000.00000", repo="-", license="MIT", family_module=__name__)
    generator = registry.ModelCard(
        name=GENERATOR, task="image-generation", title="Toy generator", summary="a class-conditional test double",
        variants={"micro": registry.VariantSpec(ToyGenConfig())}, result_type="Generation", inputs=(),
        options=(registry.OptionSpec("seed", "int", 0, "first seed", minimum=0),
                 registry.OptionSpec("steps", "int", 2, "sampling steps", minimum=1, maximum=8),
                 registry.OptionSpec("class_label", "label", "square", "class to draw", choices=TOY_CLASSES),
                 registry.OptionSpec("guidance", "float", 1.0, "input scale", minimum=0.0, maximum=4.0),
                 registry.OptionSpec("invert", "bool", False, "invert the colours")),
        graphs=("render",), **common,
    )
    editor = registry.ModelCard(
        name=EDITOR, task="image-editing", title="Toy editor", summary="paints boxes, blanks a mask",
        variants={"micro": registry.VariantSpec(ToyGenConfig())}, result_type="ImageResult",
        inputs=(registry.InputSpec("image", "image", help="picture to edit"),
                registry.InputSpec("mask", "mask", required=False, help="pixels to blank"),
                registry.InputSpec("prompt", "text", help="its length sets the red", minimum=1, maximum=40),
                registry.InputSpec("boxes", "boxes", default=np.zeros((0, 4), np.float32), required=False, maximum=4)),
        options=(registry.OptionSpec("strength", "float", 1.0, minimum=0.0, maximum=1.0),),
        graphs=("edit-identity",), **common,
    )
    if GENERATOR not in registry._REGISTRY:
        registry.register_model(generator)(lambda config: ToyGenPipeline(ToyGenNet(config), config))
    if EDITOR not in registry._REGISTRY:
        registry.register_model(editor)(lambda config: ToyEditPipeline(nn.Identity(), config))


def unregister_typed_toys():
    from zoo import registry

    for name in (GENERATOR, EDITOR):
        registry._REGISTRY.pop(name, None)
