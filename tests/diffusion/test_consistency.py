"""zoo.diffusion.consistency: schedules and scalings against hand values, the samplers step for
step against diffusers' schedulers."""

import math

import pytest
import torch
from torch import nn

from zoo.diffusion.consistency import (
    ConsistencyParametrisation,
    adaptive_c,
    consistency_scalings,
    consistency_weights,
    discretisation_steps,
    edm_scalings,
    ict_c,
    karras_sigmas,
    lognormal_step_weights,
    loss_scale_c,
    noise_conditioning,
    sample_consistency,
    sample_diffusion,
    sample_step_indices,
)


class FakeNet(nn.Module):
    """A fixed nonlinear F(x_in, c_noise, class) whose output depends on both inputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x, noise_labels, class_labels=None):
        return torch.tanh(self.conv(x)) + 1e-3 * noise_labels.reshape(-1, 1, 1, 1).to(x.dtype)


# --------------------------------------------------------------------------- schedules


def test_karras_sigmas_hand_values():
    s = karras_sigmas(3)
    lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
    assert s.dtype == torch.float64
    assert s.tolist() == pytest.approx([80.0, ((lo + hi) / 2) ** 7, 0.002], rel=1e-12)
    assert karras_sigmas(1).tolist() == [80.0]
    s40 = karras_sigmas(40)
    assert (s40[1:] < s40[:-1]).all()
    with pytest.raises(ValueError):
        karras_sigmas(0)


def test_consistency_scalings_hand_values():
    sigma = torch.tensor([0.002, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in = consistency_scalings(sigma)
    # sigma = sigma_min: the boundary condition f(x, sigma_min) = x
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0
    # sigma = 1: c_skip = 0.25 / (0.998^2 + 0.25), c_out = 0.998 * 0.5 / sqrt(1.25), c_in = 1 / sqrt(1.25)
    assert c_skip[1].item() == pytest.approx(0.25 / (0.998 ** 2 + 0.25), rel=1e-12)
    assert c_skip[1].item() == pytest.approx(0.2006414104, rel=1e-9)
    assert c_out[1].item() == pytest.approx(0.4463196, rel=1e-6)
    assert c_in[1].item() == pytest.approx(0.8944272, rel=1e-6)
    # c_in keeps its square root (diffusers' iCT example bug: 1 / (sigma^2 + sigma_data^2))
    assert c_in[2].item() == pytest.approx(1 / math.sqrt(6400.25), rel=1e-12)
    # c_skip / c_out use sigma - sigma_min (the example's other bug uses sigma)
    assert c_out[2].item() == pytest.approx(79.998 * 0.5 / math.sqrt(6400.25), rel=1e-12)
    e_skip, e_out, e_in = edm_scalings(sigma)
    assert e_skip[1].item() == pytest.approx(0.2) and e_out[1].item() == pytest.approx(0.5 / math.sqrt(1.25))
    assert torch.equal(e_in, c_in)


def test_scalings_and_noise_labels_match_diffusers():
    from diffusers import CMStochasticIterativeScheduler

    sched = CMStochasticIterativeScheduler(clip_denoised=False)
    sigma = karras_sigmas(40)
    ref_skip, ref_out = sched.get_scalings_for_boundary_condition(sigma)
    c_skip, c_out, c_in = consistency_scalings(sigma)
    torch.testing.assert_close(c_skip, ref_skip, rtol=1e-12, atol=0)
    torch.testing.assert_close(c_out, ref_out, rtol=1e-12, atol=0)
    torch.testing.assert_close(noise_conditioning(sigma), torch.from_numpy(sched.sigma_to_t(sigma.numpy())),
                               rtol=1e-12, atol=1e-12)


def test_parametrisation_boundary_and_edm():
    net = FakeNet()
    x = torch.randn(3, 2, 5, 5)
    f = ConsistencyParametrisation(net)
    assert torch.equal(f(x, torch.full((3,), 0.002)), x)  # f(x, sigma_min) = x whatever F is
    sigma = torch.tensor([0.5, 2.0, 30.0])
    c_skip, c_out, c_in = consistency_scalings(sigma)
    expected = c_skip.view(-1, 1, 1, 1) * x + c_out.view(-1, 1, 1, 1) * net(c_in.view(-1, 1, 1, 1) * x,
                                                                              250 * torch.log(sigma))
    torch.testing.assert_close(f(x, sigma), expected)
    # a scalar sigma broadcasts over the batch
    torch.testing.assert_close(f(x, torch.tensor(2.0)), f(x, torch.full((3,), 2.0)))
    g = ConsistencyParametrisation(net, boundary=False)
    assert not torch.allclose(g(x, torch.full((3,), 0.002)), x)


# --------------------------------------------------------------------------- curriculum


def test_discretisation_curriculum():
    # K = 700: K' = floor(700 / (log2(64) + 1)) = 100
    values = {k: discretisation_steps(k, 700) for k in (0, 99, 100, 199, 200, 300, 400, 500, 600, 699, 10 ** 6)}
    assert values == {0: 11, 99: 11, 100: 21, 199: 21, 200: 41, 300: 81, 400: 161, 500: 321, 600: 641,
                      699: 641, 10 ** 6: 641}
    # K = 1000: K' = floor(1000 / 7) = 142
    assert [discretisation_steps(k, 1000) for k in (141, 142, 284, 852)] == [11, 21, 41, 641]
    assert discretisation_steps(3, 5) == 81  # K' floors to 0: one step a stage
    assert discretisation_steps(0, 100, s0=2, s1=150) == 3


def test_lognormal_weights_hand_values():
    sigmas = karras_sigmas(3)
    p = lognormal_step_weights(sigmas)
    cdf = [math.erf((math.log(s) + 1.1) / (math.sqrt(2) * 2.0)) for s in sigmas.tolist()]
    mass = [cdf[0] - cdf[1], cdf[1] - cdf[2]]
    assert p.tolist() == pytest.approx([m / sum(mass) for m in mass], rel=1e-12)
    p11 = lognormal_step_weights(karras_sigmas(11))
    assert len(p11) == 10 and p11.sum().item() == pytest.approx(1.0) and (p11 > 0).all()
    draws = sample_step_indices(p11, 20000, torch.Generator().manual_seed(0))
    assert draws.min() >= 0 and draws.max() <= 9
    freq = torch.bincount(draws, minlength=10).double() / 20000
    assert torch.allclose(freq, p11, atol=0.015)


def test_consistency_weights_and_c():
    sigmas = karras_sigmas(11)
    w = consistency_weights(sigmas)
    assert w.tolist() == pytest.approx([1 / (a - b) for a, b in zip(sigmas.tolist(), sigmas.tolist()[1:])])
    assert ict_c(4 * 32 * 32) == pytest.approx(0.0345600, rel=1e-6)
    listed = {21: 0.0136, 41: 0.0061, 81: 0.0028, 161: 0.0012, 321: 0.00056, 641: 0.00025}  # MODELS.md
    for n, value in listed.items():
        assert adaptive_c(n) == pytest.approx(math.exp(-1.15 * math.log(n - 1) - 0.85), rel=1e-12)
        assert adaptive_c(n) == pytest.approx(value, rel=0.04)
    assert loss_scale_c(11, 4096) == ict_c(4096)  # first stage keeps iCT's c
    assert loss_scale_c(21, 4096) == adaptive_c(21)
    assert loss_scale_c(641, 4096, adaptive=False) == ict_c(4096)


# --------------------------------------------------------------------------- samplers


def _recording(denoise, record):
    def wrapped(x, sigma):
        record.append((x.clone(), sigma.clone()))
        return denoise(x, sigma)
    return wrapped


@pytest.mark.parametrize("indices", [[0], [0, 22], [0, 9, 19, 39]])
def test_sample_consistency_matches_diffusers_step_for_step(indices):
    from diffusers import CMStochasticIterativeScheduler

    net = FakeNet()
    f = ConsistencyParametrisation(net)
    shape = (2, 2, 6, 6)
    sigmas = karras_sigmas(40)[indices].tolist()
    ours: list = []
    out = sample_consistency(_recording(f, ours), shape, sigmas, torch.Generator().manual_seed(7))

    # diffusers: its custom timesteps are indices into its 40-level grid given in descending
    # order, and it reverses them into the ramp (ramp = reversed(timesteps) / 39)
    sched = CMStochasticIterativeScheduler(num_train_timesteps=40, clip_denoised=False)
    sched.set_timesteps(timesteps=sorted(indices, reverse=True))
    torch.testing.assert_close(sched.sigmas[:-1].double(), torch.tensor(sigmas, dtype=torch.float64),
                               rtol=1e-6, atol=0)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=gen) * sched.init_noise_sigma
    theirs = []
    for t in sched.timesteps:
        theirs.append(x.clone())
        scaled = sched.scale_model_input(x, t)
        model_out = net(scaled, t.float().expand(shape[0]))
        x = sched.step(model_out, t, x, generator=gen).prev_sample
    assert len(ours) == len(theirs) == len(indices)
    for (mine, sigma), ref, s in zip(ours, theirs, sigmas):
        assert torch.allclose(sigma, torch.full((shape[0],), s, dtype=torch.float32))
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


def test_sample_consistency_one_step_and_checks():
    f = ConsistencyParametrisation(FakeNet())
    z = torch.randn(2, 2, 4, 4)
    out = sample_consistency(f, z.shape, [80.0], noise=z)
    torch.testing.assert_close(out, f(80.0 * z, torch.full((2,), 80.0)))
    with pytest.raises(ValueError):
        sample_consistency(f, z.shape, [1.0, 2.0])
    with pytest.raises(ValueError):
        sample_consistency(f, z.shape, [])


def test_sample_diffusion_euler_matches_diffusers_edm_euler():
    from diffusers import EDMEulerScheduler

    net = FakeNet()
    denoise = ConsistencyParametrisation(net, boundary=False)
    shape, n = (2, 2, 5, 5), 6
    sched = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, prediction_type="epsilon")
    sched.set_timesteps(num_inference_steps=n)
    sigmas = karras_sigmas(n)
    torch.testing.assert_close(sched.sigmas[:-1].double(), sigmas, rtol=1e-6, atol=0)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    ours: list = []
    out = sample_diffusion(_recording(denoise, ours), shape, sigmas.tolist(), method="euler", noise=z)
    x = z * sigmas[0].float()
    theirs = []
    for t in sched.timesteps:
        theirs.append(x.clone())
        scaled = sched.scale_model_input(x, t)
        model_out = net(scaled, (1000 * t).float().expand(shape[0]))  # their c_noise is 0.25 ln sigma
        x = sched.step(model_out, t, x).prev_sample
    assert len(ours) == n
    for (mine, _), ref in zip(ours, theirs):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-4)


def _gaussian_denoiser(sigma_data):
    """The ideal denoiser for N(0, sigma_data^2) data: D(x, sigma) = x sigma_data^2 / (sigma^2 + sigma_data^2)."""
    def denoise(x, sigma):
        s = sigma.double().view(-1, 1, 1, 1)
        return (x.double() * sigma_data ** 2 / (s ** 2 + sigma_data ** 2)).to(x.dtype)
    return denoise


def test_sample_diffusion_heun_hand_step_and_convergence():
    sd = 0.5
    denoise = _gaussian_denoiser(sd)
    z = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    s0, s1 = 2.0, 0.5
    out = sample_diffusion(denoise, z.shape, [s0, s1], method="heun", noise=z, dtype=torch.float64)
    # hand: d(x, s) = x (1 - a(s)) / s with a(s) = sd^2 / (s^2 + sd^2) = x s / (s^2 + sd^2)
    slope = lambda x, s: x * s / (s ** 2 + sd ** 2)  # noqa: E731
    x = z * s0
    d = slope(x, s0)
    euler = x + (s1 - s0) * d
    x = x + (s1 - s0) * 0.5 * (d + slope(euler, s1))
    x = x + (0.0 - s1) * slope(x, s1)  # last step to 0: Euler
    torch.testing.assert_close(out, x)
    # The probability-flow ODE of Gaussian data has x(0) = x(s0) sd / sqrt(s0^2 + sd^2)
    sigmas = karras_sigmas(40).tolist()
    exact = z * sigmas[0] * sd / math.sqrt(sigmas[0] ** 2 + sd ** 2)
    err = {m: (sample_diffusion(denoise, z.shape, sigmas, method=m, noise=z, dtype=torch.float64) - exact).abs().max()
           for m in ("euler", "heun")}
    assert err["heun"] < 0.2 * err["euler"]
    assert err["heun"] < 1e-2 * exact.abs().max()
    with pytest.raises(ValueError):
        sample_diffusion(denoise, z.shape, [1.0], method="dpm")


def test_per_image_noise_makes_samples_batch_independent():
    """draw_noise with one generator per image: an image is the same alone or in a batch."""
    f = ConsistencyParametrisation(FakeNet())
    shape = (2, 5, 5)

    def sample(seeds, sampler, sigmas):
        gens = [torch.Generator().manual_seed(s) for s in seeds]

        def draw(_shape):
            return torch.stack([torch.randn(shape, generator=g) for g in gens])
        return sampler(f, (len(seeds), *shape), sigmas, draw_noise=draw)

    for sampler, sigmas in ((sample_consistency, [80.0, 0.8, 0.05]), (sample_diffusion, [80.0, 5.0, 0.5])):
        both = sample([3, 4], sampler, sigmas)
        torch.testing.assert_close(both[1:], sample([4], sampler, sigmas), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(both[:1], sample([3], sampler, sigmas), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(both[0], both[1])
