import numpy as np
import pytest
import torch

from zoo import registry
from zoo.registry import OptionSpec


def test_duplicate_name_is_an_error(toy_model):
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(toy_model)(lambda config: None)


def test_unknown_name_lists_close_matches(toy_model):
    with pytest.raises(KeyError, match="did you mean toy-anomaly"):
        registry.get_card("toy-anomaly2")


def test_list_models_filters_by_task(toy_model):
    names = [c.name for c in registry.list_models("anomaly-detection")]
    assert "toy-anomaly" in names
    assert registry.list_models("no-such-task") == []


def test_parameter_counts_on_meta_device(toy_model):
    counts = registry.parameter_counts("toy-anomaly", "micro")
    assert counts == {"total": 117, "encoder": 112, "head": 5}
    assert counts["total"] == toy_model.variants["micro"].paper_params["total"]


def test_create_model_random_and_predict(toy_model):
    model = registry.create_model("toy-anomaly", weights="random")
    result = model.predict(np.zeros((20, 30, 3), np.uint8), threshold=0.1)
    assert result.map.shape == (16, 16)
    assert isinstance(result.score, float)
    batch = model.predict([np.zeros((8, 8), np.uint8)] * 3)
    assert len(batch) == 3


def test_unknown_variant_and_option(toy_model):
    with pytest.raises(KeyError, match="no variant 'xl'"):
        registry.create_model("toy-anomaly", variant="xl", weights="random")
    model = registry.create_model("toy-anomaly", weights="random")
    with pytest.raises(ValueError, match="no option 'tresh'"):
        model.predict(np.zeros((8, 8, 3), np.uint8), tresh=1)
    with pytest.raises(ValueError, match=">= 0.0"):
        model.predict(np.zeros((8, 8, 3), np.uint8), threshold=-1)


def test_option_spec_parsing():
    spec = OptionSpec("steps", "int", 4, minimum=1, maximum=10)
    assert spec.parse("7") == 7
    with pytest.raises(ValueError, match="expects int"):
        spec.parse("seven")
    with pytest.raises(ValueError, match="<= 10"):
        spec.parse(11)
    assert OptionSpec("flag", "bool", False).parse("true") is True
    with pytest.raises(ValueError, match="one of"):
        OptionSpec("task", "str", "a", choices=("a", "b")).parse("c")


def test_graph_runner_swap(toy_model):
    model = registry.create_model("toy-anomaly", weights="random")
    image = torch.rand(2, 3, 16, 16)
    torch_out = model.run_graph("toy", image)
    model.set_runner("toy", lambda x: (torch.zeros(x.shape[0], 1, 16, 16), torch.full((x.shape[0],), 7.0)))
    assert model.run_graph("toy", image)[1].tolist() == [7.0, 7.0]
    model.set_runner("toy", None)
    assert torch.equal(model.run_graph("toy", image)[1], torch_out[1])
    with pytest.raises(KeyError, match="no graph"):
        model.set_runner("nope", None)


def test_unknown_backend_is_a_clear_error(toy_model):
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        registry.create_model("toy-anomaly", weights="random", backend="tpu")


def test_card_json_has_params(toy_model):
    document = toy_model.to_json(with_params=True)
    assert document["variants"]["micro"]["params"]["total"] == 117
    assert document["variants"]["micro"]["config"] == {"width": 4, "image_size": 16}


def test_variant_without_weights_is_refused_unless_random_is_asked_for(toy_model):
    with pytest.raises(registry.MissingWeightsError, match=r"toy-anomaly/micro has no bundled weights.*weights='random'.*--random-weights"):
        registry.create_model("toy-anomaly")
    assert isinstance(registry.MissingWeightsError("x"), ValueError)  # callers that catch ValueError keep working
    assert registry.create_model("toy-anomaly", weights="random").variant == "micro"


def test_backend_options_nobody_takes_are_refused(toy_model):
    with pytest.raises(TypeError, match="export_dir"):
        registry.create_model("toy-anomaly", weights="random", export_dir="exports")  # meant for onnxruntime
    registry.create_model("toy-anomaly", weights="random", fast=False)  # torch's own switch


def test_cuda_reports_the_backend_that_runs(toy_model, monkeypatch):
    """device="cuda": the fp16 CUDA-graph path says "torch-cuda"; fast=False, eager fp32, says "torch"."""
    from zoo.pipeline import Pipeline

    attached = []

    class EntryPoint:
        def load(self):
            return lambda pipeline, **options: attached.append(options)

    monkeypatch.setattr(registry, "available_backends", lambda: {"torch-cuda": EntryPoint()})
    monkeypatch.setattr(Pipeline, "to", lambda self, device: self)  # no GPU here: stay on CPU
    fast = registry.create_model("toy-anomaly", weights="random", device="cuda", mode="autocast")
    assert fast.backend == "torch-cuda" and attached == [{"device": "cuda", "mode": "autocast"}]
    eager = registry.create_model("toy-anomaly", weights="random", device="cuda", fast=False)
    assert eager.backend == "torch" and len(attached) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_backend_on_a_gpu(toy_model):
    model = registry.create_model("toy-anomaly", weights="random", device="cuda")
    assert model.backend == "torch-cuda"
    result = model.predict(np.zeros((20, 30, 3), np.uint8))
    assert np.isfinite(result.score)


def test_families_are_discovered_without_a_list():
    """Every package under zoo/models registers by being there (no list to edit)."""
    from pathlib import Path

    import zoo.models
    from zoo.registry import family_modules

    folders = {p.name for p in Path(zoo.models.__path__[0]).iterdir() if (p / "__init__.py").exists()}
    assert {m.rsplit(".", 1)[-1] for m in family_modules()} >= folders
    assert "zoo.models.lct" in family_modules()
