"""The theory suite of bench/seabird.py: Lemma 1's closed forms against autograd Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import torch

from zoo.bench.seabird import _dice_gradients, closed_form, monte_carlo


def test_dice_gradient_is_sign_over_length_inside_and_zero_outside():
    eps = torch.tensor([0.5, -1.0, 3.9, 4.5, -7.0])
    grads = _dice_gradients(eps, 4.0)
    assert torch.allclose(grads, torch.tensor([-0.25, 0.25, -0.25, 0.0, 0.0]), atol=2e-3)


def test_closed_forms_and_monte_carlo_agree():
    sigma = np.array([0.1, 1.0, 3.0])
    exact = closed_form(sigma)
    assert exact["L1"] == [1.0] * 3 and np.allclose(exact["L2"], sigma**2)
    assert math.isclose(exact["dice l=4m"][2], math.erf(4 / (math.sqrt(2) * 3)) / 16)
    mc = monte_carlo(sigma, 1500, seed=0)
    for key in exact:
        assert np.allclose(mc[key], exact[key], rtol=0.15), key
    # dice's variance stays under 1/l^2 and under L1's; the 12 m object's is smaller than the 4 m one's
    assert max(mc["dice l=12m"]) < max(mc["dice l=4m"]) <= 1 / 16 + 1e-3 < 1
