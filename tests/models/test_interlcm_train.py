"""InterLCM (issue #15): losses against hand values, a short training run whose loss falls, the micro base
stage, and the loaders (LCM diffusers folder, CLIP transformers folder, official BasicSR checkpoints) on tiny
random checkpoints written in those layouts."""

import json

import pytest
import torch
from training_loops import fit_one_batch

from zoo import registry
from zoo.models.interlcm import (
    BaseTrainable,
    BaseTrainConfig,
    InterLCMTrainable,
    InterLCMTrainConfig,
    PatchDiscriminator,
    hinge_discriminator_loss,
    hinge_generator_loss,
    load_official,
    restoration_losses,
)
from zoo.weights import WeightsError


def test_losses_against_hand_values():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    # mean relu(1 - real) = (0 + 0.5 + 2) / 3; mean relu(1 + fake) = (0 + 1 + 2.5) / 3
    assert float(hinge_discriminator_loss(real, fake)) == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert float(hinge_generator_loss(fake)) == pytest.approx(0.5 / 3)  # -mean(fake) = -(-2 + 0 + 1.5) / 3
    out, gt = torch.full((1, 3, 4, 4), 0.75), torch.full((1, 3, 4, 4), 0.25)
    terms = restoration_losses(out, gt, None, None)
    assert float(terms["l1"]) == pytest.approx(1.0)  # |0.5 - (-0.5)| in [-1, 1]
    assert float(terms["loss"]) == pytest.approx(1.0) and "gan" not in terms
    disc = PatchDiscriminator(ndf=8, n_layers=2)
    out = torch.rand(2, 3, 32, 32, requires_grad=True)
    terms = restoration_losses(out, torch.rand(2, 3, 32, 32), None, disc, gan=True)
    assert float(terms["loss"].detach()) == pytest.approx(float(terms["l1"]) + 0.1 * float(terms["gan"]), rel=1e-5)
    terms["loss"].backward()  # the generator's total reaches the output, never the discriminator
    assert out.grad is not None and all(p.grad is None for p in disc.parameters())
    terms["disc"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


@pytest.fixture(scope="module")
def pipeline():
    torch.manual_seed(0)
    return registry.create_model("interlcm", "micro", weights="random")


def test_interlcm_stage_loss_falls_and_trains_only_the_encoders(pipeline):
    from zoo.models.interlcm import build_task

    config = InterLCMTrainConfig(lr=1e-3, gan_start=8, perceptual="random", perceptual_weight=0.1, blur_sigma=(0.1, 2.0),
                                 downsample_range=(1.0, 4.0), eval_items=4)
    task = build_task(pipeline.model, "synthetic", config, seed=0, workdir=None)
    module = task.module
    assert isinstance(module, InterLCMTrainable)
    trainable = {n.split(".")[1] for n, p in module.named_parameters() if p.requires_grad and n.startswith("model.")}
    assert trainable == {"visual_encoder", "controlnet"}
    batch = {k: torch.stack([task.dataset[i][k] for i in range(2)]) for k in ("lq", "gt")}
    module.train()
    frozen = pipeline.model.unet.conv_in.weight.clone()
    losses = fit_one_batch(module, batch, torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3), 6, reseed=0)
    assert losses[-1] < losses[0]
    torch.testing.assert_close(pipeline.model.unet.conv_in.weight, frozen)
    assert int(module.step) == 6
    assert "gan" not in module.training_step(batch)  # iteration 7
    assert {"gan", "disc"} <= set(module.training_step(batch))  # iteration 8 = gan_start: the hinge GAN joins
    metrics = task.finalize(module)
    assert {"psnr", "ssim", "psnr_lq", "perceptual", "seconds_per_face"} <= set(metrics)


def test_base_stage_trains_the_vae_then_sets_the_scale_then_the_unet():
    from zoo.models.interlcm import build_base_task

    model = registry.create_model("interlcm", "micro", weights="random").model
    task = build_base_task(model, "synthetic", BaseTrainConfig(vae_steps=2, perceptual="random"), seed=0, workdir=None)
    module = task.module
    assert isinstance(module, BaseTrainable)
    batch = {k: torch.stack([task.dataset[i][k] for i in range(4)]) for k in ("lq", "gt")}
    first = module.training_step(batch)
    assert float(first["phase"]) == 0 and "kl" in first
    module.training_step(batch)
    third = module.training_step(batch)  # step index 2 == vae_steps: the scale is measured, the UNet trains
    assert float(third["phase"]) == 1
    with torch.no_grad():
        std = float(model.encode(batch["gt"]).std())
    assert std == pytest.approx(1.0, rel=1e-3)


def _micro_lcm_folder(model, root):
    """A tiny LCM_Dreamshaper_v7-style pipeline folder (unet/, vae/, model_index.json) and CLIP / official files."""
    from zoo.diffusion.interop import save_pipeline_folder

    model.vae.register_to_config(scaling_factor=0.5)
    save_pipeline_folder({"unet": model.unet, "vae": model.vae}, root / "lcm", pipeline_class="LatentConsistencyModelPipeline")
    model.clip.save_pretrained(root / "clip")
    torch.save({"params": {k: v * 0 for k, v in model.visual_encoder.state_dict().items()},
                "params_ema": model.visual_encoder.state_dict()}, root / "visual_encoder.pth")
    torch.save({"params_ema": model.controlnet.state_dict()}, root / "spatial_encoder.pth")


def test_loaders_for_lcm_clip_and_official_checkpoints(tmp_path):
    torch.manual_seed(3)
    source = registry.create_model("interlcm", "micro", weights="random").model
    with torch.no_grad():
        for p in source.controlnet.controlnet_down_blocks.parameters():
            p.normal_()  # a "trained" spatial encoder, distinguishable from a fresh copy
    _micro_lcm_folder(source, tmp_path)
    assert json.loads((tmp_path / "lcm" / "model_index.json").read_text())["_class_name"] == "LatentConsistencyModelPipeline"
    target = registry.create_model("interlcm", "micro", weights="random")
    loaded = load_official(target, lcm=tmp_path / "lcm", clip=tmp_path / "clip", visual_encoder=tmp_path / "visual_encoder.pth",
                           spatial_encoder=tmp_path / "spatial_encoder.pth")
    assert set(loaded) == {"unet", "vae", "clip", "visual_encoder", "controlnet"}
    for key, value in source.state_dict().items():
        if key != "latent_scale":
            torch.testing.assert_close(target.model.state_dict()[key], value, msg=key)
    assert float(target.model.latent_scale) == 0.5  # from vae/config.json's scaling_factor
    # a whole CLIPModel-style state with the vision_model. prefix and a text tower loads the same way
    from zoo.models.interlcm import clip_state

    prefixed = {f"vision_model.{k}": v for k, v in source.clip.state_dict().items()} | {"text_model.x": torch.zeros(1), "logit_scale": torch.zeros(())}
    assert set(clip_state(prefixed)) == set(source.clip.state_dict())
    # a pipeline folder through create_model: the CLIP as image_encoder/, the visual encoder missing -> a clear error
    import shutil

    shutil.copytree(tmp_path / "clip", tmp_path / "lcm" / "image_encoder")
    with pytest.raises(WeightsError, match="visual encoder"):
        registry.create_model("interlcm", "micro", weights=tmp_path / "lcm")
    # a wrong-sized checkpoint is refused, naming the part
    bad = {"params_ema": {"blocks.0.weight": torch.zeros(3, 3, 3)}}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="visual_encoder"):
        load_official(target, visual_encoder=tmp_path / "bad.pth")


def test_a_new_lcm_restarts_the_spatial_encoder_as_its_copy(tmp_path):
    torch.manual_seed(4)
    source = registry.create_model("interlcm", "micro", weights="random").model
    _micro_lcm_folder(source, tmp_path)
    target = registry.create_model("interlcm", "micro", weights="random")
    load_official(target, lcm=tmp_path / "lcm")
    control = target.model.controlnet
    torch.testing.assert_close(control.down_blocks.state_dict()["0.resnets.0.conv1.weight"], source.unet.down_blocks[0].resnets[0].conv1.weight)
    assert all(float(p.detach().abs().sum()) == 0 for p in control.controlnet_down_blocks.parameters())


def test_bench_arms_subset_reads_the_variants_recipe():
    """bench/interlcm.py's `--variant micro-128 --arms lq-2`: lq-4 always runs (the others are paired against it),
    the held-out faces come at the variant's crop size, degraded at its training ranges."""
    from zoo.bench.interlcm import ablation

    results = ablation([0], weights="random", faces=2, variant="micro-128", arms=["lq-2"])
    assert set(results["summary"]) == {"lq-4", "lq-2", "lq input"}
    assert set(results["paired"]) == {"lq-4 minus lq-2"}
    assert all(len(rows) == 1 for rows in results["per_seed"].values())
    assert "128px" in results["data"]
