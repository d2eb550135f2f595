"""HF-Diff networks: parameter counts and key names against the official configuration, shapes,
the Swin pieces, and our invertible network."""

import json
from pathlib import Path

import torch

from zoo.models.hfdiff import UNET_PARAMS, VQ_F4_PARAMS, micro_config, paper_config
from zoo.models.hfdiff.invertible import HaarDown, InvertibleConfig, InvertibleNet, inn_pretrain_loss
from zoo.models.hfdiff.model import SwinUNet, build_vq, count_parameters, shift_mask, timestep_embedding

OFFICIAL = json.loads((Path(__file__).parent / "data" / "hfdiff_official_keys.json").read_text())
BUFFERS = ("relative_position_index", "attn_mask")


def test_paper_sizes_equal_the_official_counts():
    cfg = paper_config()
    assert count_parameters(lambda: SwinUNet(cfg.unet)) == UNET_PARAMS == 118_593_583
    assert count_parameters(lambda: build_vq(cfg.autoencoder)) == VQ_F4_PARAMS == 55_322_782
    # the official shapes summed give the same counts (buffers excluded)
    assert sum(torch.Size(s).numel() for k, s in OFFICIAL["unet"].items() if not k.endswith(BUFFERS)) == UNET_PARAMS
    assert sum(torch.Size(s).numel() for s in OFFICIAL["vq"].values()) == VQ_F4_PARAMS


def test_paper_unet_has_the_official_names_and_shapes():
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in SwinUNet(paper_config().unet).state_dict().items()}
    official = {k: v for k, v in OFFICIAL["unet"].items() if not k.endswith(BUFFERS)}
    assert ours == official


def test_micro_unet_shapes_and_conditioning():
    cfg = micro_config().unet
    torch.manual_seed(0)
    net = SwinUNet(cfg).eval()
    for p in net.parameters():  # zero-initialised output convs would hide the inputs' influence
        torch.nn.init.normal_(p, std=0.05)
    x, lq = torch.randn(2, cfg.latent_channels, 16, 16), torch.rand(2, 3, 16, 16) * 2 - 1
    t = torch.tensor([14, 14])
    with torch.no_grad():
        out = net(x, t, lq)
        assert out.shape == x.shape
        assert not torch.allclose(out, net(x, torch.tensor([0, 0]), lq))  # time matters
        assert not torch.allclose(out, net(x, t, -lq))  # the LQ condition matters
        assert torch.allclose(net(x[:1], t[:1], lq[:1]), out[:1], atol=1e-5)  # batch-independent
        assert net(torch.randn(1, cfg.latent_channels, 32, 24), t[:1], torch.rand(1, 3, 32, 24)).shape == (1, cfg.latent_channels, 32, 24)


def test_shift_mask_and_timestep_embedding():
    mask = shift_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16)
    assert torch.all(mask[0] == 0)  # the top-left window is one region after the cyclic shift
    assert (mask[3] == -100).any() and torch.all(mask[3].diagonal() == 0)
    emb = timestep_embedding(torch.tensor([0, 3]), 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert torch.isclose(emb[1, 1], torch.cos(torch.tensor(3 * 10000 ** (-1 / 4))))


def test_haar_is_orthonormal_and_inn_inverts_to_1e5():
    x = torch.randn(2, 4, 16, 12)
    haar = HaarDown(4)
    y = haar(x)
    assert y.shape == (2, 16, 8, 6)
    assert torch.allclose(y[:, :4], 2 * torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)  # LL band first
    assert torch.isclose(y.pow(2).sum(), x.pow(2).sum(), rtol=1e-5)  # energy preserved
    torch.manual_seed(0)
    inn = InvertibleNet(InvertibleConfig(channels=4, blocks=3, hidden=16))
    for p in inn.parameters():  # trained-like, non-trivial couplings
        torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():
        base, detail = inn.features(x)
        assert base.shape == (2, 4, 8, 6) and detail.shape == (2, 12, 8, 6)
        assert (inn.reconstruct(base, detail) - x).abs().max() < 1e-5
        assert (inn.reconstruct(base, detail) - x).abs().max() < (inn(x)[:, :4] - y[:, :4]).abs().max()  # not the bare Haar


def test_inn_pretraining_loss_falls():
    torch.manual_seed(0)
    inn = InvertibleNet(InvertibleConfig(channels=4, blocks=2, hidden=8))
    x = torch.nn.functional.interpolate(torch.randn(4, 4, 4, 4), size=16, mode="bilinear") + 0.3 * torch.randn(4, 4, 16, 16)
    opt = torch.optim.Adam(inn.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = inn_pretrain_loss(inn, x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.8 * losses[0]
