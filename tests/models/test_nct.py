"""NCT (issue #13): controls, the zero-initialised adapter, the losses of Algorithm 1 against hand
values, training on noise alone (no image read), the pipeline, and the diffusers base."""

import math

import numpy as np
import pytest
import torch
from training_loops import fit_one_batch

from zoo import registry
from zoo.models.nct import (
    NCTConfig,
    NCTTrainable,
    NCTTrainConfig,
    build_task,
    canny_edges,
    colour_layout,
    control_consistency,
    dual_update,
    low_resolution,
    nct_losses,
    noisy_point,
)
from zoo.models.nct.loss import distance


def _square(size=32):
    image = torch.zeros(1, 3, size, size)
    image[:, :, 8:24, 8:24] = 1.0
    return image


def test_canny_finds_the_square_outline_and_nothing_else():
    edges = canny_edges(_square())[0, 0]
    assert edges[16, 7:10].any() and edges[7:10, 16].any()  # left and top borders
    assert edges[14:18, 14:18].sum() == 0 and edges[0:4, 0:4].sum() == 0  # inside and far outside: no edge
    assert set(edges.unique().tolist()) <= {0.0, 1.0}


def test_lowres_is_the_block_mean_and_colour_layout_is_posterised():
    image = torch.rand(2, 3, 32, 32)
    low = low_resolution(image)
    assert torch.allclose(low[:, :, 0, 0], image[:, :, :8, :8].mean((-1, -2)), atol=1e-6)
    assert torch.equal(low[:, :, 3, 5], low[:, :, 0, 0])  # one value a block
    layout = colour_layout(image)
    assert set((layout * 3).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    with pytest.raises(ValueError, match="divisible by 8"):
        low_resolution(torch.rand(1, 3, 30, 30))


def test_consistency_is_zero_for_the_source_and_positive_for_another_image():
    image = _square()
    for kind, extract in (("canny", canny_edges), ("lowres", low_resolution), ("colour", colour_layout)):
        control = extract(image)
        assert float(control_consistency(kind, control, image)) == 0.0
        assert float(control_consistency(kind, control, torch.roll(image, (6, 6), (-2, -1)))) > 0.02


def test_noise_space_path_and_hand_values():
    z, eps = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.allclose(noisy_point(z, eps, torch.zeros(4)), z)
    assert torch.allclose(noisy_point(z, eps, torch.ones(4)), eps, atol=1e-6)
    t = torch.full((4,), 0.5)
    assert torch.allclose(noisy_point(z, eps, t), math.cos(math.pi / 4) * z + math.sin(math.pi / 4) * eps)
    big = noisy_point(torch.randn(20000, 8), torch.randn(20000, 8), torch.full((20000,), 0.3))
    assert abs(float(big.var()) - 1.0) < 0.03  # z_t stays N(0, I)
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    assert float(distance(a, b)) == pytest.approx(2.5)
    assert float(distance(a, b, "pseudo-huber", c=1.0)) == pytest.approx(math.sqrt(5 + 1) - 1)
    assert dual_update(1.0, 0.3, 0.1, 2.0) == pytest.approx(1.4)
    assert dual_update(0.1, 0.0, 0.1, 2.0) == 0.0  # projected onto lambda >= 0


class _Linear(torch.nn.Module):
    """generate(z, c) = w * z + c: the losses by hand."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0))

    def generate(self, z, control, labels=None):
        return self.w * z + control


def test_nct_losses_match_hand_values_and_the_target_carries_no_gradient():
    model = _Linear()
    z, eps, c = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    k = torch.tensor([0, 1, 3])
    base = torch.randn(3, 5)
    out = nct_losses(model, z, eps, k, c, base, levels=4)
    t0, t1 = k.float() / 4, (k.float() + 1) / 4
    z0, z1 = noisy_point(z, eps, t0), noisy_point(z, eps, t1)
    assert float(out["consistency"].detach()) == pytest.approx(float(((2 * z1 - 2 * z0) ** 2).mean()), rel=1e-5)
    assert float(out["boundary"].detach()) == pytest.approx(float(((2 * z + c - base) ** 2).mean()), rel=1e-5)
    out["consistency"].backward()
    by_hand = (2 * (2 * z1 - 2 * z0) * z1).mean()  # d/dw of mean((w z1 - sg[w z0])^2): the target is constant
    assert float(model.w.grad) == pytest.approx(float(by_hand), rel=1e-4)


@pytest.fixture(scope="module")
def micro():
    return registry.create_model("nct-canny", "micro", weights="random")


def test_zero_initialised_adapter_leaves_the_base_unchanged(micro):
    model = micro.model
    z = torch.randn(2, *model.noise_shape)
    control = canny_edges(torch.rand(2, 3, 32, 32))
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        assert torch.equal(model.generate(z, control, labels), model.base_generate(z, labels))
        residuals = model.adapter(z, torch.zeros(2), labels, control)
    assert len(residuals) == len(model.base.net.enc) + 1 and all(float(r.abs().max()) == 0 for r in residuals)
    with pytest.raises(ValueError, match="residuals"):
        model.base.net(z, torch.zeros(2), labels, control=residuals[:-1])


def test_training_reads_no_image_and_the_loss_falls(monkeypatch):
    from zoo.data import generation

    def refuse(*_args, **_kwargs):
        raise AssertionError("NCT read an image dataset")

    monkeypatch.setattr(generation.ClassImageSet, "__getitem__", refuse)
    monkeypatch.setattr(generation.ImageFolderSet, "__getitem__", refuse)
    monkeypatch.setattr("zoo.imageio.load_image", refuse)
    model = registry.create_model("nct-canny", "micro", weights="random").model
    config = NCTTrainConfig(levels=4, lr=1e-3, base="registry", xi=0.0, eta=1.0)  # the bundled lct micro: a random base is constant
    task = build_task(model, "synthetic", config, seed=0, workdir=None)
    module = task.module.train()
    batch = torch.utils.data.default_collate([task.dataset[i] for i in range(8)])
    # make the pair far apart so there is something to learn in a few steps
    batch["k"] = torch.full((8,), 3)
    params = [p for p in module.parameters() if p.requires_grad]
    assert params and all(name.startswith("model.adapter.") for name, p in module.named_parameters() if p.requires_grad)
    losses = fit_one_batch(module, batch, torch.optim.Adam(params, lr=1e-3), steps=12)
    assert losses[-1] < 0.8 * losses[0], losses
    assert float(module.lam) > 1.0  # boundary above xi = 0: the dual step raised lambda


def test_ablation_switches():
    model = registry.create_model("nct-lowres", "micro", weights="random").model
    batch = {"noise": torch.randn(2, *model.noise_shape), "eps": torch.randn(2, *model.noise_shape),
             "k": torch.tensor([1, 2]), "label": torch.tensor([0, 1])}
    fixed = NCTTrainable(model, NCTTrainConfig(primal_dual=False, lambda_init=0.5)).train()
    out = fixed.training_step(batch)
    assert float(fixed.lam) == 0.5 and float(out["loss"].detach()) == pytest.approx(float(out["consistency"] + 0.5 * out["boundary"]))
    no_bound = NCTTrainable(model, NCTTrainConfig(boundary_loss=False)).training_step(batch)
    assert float(no_bound["boundary"]) == 0.0 and float(no_bound["loss"]) == float(no_bound["consistency"])
    with pytest.raises(ValueError, match="at least one"):
        NCTTrainConfig(consistency_loss=False, boundary_loss=False)
    with pytest.raises(ValueError, match="without images"):
        build_task(model, "/some/folder", NCTTrainConfig(base="keep"), 0, None)


def test_pipeline_returns_a_generation_with_its_control(micro):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    out = micro.predict(picture, seed=5, count=3)
    assert len(out.images) == 3 and out.seeds == [5, 6, 7] and out.images[0].shape == (32, 32, 3)
    assert out.condition.shape == (32, 32, 3) and set(np.unique(out.condition)) <= {0, 255}  # a binary edge map
    assert out.draw().size == (4 * 32, 32)  # the control first, then the images, in one row
    assert "condition_png_base64" in out.to_json() and out.to_json(include_images=False).get("condition_png_base64") is None
    alone = micro.predict(picture, seed=6, count=1)
    assert np.abs(alone.images[0].astype(int) - out.images[1]).max() <= 1  # each image its own noise (within a uint8 level)
    edges = np.zeros((32, 32, 3), np.uint8)
    edges[8:24, 8] = 255
    given = micro.predict(edges, extract=False, count=1)
    assert np.array_equal(given.condition, edges)
    with pytest.raises(ValueError, match="needs an image"):
        micro.predict(None)
    # the base's class follows the picture (zoo's shapes classifier) unless asked for
    star = micro.predict("zoo/models/nct/examples/star.png", count=2)
    assert star.info["class_names"] == ["star", "star"] and star.info["class_from"] == "picture"
    assert micro.predict("zoo/models/nct/examples/star.png", class_label="ring", count=1).info["class_names"] == ["ring"]


TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                 cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4)


def test_diffusers_base_loads_from_a_pipeline_folder_and_trains(tmp_path):
    from diffusers import UNet2DConditionModel

    from zoo.diffusion.autoencoder import build_autoencoder, preset_config
    from zoo.models.nct import DiffusersControlModel, NCTPipeline
    from zoo.registry import get_card
    from zoo.weights import load_weights

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET)
    unet.save_pretrained(tmp_path / "unet")
    build_autoencoder(preset_config("micro-f4")).save_pretrained(tmp_path / "vae")
    config = NCTConfig(control="canny", base="diffusers", unet=dict(TINY_UNET), autoencoder_variant="micro-f4",
                       image_size=32, hint_channels=(16, 32, 32))
    pipeline = NCTPipeline(DiffusersControlModel(config), config)
    pipeline.card = get_card("nct-canny")
    load_weights(pipeline, tmp_path)  # what create_model(..., weights=FOLDER) does: read_state + the card's converter
    model = pipeline.model
    assert torch.equal(model.unet.conv_in.weight, unet.conv_in.weight)
    assert torch.equal(model.adapter.conv_in.weight, unet.conv_in.weight)  # ControlNet starts as a copy of the UNet
    z = torch.randn(2, *model.noise_shape)
    control = canny_edges(torch.rand(2, 3, 32, 32))
    with torch.no_grad():
        assert torch.allclose(model.generate(z, control), model.base_generate(z))  # zero convs: the base's output
    trainable = NCTTrainable(model, NCTTrainConfig(levels=4)).train()
    batch = {"noise": z, "eps": torch.randn_like(z), "k": torch.tensor([3, 3]), "label": torch.zeros(2, dtype=torch.long)}
    out = trainable.training_step(batch)
    out["loss"].backward()
    assert math.isfinite(float(out["loss"])) and model.adapter.controlnet_mid_block.weight.grad.abs().sum() > 0
    assert model.unet.conv_in.weight.grad is None  # the base stays frozen
    result = pipeline.predict(np.zeros((32, 32, 3), np.uint8), seed=1)
    assert result.images[0].shape == (32, 32, 3)


def test_sd15_counts_match_diffusers():
    counts = registry.parameter_counts("nct-canny", "sd15")
    assert counts["unet"] == 859_520_964 and counts["adapter"] == 361_279_120 and counts["codec"] == 83_653_863
