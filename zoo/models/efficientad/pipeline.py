"""EfficientAD predictor: image -> AnomalyResult (score, per-pixel map at the input size)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.imageio import load_image, to_tensor
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import AnomalyResult

from .model import EfficientAD, EfficientADConfig


class EfficientADPipeline(Pipeline):
    model: EfficientAD
    config: EfficientADConfig

    def graph_specs(self) -> list[GraphSpec]:
        size = self.config.image_size
        return [
            GraphSpec(
                name="efficientad",
                module=self.model,
                inputs=(TensorSpec("image", ("batch", 3, size, size)),),
                outputs=(TensorSpec("anomaly_map", ("batch", 1, size, size)), TensorSpec("score", ("batch",))),
                dims={"batch": (1, 2, 16)},
                note=f"H x W fixed at {size} x {size}: the autoencoder decoder upsamples to fixed sizes (paper Sec. 3.3)",
            )
        ]

    def preprocess(self, items: list[Any]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        images = [load_image(item) for item in items]
        sizes = [(im.height, im.width) for im in images]
        batch = torch.stack([to_tensor(im, self.config.image_size) for im in images])
        return batch, sizes

    def postprocess(self, maps: torch.Tensor, scores: torch.Tensor, sizes: list[tuple[int, int]], threshold: float | None) -> list[AnomalyResult]:
        results = []
        for anomaly_map, score, (h, w) in zip(maps, scores, sizes):
            full = F.interpolate(anomaly_map[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            results.append(AnomalyResult(score=float(score), map=full.cpu().numpy().astype(np.float32), threshold=threshold))
        return results

    def _predict(self, items: list[Any], threshold: float | None = None, **_: Any) -> list[AnomalyResult]:
        batch, sizes = self.preprocess(items)
        maps, scores = self.run_graph("efficientad", batch)
        return self.postprocess(maps, scores, sizes, threshold)
