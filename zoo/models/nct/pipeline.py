"""NCT predictor: a control (or a picture to take it from) and seeds -> Generation, in one forward pass.

The input image is a picture from which the card's control is extracted (`extract=true`, default), or
the control image itself (`extract=false`: an edge map, a low-resolution image, a colour layout). It is
brought to the generator's size first (area for pictures, nearest for controls). One graph, `generate`:
(noise, control[, class_label]) -> image, the frozen generator with its adapter and the decoder; each
image draws its noise from its own seed, so an image does not depend on its batch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from PIL import Image

from zoo.imageio import load_image, to_tensor, to_uint8_array
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import Generation

from .controls import extract_control
from .model import GenerateGraph, NCTConfig


class NCTPipeline(Pipeline):
    config: NCTConfig
    model: Any  # a ControlModel (model.py)
    max_batch = 64

    def graph_specs(self) -> list[GraphSpec]:
        c, h, w = self.model.noise_shape
        size = self.config.image_size
        inputs = [TensorSpec("noise", ("batch", c, h, w), value_range=(-3.0, 3.0)),
                  TensorSpec("control", ("batch", 3, size, size), value_range=(0.0, 1.0))]
        if self.model.num_classes:
            n = self.model.num_classes
            inputs.append(TensorSpec("class_label", ("batch",), dtype="int64", value_range=(0, n - 1), valid_range=(0, n - 1)))
        return [GraphSpec("generate", GenerateGraph(self.model), tuple(inputs), (TensorSpec("image", ("batch", 3, size, size)),),
                          dims={"batch": (1, 2, 64)},
                          note=f"one forward pass of the generator with its {self.config.control} adapter, then the decoder "
                               f"({size}x{size}, the size it was trained at)")]

    def control_image(self, item: Any, extract: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(control (3, S, S) in [0, 1], the picture it was taken from or None): extracted from a picture,
        or the input taken as the control itself."""
        image = load_image(item)
        size = self.config.image_size
        if extract:
            picture = to_tensor(image, size)
            return extract_control(self.config.control, picture[None])[0], picture
        return to_tensor(image.resize((size, size), Image.Resampling.NEAREST)), None

    def class_labels(self, seeds: list[int], count: int, class_label: int | None,
                     pictures: list[torch.Tensor | None]) -> tuple[torch.Tensor | None, str]:
        """The class of each image (a class-conditional base; inputs make `count` images each) and where it
        came from: the one asked for ("option"); else the class zoo's shapes classifier sees in the input
        picture ("picture"), so that the base's class does not fight the control taken from it; else one
        drawn from the image's seed ("seed")."""
        n = self.model.num_classes
        if not n:
            return None, "none"
        if class_label is not None:
            return torch.full((len(seeds),), int(class_label), dtype=torch.int64), "option"
        if all(p is not None for p in pictures):
            from zoo.metrics.feature_net import load_feature_net

            net = load_feature_net()
            columns = [net.classes.index(f"shapes/{name}") for name in self.config.class_names if f"shapes/{name}" in net.classes]
            if len(columns) == n:
                with torch.no_grad():
                    logits = net.logits(torch.stack([p for p in pictures if p is not None]))
                return logits[:, columns].argmax(1).to(torch.int64).repeat_interleave(count), "picture"
        return torch.tensor([int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(s + 7919))) for s in seeds]), "seed"

    def _predict(self, items: list[Any], seed: int = 0, count: int = 1, class_label: int | None = None,
                 extract: bool = True, **_: Any) -> list[Generation]:
        """Each item makes `count` images with seeds seed ... seed + count - 1, all following its control (the
        seed picks the noise, whatever else is in the batch)."""
        if any(item is None for item in items):
            raise ValueError(f"{self.card.name if hasattr(self, 'card') else 'nct'} needs an image: a picture to take the "
                             f"{self.config.control} control from, or the control itself with extract=false")
        count = max(1, int(count))
        started = time.perf_counter()
        prepared_items = [self.control_image(item, bool(extract)) for item in items]
        controls = [c for c, _ in prepared_items]
        prepared = time.perf_counter()
        seeds = [int(seed) + i % count for i in range(len(items) * count)]
        shape = self.model.noise_shape
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        control = torch.stack([controls[i // count] for i in range(len(seeds))])
        labels, class_from = self.class_labels(seeds, count, class_label, [p for _, p in prepared_items])
        images = []
        for start in range(0, len(seeds), self.max_batch):
            part = slice(start, start + self.max_batch)
            args = (noise[part], control[part]) + ((labels[part],) if labels is not None else ())
            images.append(self.run_graph("generate", *args)[0].float().cpu())  # to_uint8_array clamps
        generated = torch.cat(images)
        timings = {"control": (prepared - started) / len(items), "generate": (time.perf_counter() - prepared) / len(items)}
        results = []
        for i, ctrl in enumerate(controls):
            part = slice(i * count, (i + 1) * count)
            info: dict[str, Any] = {"control": self.config.control, "network_calls": 1, "extracted": bool(extract)}
            if labels is not None and self.config.class_names:
                info["class_names"] = [self.config.class_names[int(v)] for v in labels[part]]
                info["class_from"] = class_from
            results.append(Generation([to_uint8_array(im) for im in generated[part]], seeds=seeds[part], steps=1, timings=timings,
                                      info=info, condition=to_uint8_array(ctrl)))
        return results
