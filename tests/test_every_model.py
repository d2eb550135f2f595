"""Registry-driven checks that every registered model passes; a new family is covered
without editing this file."""

import numpy as np
import pytest
import torch

from zoo import registry, results
from zoo.weights import save_weights

registry._load_families()
NAMES = sorted(registry._REGISTRY)


def test_every_family_imports():
    assert registry.family_errors() == {}
    assert NAMES, "no model registered"


@pytest.mark.parametrize("name", NAMES)
def test_declared_parameter_counts(name):
    card = registry.get_card(name)
    for variant, spec in card.variants.items():
        counts = registry.parameter_counts(name, variant)
        assert counts["total"] > 0
        for component, expected in (spec.paper_params or {}).items():
            assert counts[component] == expected, f"{name}/{variant} {component}: {counts[component]:,} != {expected:,}"


@pytest.mark.parametrize("name", NAMES)
def test_micro_predicts_its_result_type(name):
    card = registry.get_card(name)
    model = registry.create_model(name, "micro", weights="random")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)]
    out = model.predict(images)
    assert len(out) == 2
    assert all(isinstance(r, results.RESULT_TYPES[card.result_type]) for r in out)
    assert isinstance(out[0].to_json(), dict)
    assert out[0].draw(images[0]).size[0] > 0
    # a batch of two equals the two run one by one
    single = model.predict(images[1])
    np.testing.assert_allclose(single.to_json().get("score", 0.0), out[1].to_json().get("score", 0.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    model = registry.create_model(name, "micro", weights="random")
    path = save_weights(model.model, tmp_path / "model.safetensors", {"model": name, "variant": "micro"})
    other = registry.create_model(name, "micro", weights=path)
    for spec in model.graph_specs():
        inputs = spec.example_inputs()
        for a, b in zip(model.run_graph(spec.name, *inputs), other.run_graph(spec.name, *inputs)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_graphs_match_card(name):
    card = registry.get_card(name)
    model = registry.build_pipeline(name, "micro")
    assert tuple(spec.name for spec in model.graph_specs()) == card.graphs
    for metric in card.metrics:
        assert metric.command.startswith("zoo ") or metric.command.startswith("python "), metric
