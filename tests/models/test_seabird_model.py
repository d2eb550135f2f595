"""SeaBird network: the official KITTI-360 parameter counts, shapes, the camera geometry, the graph."""

from __future__ import annotations

import torch

from zoo.models.seabird import KITTI360_PARAMS
from zoo.models.seabird.model import SeaBird, inverse_ipm_grid, ipm_grid, polar_grid, preset_config, single_occupancy
from zoo.registry import parameter_counts


def test_kitti360_parameter_counts_match_the_official_modules():
    counts = parameter_counts("seabird", "kitti360")
    assert {k: counts[k] for k in KITTI360_PARAMS} == KITTI360_PARAMS
    assert counts["total"] == 36_288_570


def test_micro_shapes_and_stride4_bev_grid():
    torch.manual_seed(0)
    config = preset_config("micro")
    model = SeaBird(config).eval()
    cam = torch.tensor([[128.0, 128.0, 160.0, 48.0]] * 2)
    bev, heads = model(torch.randn(2, 3, 96, 320), cam)
    assert bev.shape == (2, 2, 32, 32) and heads.shape == (2, 18, 32, 32)
    assert torch.isfinite(bev).all() and torch.isfinite(heads).all()
    hm, cls_theta = heads[:, :2], heads[:, 14:15]
    assert (hm >= 0).all() and (hm <= 1).all() and (cls_theta >= 0).all() and (cls_theta <= 1).all()


def test_single_occupancy_is_max_of_weighted_classes():
    p = torch.tensor([[[[0.9]], [[0.6]]], [[[0.2]], [[0.05]]]])  # (2, 2, 1, 1)
    assert torch.allclose(single_occupancy(p).flatten(), torch.tensor([1.2, 0.2]))


def test_ipm_sends_a_ground_point_to_its_pixel_and_back():
    cam = torch.tensor([[50.0, 40.0, 50.0, 20.0]])
    # a BEV of 10 x 10 cells of 1 m over x in [-5, 5], z in [0, 10]; L_f columns run right -> left
    grid = ipm_grid(cam, 1.5, 40, 100, (-5.0, 5.0), (0.0, 10.0), 10, 10, 1.0)
    row, col = 4, 7  # z = 4.5, x = 5 - 7.5 = -2.5
    u = (grid[0, row, col, 0] + 1) / 2 * 100
    v = (grid[0, row, col, 1] + 1) / 2 * 40
    assert abs(float(u) - (50 * -2.5 / 4.5 + 50)) < 1e-3 and abs(float(v) - (40 * 1.5 / 4.5 + 20)) < 1e-3
    back = inverse_ipm_grid(cam, 1.5, 40, 100, (-5.0, 5.0), (0.0, 10.0))
    assert (back[0, :20] >= 2.9).all()  # at and above the horizon: outside the map (sampled as 0)
    vv, uu = int(float(v)), int(float(u))
    gx, gz = back[0, vv, uu]
    assert abs(float(gz) - (4.5 / 10 * 2 - 1)) < 0.1 and abs(float(gx) - (1 - (-2.5 + 5) / 10 * 2)) < 0.1


def test_polar_grid_maps_the_optical_axis_to_the_principal_column():
    cam = torch.tensor([[50.0, 50.0, 40.0, 10.0]])
    grid = polar_grid(cam, 80, (-4.0, 4.0), (0.0, 8.0), 8, 8, 1.0)
    # column 3 and 4 straddle x = 0: u symmetric about cx = 40 (normalised 0)
    assert torch.allclose(grid[0, :, 3, 0], -grid[0, :, 4, 0], atol=1e-5)
    assert torch.allclose(grid[0, :, 0, 1], torch.linspace(-1 + 1 / 8, 1 - 1 / 8, 8), atol=1e-5)
