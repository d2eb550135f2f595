"""Registry-driven checks that every registered model passes; a new family is covered
without editing this file."""

import numpy as np
import pytest
import torch
from registry_inputs import example_inputs

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


def _inputs_for(card, rng):
    """Two example inputs following the card's typed inputs (None for a generator)."""
    return example_inputs(card, rng, count=2)


def _content(result):
    """What a result says (arrays and numbers), leaving out wall-clock timings: compared
    between a batch and single calls, so every result type is checked on its own content."""
    out = {}
    for key, value in vars(result).items():
        if key == "timings":
            continue
        if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
            for i, item in enumerate(value):
                out[f"{key}.{i}"] = np.asarray(item, dtype=np.float64)
        elif isinstance(value, np.ndarray) or isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = np.asarray(value, dtype=np.float64)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_micro_predicts_its_result_type(name):
    card = registry.get_card(name)
    model = registry.create_model(name, "micro", weights="random")
    items = _inputs_for(card, np.random.default_rng(0))
    out = model.predict(items)
    assert len(out) == 2
    assert all(isinstance(r, results.RESULT_TYPES[card.result_type]) for r in out)
    assert isinstance(out[0].to_json(), dict)
    picture = items[0].get(card.image_inputs[0].name) if isinstance(items[0], dict) and card.image_inputs else items[0]
    assert out[0].draw(picture).size[0] > 0
    # a batch of two equals the two run one by one, on each result type's own content
    first, second = model.predict(items[0]), model.predict(items[1], **({"seed": 1} if not card.inputs else {}))
    for batched, single in ((out[0], first), (out[1], second)):
        got, want = _content(batched), _content(single)
        assert got.keys() == want.keys() and got, f"{name}: nothing to compare in {type(batched).__name__}"
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1.01 if got[key].dtype == np.float64 and key.startswith("images") else 1e-4,
                                       err_msg=f"{name}: {key} differs between a batch and a single call")


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
