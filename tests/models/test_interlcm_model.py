"""InterLCM (issue #15): parameter counts, the Visual Encoder's official layout, LCM's schedule and step against
diffusers' LCMScheduler, the Spatial Encoder built from a UNet with the guidance embedding, the chain with the
LQ latent as step 1's x0 estimate."""

import pytest
import torch
from diffusers import ControlNetModel, LatentConsistencyModelPipeline, LCMScheduler

from zoo import registry
from zoo.models.interlcm import (
    CLIP_B16_PARAMS,
    SD15_CONTROLNET_PARAMS,
    SD15_UNET_PARAMS,
    SD_VAE_PARAMS,
    InterLCMModel,
    VisualEncoder,
    guidance_embedding,
    lcm_timesteps,
    micro_config,
    spatial_encoder_from_unet,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InterLCMModel(micro_config()).eval()


def test_paper_size_components_counted_on_meta():
    counts = registry.parameter_counts("interlcm", "sd15")
    assert counts["unet"] == SD15_UNET_PARAMS == 859_602_884
    assert counts["vae"] == SD_VAE_PARAMS == 83_653_863
    assert counts["clip"] == CLIP_B16_PARAMS == 85_799_424
    assert counts["controlnet"] == SD15_CONTROLNET_PARAMS
    # the official VisualEncoder(nf=64, emb_dim=197, ch_mult=[2, 4, 8], res_blocks=2): 197 CLIP tokens of 768 -> 77
    with torch.device("meta"):
        encoder = VisualEncoder(197, 768, 64, (2, 4, 8), 2, 32)
    names = list(encoder.state_dict())
    assert names[:2] == ["blocks.0.weight", "blocks.0.bias"] and "blocks.1.conv.weight" in names
    assert "blocks.3.q.weight" in names and "blocks.2.norm1.weight" in names  # res-attn-res after the first upsample
    lengths = [m.length for m in encoder.blocks if hasattr(m, "length")]
    assert lengths == [256, 512, 768]  # the official up_size {768: 256, 256: 512, 512: 768}
    assert encoder.blocks[-1].out_channels == 77


def test_visual_module_gives_77_prompt_tokens(model):
    prompt = model.prompt(torch.rand(2, 3, 64, 64))
    assert prompt.shape == (2, 77, 48)
    # every CLIP token after post_layernorm enters: changing one patch changes the prompt
    a = torch.rand(1, 3, 64, 64)
    b = a.clone()
    b[:, :, :16, :16] = 0
    assert not torch.allclose(model.prompt(a), model.prompt(b))


def test_lcm_timesteps_and_guidance_embedding_match_diffusers():
    cfg = micro_config()
    assert lcm_timesteps(cfg, 4) == [999, 759, 499, 259]
    assert lcm_timesteps(cfg, 2) == [999, 499]
    w = torch.tensor([7.0, 2.5])
    want = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=32)
    torch.testing.assert_close(guidance_embedding(w, 32), want)


def test_denoise_and_renoise_are_lcm_scheduler_steps(model):
    """x0 with c_skip / c_out (Eq. 7 of LCM) and the re-noising, against diffusers' LCMScheduler.step."""
    sched = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", original_inference_steps=50)
    sched.set_timesteps(4)
    torch.manual_seed(1)
    x, lq, prompt = torch.randn(2, 4, 16, 16), torch.rand(2, 3, 64, 64), torch.randn(2, 77, 48)
    t = 759
    with torch.no_grad():
        down, mid = model.controlnet(x, t, encoder_hidden_states=prompt, controlnet_cond=lq * 2 - 1, return_dict=False)
        eps = model.unet(x, t, encoder_hidden_states=prompt, timestep_cond=model.guidance_emb.expand(2, -1),
                         down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        ours = model.denoise(x, torch.full((2,), t), prompt, lq)
    sched._step_index = 1  # the step at t = 759
    gen = torch.Generator().manual_seed(5)
    prev, denoised = sched.step(eps, t, x, generator=gen, return_dict=False)
    torch.testing.assert_close(ours, denoised, rtol=1e-5, atol=1e-5)
    noise = torch.randn(eps.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(model.renoise(denoised, 499, noise), prev, rtol=1e-5, atol=1e-5)


def test_spatial_encoder_from_a_unet_with_guidance_embedding(model):
    with pytest.raises(RuntimeError, match="cond_proj"):
        ControlNetModel.from_unet(model.unet)  # why we build it ourselves
    control = spatial_encoder_from_unet(model.unet, (16, 32, 64))
    assert control.time_embedding.cond_proj is None
    torch.testing.assert_close(control.down_blocks[0].resnets[0].conv1.weight, model.unet.down_blocks[0].resnets[0].conv1.weight)
    assert all(float(p.detach().abs().sum()) == 0 for p in control.controlnet_down_blocks.parameters())
    # zero convolutions: at the start the UNet's output is the plain LCM's
    x, prompt, lq = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 48), torch.rand(1, 3, 64, 64)
    t = torch.tensor([499])
    with torch.no_grad():
        plain = model.unet(x, t, encoder_hidden_states=prompt, timestep_cond=model.guidance_emb).sample
        down, mid = control(x, t, encoder_hidden_states=prompt, controlnet_cond=lq, return_dict=False)
        steered = model.unet(x, t, encoder_hidden_states=prompt, timestep_cond=model.guidance_emb,
                             down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    torch.testing.assert_close(plain, steered)


def test_chain_starts_from_the_lq_latent(model):
    lq = torch.rand(2, 3, 64, 64)
    prompt = model.prompt(lq)
    calls = []
    handle = model.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            one = model.restore_latents(lq, prompt, [], steps=1)
            torch.testing.assert_close(one, model.encode(lq))  # one step: the LQ latent is the answer
            noises = [torch.randn(2, 4, 16, 16) for _ in range(4)]
            calls.clear()
            model.restore_latents(lq, prompt, noises[:3], steps=4)
            assert len(calls) == 3  # t1, t2, t3: the LQ latent stands in for the UNet call at t0
            calls.clear()
            model.restore_latents(lq, prompt, noises, steps=4, start="noise")
            assert len(calls) == 4
    finally:
        handle.remove()


def test_micro_128_is_the_micro_at_twice_the_crop(model):
    """micro-128 (issue #15) holds the micro's networks: the micro's weights load strictly and a 128-px crop
    comes back at 128 px, through 32 x 32 latents."""
    big = InterLCMModel(micro_config(image_size=128)).eval()
    big.load_state_dict(model.state_dict(), strict=True)
    assert registry.parameter_counts("interlcm", "micro-128") == registry.parameter_counts("interlcm", "micro")
    lq = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert big.encode(lq).shape == (1, 4, 32, 32)
        restored = big.decode(big.restore_latents(lq, big.prompt(lq), [torch.randn(1, 4, 32, 32) for _ in range(3)], steps=4))
    assert restored.shape == (1, 3, 128, 128) and torch.isfinite(restored).all()
