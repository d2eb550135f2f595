"""Sample-quality metrics: FID/KID against hand computations and torchmetrics, k-NN precision/recall,
the shipped feature net, the local-only FID Inception."""

import json

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from zoo.data.generation import ClassImageSet
from zoo.metrics.generation import (
    FEATURE_NET_NAME,
    FeatureExtractor,
    fid,
    frechet_distance,
    inception_extractor,
    kid,
    load_feature_net,
    precision_recall,
    sample_quality,
)

# Stated floor for the shipped net on held-out shapes at 32 px (its sidecar records the measured figure).
MIN_HELDOUT_SHAPES_ACCURACY = 0.90


def _gauss(n, d, shift=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(shift, scale, (n, d))


# ------------------------------------------------------------------ FID


def test_fid_identical_sets_is_zero_and_grows_with_shift():
    x = _gauss(500, 16)
    assert abs(fid(x, x)) < 1e-8
    small, large = fid(x, _gauss(500, 16, shift=0.5, seed=1)), fid(x, _gauss(500, 16, shift=2.0, seed=1))
    assert 0.5**2 * 16 * 0.8 < small < large  # roughly ||shift||^2 = 4 ... 64


def test_fid_matches_hand_computation_for_diagonal_gaussians():
    # For commuting (diagonal) covariances, Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (s1 - s2)^2 over std devs.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 1.5])
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()  # 1 + 4 + (4 + 0 + 1) = 10
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, abs=1e-10)
    assert expected == pytest.approx(10.0)


def test_fid_matches_scipy_sqrtm_and_torchmetrics_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(3)
    a = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(0.3, 1.0, size=(300, 8)) @ rng.normal(size=(8, 8))
    ours = fid(a, b)
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert ours == pytest.approx(ref, rel=1e-7)

    class Identity(nn.Module):  # torchmetrics with a custom "feature extractor" that passes features through
        num_features = 8

        def forward(self, x):
            return x

    metric = FrechetInceptionDistance(feature=Identity())
    metric.update(torch.from_numpy(a), real=True)
    metric.update(torch.from_numpy(b), real=False)
    assert ours == pytest.approx(float(metric.compute()), rel=1e-6)


# ------------------------------------------------------------------ KID


def test_kid_matches_hand_computation_and_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance

    x, y = _gauss(40, 5, seed=0), _gauss(40, 5, shift=0.4, seed=1)
    # hand: unbiased MMD^2 with k(a, b) = (a.b / 5 + 1)^3 over all 40 samples (one subset = the whole set)
    k = lambda a, b: (a @ b.T / 5 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m = 40
    hand = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    mean, std = kid(x, y, subsets=1, subset_size=40)
    assert mean == pytest.approx(hand, rel=1e-10) and std == 0.0

    class Identity(nn.Module):
        def forward(self, f):
            return f

    with pytest.warns(UserWarning):
        metric = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=40)
    metric.update(torch.from_numpy(x), real=True)
    metric.update(torch.from_numpy(y), real=False)
    assert mean == pytest.approx(float(metric.compute()[0]), rel=1e-8)


def test_kid_near_zero_for_one_distribution_and_positive_for_shifted():
    x, x2, y = _gauss(300, 8, seed=0), _gauss(300, 8, seed=5), _gauss(300, 8, shift=1.0, seed=1)
    same, _ = kid(x, x2, subsets=20, subset_size=100)
    diff, diff_std = kid(x, y, subsets=20, subset_size=100)
    assert abs(same) < 0.05 and diff > 10 * max(abs(same), 0.01) and diff_std > 0
    assert kid(x, y, subsets=5, subset_size=50, seed=1) == kid(x, y, subsets=5, subset_size=50, seed=1)  # seeded
    with pytest.raises(ValueError, match="subset_size"):
        kid(x, y, subset_size=301)


# ------------------------------------------------------------------ precision / recall


def test_precision_recall_identical_disjoint_and_mode_dropping():
    x = _gauss(200, 4)
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, _gauss(200, 4, shift=50.0, seed=1)) == (0.0, 0.0)
    # fakes covering only half of the real data (one mode dropped): high precision, recall about 1/2
    two_modes = np.concatenate([_gauss(200, 2, shift=-10.0, seed=2), _gauss(200, 2, shift=10.0, seed=3)])
    one_mode = _gauss(200, 2, shift=10.0, seed=4)
    precision, recall = precision_recall(two_modes, one_mode, k=3)
    assert precision > 0.9 and 0.4 < recall < 0.6


# ------------------------------------------------------------------ feature spaces


def test_shipped_feature_net_loads_and_classifies_heldout_shapes():
    net = load_feature_net()
    assert isinstance(net, FeatureExtractor) and net.feature_space == f"{FEATURE_NET_NAME} penultimate (128-d)"
    assert net.metadata["command"].startswith("python -m zoo.metrics.train_feature_net")
    assert net.metadata["metrics"]["heldout_accuracy"]["shapes@32"] >= MIN_HELDOUT_SHAPES_ACCURACY
    # a fresh held-out draw (test split, another seed than training and than the sidecar's evaluation)
    images, labels = ClassImageSet("shapes", size=32, count=120, seed=77, split="test").tensors()
    with torch.no_grad():
        pred = net.logits(images).argmax(1)
        feats = net(images)
    assert feats.shape == (120, 128)
    assert (pred == labels).double().mean() >= MIN_HELDOUT_SHAPES_ACCURACY - 0.05  # 120 images: allow sampling noise
    tex, tex_labels = ClassImageSet("textures", size=64, count=40, seed=77, split="test").tensors()
    with torch.no_grad():
        assert (net.logits(tex).argmax(1) == tex_labels + 6).double().mean() >= 0.9


def test_sample_quality_names_its_feature_space_and_separates_sets():
    real = ClassImageSet("shapes", size=32, count=60, seed=1, split="val")
    same = ClassImageSet("shapes", size=32, count=60, seed=2, split="val")
    textures, _ = ClassImageSet("textures", size=32, count=60, seed=1, split="val").tensors()
    net = load_feature_net()
    near = sample_quality(real, same, net, batch_size=32, kid_subsets=10)
    far = sample_quality(real, textures, net, batch_size=32, kid_subsets=10)
    assert near["feature_space"] == "zoo-shapes-classifier-v1 penultimate (128-d)"
    assert near["num_real"] == near["num_fake"] == 60 and near["kid_subset_size"] == 60 and near["kid_subsets"] == 1
    assert far["fid"] > 5 * near["fid"] and far["kid_mean"] > 5 * near["kid_mean"]
    assert far["precision"] < 0.1 < near["precision"] and far["recall"] < near["recall"]
    json.dumps(near)  # plain numbers: ready for bench/results JSON
    # uint8 HxWx3 lists (Generation.images) give the same features as the float tensors, to rounding
    imgs, _ = real.tensors()
    as_uint8 = [(im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for im in imgs]
    again = sample_quality(as_uint8, textures, net, kid_subsets=10)
    assert again["fid"] == pytest.approx(far["fid"], rel=0.02)


def test_sample_quality_names_a_custom_extractor():
    class Means(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    x = torch.rand(12, 3, 8, 8)
    out = sample_quality(x, x, Means(), kid_subsets=2)
    assert out["feature_space"] == "Means (3-d)" and abs(out["fid"]) < 1e-8 and out["precision"] == 1.0


def test_inception_needs_a_local_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        inception_extractor()
    with pytest.raises(FileNotFoundError, match="not found"):
        inception_extractor(tmp_path / "missing.pth")
    monkeypatch.setenv("ZOO_INCEPTION_WEIGHTS", str(tmp_path / "also-missing.pth"))
    with pytest.raises(FileNotFoundError, match="ZOO_INCEPTION_WEIGHTS"):
        inception_extractor()


@pytest.mark.slow
def test_inception_loads_a_local_state_dict(tmp_path, monkeypatch):
    """Random weights in the FID Inception's layout, saved to a local file, load through our
    pickle-free path and give pool3 features; torch.hub is never asked."""
    pytest.importorskip("torch_fidelity")
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    from safetensors.torch import save_file

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    with monkeypatch.context() as m:  # the layout's keys and shapes, from the class itself with loading skipped
        m.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        layout = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    monkeypatch.setattr(tfi, "load_state_dict_from_url", no_download)
    gen = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(v.shape, generator=gen) * 0.05 if v.is_floating_point() else v) for k, v in layout.items()}
    state = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in state.items()}
    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    extractor = inception_extractor(path)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = extractor(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert "pool3 (2048-d)" in extractor.feature_space
    loaded = extractor.net.state_dict()
    assert torch.equal(loaded["Mixed_7c.branch_pool.conv.weight"], state["Mixed_7c.branch_pool.conv.weight"])
