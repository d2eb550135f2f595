"""Shared test fixtures. Tests run on CPU only and never touch the network."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn

os.environ.setdefault("ZOO_LOG_LEVEL", "WARNING")
# tests/support/ (shared test doubles) importable from every test folder (--import-mode=importlib adds no
# paths); not tests/ itself, whose serving/ and demos/ folders would shadow the packages of those names
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
# One intra-op thread: the micro models' tiny convolutions run many times faster on one
# thread than on two contended ones, and results do not depend on the thread count.
torch.set_num_threads(1)


@dataclass
class ToyConfig:
    width: int = 4
    image_size: int = 16


class ToyNet(nn.Module):
    """Image (B,3,S,S) -> mean-pooled feature score (B,) and a map (B,1,S,S)."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.encoder = nn.Conv2d(3, config.width, 3, padding=1)
        self.head = nn.Conv2d(config.width, 1, 1)

    def forward(self, image):
        anomaly_map = self.head(torch.relu(self.encoder(image)))
        return anomaly_map, anomaly_map.amax(dim=(1, 2, 3))


@pytest.fixture
def toy_model(tmp_path, monkeypatch):
    """Registers a throwaway model 'toy-anomaly' for the test's duration; yields its card."""
    from zoo import registry
    from zoo.imageio import load_image, to_tensor
    from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
    from zoo.results import AnomalyResult

    registry._load_families()

    class ToyPipeline(Pipeline):
        def graph_specs(self):
            s = self.config.image_size
            return [GraphSpec("toy", self.model, (TensorSpec("image", ("batch", 3, s, s)),),
                              (TensorSpec("anomaly_map", ("batch", 1, s, s)), TensorSpec("score", ("batch",))))]

        def _predict(self, items, threshold=None, **_):
            batch = torch.stack([to_tensor(load_image(i), self.config.image_size) for i in items])
            maps, scores = self.run_graph("toy", batch)
            return [AnomalyResult(float(s), m[0].numpy(), threshold=threshold) for m, s in zip(maps, scores)]

    card = registry.ModelCard(
        name="toy-anomaly", task="anomaly-detection", title="Toy", year=2026, arxiv="0000.00000", repo="-", license="MIT",
        summary="a test double", variants={"micro": registry.VariantSpec(ToyConfig(), paper_params={"total": 4 * 27 + 4 + 4 + 1})},
        result_type="AnomalyResult", options=(registry.OptionSpec("threshold", "float", None, minimum=0.0),), graphs=("toy",),
        family_module=__name__,
    )
    registry.register_model(card)(lambda config: ToyPipeline(ToyNet(config), config))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo_home"))
    try:
        yield card
    finally:
        registry._REGISTRY.pop("toy-anomaly", None)


@pytest.fixture(scope="module")
def typed_toys():
    """toy-generator and toy-editor (tests/support/typed_toys.py), registered for one test module."""
    from typed_toys import register_typed_toys, unregister_typed_toys

    register_typed_toys()
    try:
        yield
    finally:
        unregister_typed_toys()
