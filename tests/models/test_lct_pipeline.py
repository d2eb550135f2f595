"""sLCT family end to end at micro size: the card, generation, graphs over ONNX Runtime, the
authors' checkpoint layout, the training stage and its sample-quality metrics."""

import numpy as np
import pytest
import torch

from zoo import registry
from zoo.models.lct import LatentConsistencyPipeline, sampling_sigmas
from zoo.models.lct.convert import convert_state_dict, load_official
from zoo.results import Generation


@pytest.fixture(scope="module")
def micro():
    return registry.create_model("lct", "micro", weights="random")


def test_card_is_a_prompt_free_generator():
    card = registry.get_card("lct")
    assert card.inputs == () and card.result_type == "Generation"
    assert {o.name for o in card.options} == {"seed", "steps", "count", "class_label"}
    assert card.option("class_label").choices == ("circle", "square", "triangle", "star", "ring", "hexagon")
    counts = registry.parameter_counts("lct", "adm")
    assert counts["denoiser"] == 151_587_844  # the authors' DhariwalUNet with train_lct.sh's arguments
    assert counts["codec"] == 83_653_863  # Stable Diffusion's VAE


def test_sampling_sigmas():
    assert sampling_sigmas(1) == [80.0]
    assert sampling_sigmas(2) == [80.0, 0.821]
    four = sampling_sigmas(4)
    assert len(four) == 4 and four[0] == pytest.approx(80.0) and all(a > b for a, b in zip(four, four[1:]))
    with pytest.raises(ValueError):
        sampling_sigmas(0)


def test_same_seed_same_image_whatever_the_batch(micro):
    one = micro.predict(None, seed=5, steps=2)
    batch = micro.predict([None] * 3, seed=4, steps=2)
    assert isinstance(one, Generation) and one.seeds == [5] and one.steps == 2
    np.testing.assert_array_equal(one.images[0], micro.predict(None, seed=5, steps=2).images[0])  # repeatable
    # in another batch: the same noise and class, so the same image up to float rounding (batched kernels)
    assert np.abs(one.images[0].astype(int) - batch[1].images[0].astype(int)).max() <= 1
    assert not np.array_equal(batch[0].images[0], batch[1].images[0])
    assert one.images[0].shape == (32, 32, 3)


def test_class_label_option(micro):
    out = micro.predict(None, seed=1, class_label="star")
    assert out.info["class_labels"] == [3] and out.info["class_names"] == ["star"]
    drawn = micro.predict(None, seed=0, count=12)  # unset: drawn from each image's seed
    assert len(drawn.images) == 12 and drawn.seeds == list(range(12))
    assert len(set(drawn.info["class_names"])) > 1
    assert set(drawn.info["class_names"]) <= set(registry.get_card("lct").option("class_label").choices)
    batch = micro.predict([None, None], seed=0, count=3)
    assert batch[1].seeds == [3, 4, 5]
    assert np.abs(batch[1].images[2].astype(int) - drawn.images[5].astype(int)).max() <= 1  # seed 5 in both
    with pytest.raises(ValueError, match="class_label"):
        micro.predict(None, class_label="dragon")


def test_steps_change_the_sample(micro):
    a, b = micro.predict(None, seed=2, steps=1), micro.predict(None, seed=2, steps=3)
    assert a.info["sigmas"] == [80.0] and len(b.info["sigmas"]) == 3
    assert not np.array_equal(a.images[0], b.images[0])


@pytest.mark.slow
def test_generation_over_onnxruntime_matches_torch(micro, tmp_path):
    """The sampling loop over exported graphs: same seed, same image within one uint8 level."""
    from zoo.export.onnx import export_onnx

    manifest = export_onnx(micro, tmp_path, exporter="torchscript")
    assert {"denoise", "decode", "encode"} <= set(manifest["graphs"])
    ort = registry.create_model("lct", "micro", weights="random")
    ort.load_state_dict(micro.state_dict())
    registry.attach_backend(ort, "onnxruntime", export_dir=tmp_path, check_weights=False)
    for steps in (1, 2):
        ours, theirs = micro.predict([None] * 3, seed=11, steps=steps), ort.predict([None] * 3, seed=11, steps=steps)
        for a, b in zip(ours, theirs):
            assert np.abs(a.images[0].astype(int) - b.images[0].astype(int)).max() <= 1


def _authors_checkpoint(pipeline: LatentConsistencyPipeline) -> dict:
    """The network's weights as the authors' training script saves them: under "ema" and
    "model", DDP's `module.` prefix, EDM's resample_filter buffers and NsLN's fixed unit weights."""
    net = {f"module.{k}": v.clone() for k, v in pipeline.model.denoiser.net.state_dict().items()}
    net["module.enc.8x8_down.resample_filter"] = torch.ones(1, 1, 2, 2) / 4
    net["module.out_norm2.weight"] = torch.ones(5)
    noise = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in net.items()}
    return {"ema": net, "model": noise, "step": torch.tensor(7)}


def test_authors_checkpoint_loads(micro, tmp_path):
    from zoo.weights import flatten_state

    source = registry.create_model("lct", "micro", weights="random")
    torch.manual_seed(3)
    for p in source.model.denoiser.parameters():
        p.data.normal_(0, 0.05)
    state = flatten_state(_authors_checkpoint(source))
    with pytest.raises(Exception, match="load_official"):
        convert_state_dict(state, source.config)  # no autoencoder inside: says what to do
    torch.save(_authors_checkpoint(source), tmp_path / "ckpt.pt")
    target = registry.create_model("lct", "micro", weights="random")
    load_official(target, tmp_path / "ckpt.pt", _vae_folder(source, tmp_path))
    x, sigma = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 0.5])
    labels = torch.tensor([0, 5])
    torch.testing.assert_close(target.run_graph("denoise", x, sigma, labels)[0], source.run_graph("denoise", x, sigma, labels)[0])
    assert bool(target.model.autoencoder_ready)


def _vae_folder(source, tmp_path):
    folder = tmp_path / "vae"
    source.model.codec.save_pretrained(folder)
    return folder


def test_training_stage_runs_and_scores_samples(tmp_path):
    """`zoo train lct` in-process: images -> frozen codec -> sLCT step; finalize reports FID etc."""
    from zoo.training.trainer import Trainer

    card = registry.get_card("lct")
    stage = card.train_stages["consistency"]
    pipeline = registry.build_pipeline("lct", "micro")
    config = stage.config_cls().override({"steps": "3", "batch_size": "4", "val_images": "24", "eval_samples": "24",
                                          "autoencoder": "keep", "log_every": "1", "ckpt_every": "0", "ema_decay": "0", "train_images": "32"})
    task = stage.build_task(pipeline.model, "synthetic", config, 0, tmp_path)
    result = Trainer(task, tmp_path / "run", seed=0, progress=False).fit()
    assert result.completed
    for key in ("fid_1step", "fid_2step", "precision_1step", "recall_2step"):
        assert np.isfinite(result.metrics[key]), key
    assert int(task.module.lct.step) == 3  # the curriculum's step counter advanced once an update
    assert not any(p.requires_grad for p in pipeline.model.codec.parameters())


def test_training_memory_estimate():
    from zoo.memory import training_memory

    with torch.device("meta"):
        adm = registry.build_pipeline("lct", "adm")
    small = training_memory(adm, "denoise", 1)
    big = training_memory(adm, "denoise", 8)
    assert small["weights"] == 151_587_844 * 4 and small["optimizer"] == 2 * small["weights"]
    assert big["activations"] > 7 * small["activations"] > 0
    assert big["total"] == sum(v for k, v in big.items() if k != "total")


def test_gradient_checkpointing_gives_the_same_gradients():
    from zoo.models.lct.model import build_model, preset_config
    from zoo.training.trainer import enable_checkpointing

    for preset in ("micro", "micro-dit"):
        torch.manual_seed(0)
        plain = build_model(preset_config(preset, num_classes=3)).train()
        ckpt = build_model(preset_config(preset, num_classes=3)).train()
        ckpt.load_state_dict(plain.state_dict())
        for p in plain.parameters():
            p.data.add_(torch.randn_like(p) * 0.01)  # leave the zero-initialised outputs
        ckpt.load_state_dict(plain.state_dict())
        assert enable_checkpointing(ckpt) >= 1
        x, sigma, labels = torch.randn(2, 4, 8, 8), torch.tensor([2.0, 0.3]), torch.tensor([0, 2])
        plain(x, sigma, labels).square().mean().backward()
        ckpt(x, sigma, labels).square().mean().backward()
        for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=name)
    with torch.device("meta"):
        adm = registry.build_pipeline("lct", "adm")
    from zoo.memory import training_memory

    full, saved = training_memory(adm, "denoise", 8), training_memory(adm, "denoise", 8, checkpointing=True)
    assert saved["activations"] < full["activations"] / 2


def test_training_without_a_trained_autoencoder_says_what_to_do(tmp_path):
    """The paper's variants sit on the SD VAE, which is not bundled (nor is micro-f8): the error names the flag."""
    card = registry.get_card("lct")
    stage = card.train_stages["consistency"]
    config = registry.variant_config("lct", "micro", {"autoencoder_variant": "micro-f8", "autoencoder": None, "image_size": 64})
    pipeline = registry.build_pipeline("lct", config=config)
    config = stage.config_cls().override({"train_images": "4", "val_images": "2"})
    with pytest.raises(ValueError, match="--set autoencoder=PATH"):
        stage.build_task(pipeline.model, "synthetic", config, 0, tmp_path)
