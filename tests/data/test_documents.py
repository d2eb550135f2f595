"""Procedural document pairs and the paired-folder reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data._rng import rng_for
from zoo.data.documents import TASKS, defocus_kernel, generate_document_pairs, make_pair, motion_kernel, paper
from zoo.data.paired import PairedCrops, PairedFolder, paired_augment


def test_pairs_are_deterministic_and_degraded():
    for task in TASKS:
        degraded, clean = make_pair(0, task, "train", 3, (96, 128))
        again, clean_again = make_pair(0, task, "train", 3, (96, 128))
        assert degraded.shape == clean.shape == (96, 128, 3)
        assert np.array_equal(degraded, again) and np.array_equal(clean, clean_again)
        assert 0.0 <= degraded.min() and degraded.max() <= 1.0
        assert np.abs(degraded - clean).mean() > 1e-3, task
        assert clean.min() < 0.35 and np.median(clean) > clean.min() + 0.3  # ink darker than its paper
    other, _ = make_pair(1, "deblur", "train", 3, (96, 128))
    assert not np.array_equal(other, make_pair(0, "deblur", "train", 3, (96, 128))[0])
    seal, clean = make_pair(0, "seal", "train", 0, (128, 128))
    changed = np.abs(seal - clean).sum(axis=2) > 0.05
    assert (seal[changed][:, 0] > seal[changed][:, 2]).mean() > 0.5  # stamps are red


def test_paper_looks_scanned():
    """Paper is white on some pages; on the others grey (0.5-0.97), tinted, unevenly lit."""
    levels, spreads = [], []
    for index in range(40):
        sheet = paper(rng_for(0, "paper-test", index), (64, 96))
        assert sheet.shape == (64, 96, 3) and 0.0 <= sheet.min() and sheet.max() <= 1.0
        levels.append(float(np.median(sheet)))
        spreads.append(float(sheet.mean(axis=2).std()))
    white = [level == 1.0 for level in levels]
    assert 3 <= sum(white) <= 20 and min(levels) < 0.7  # white and dim pages both occur
    assert max(s for s, w in zip(spreads, white) if not w) > 0.03  # illumination gradients


def test_kernels_are_normalised():
    for kernel in (motion_kernel(9.0, 0.3), defocus_kernel(2.5)):
        assert kernel.sum() == pytest.approx(1.0, rel=1e-5) and kernel.min() >= 0
    horizontal = motion_kernel(9.0, 0.0)
    assert horizontal.sum(axis=1).argmax() == horizontal.shape[0] // 2  # mass on the middle row


def test_folder_layout_and_reader(tmp_path):
    root = generate_document_pairs(tmp_path / "docs", task="mixed", count=3, seed=0, size=(80, 100))
    assert sorted(p.name for p in (root / "degraded").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    pairs = PairedFolder(root)
    assert len(pairs) == 3
    item = pairs[1]
    assert item["degraded"].shape == item["clean"].shape == (3, 80, 100) and item["name"] == "00001"
    expected = make_pair(0, "mixed", "train", 1, (80, 100))[1]
    assert np.abs(item["clean"].permute(1, 2, 0).numpy() - expected).max() <= 0.5 / 255 + 1e-6
    crops = PairedCrops(pairs, size=128, seed=0, length=7)
    assert len(crops) == 7
    a, b = crops[5], crops[5]
    assert a["degraded"].shape == (3, 128, 128) and torch.equal(a["clean"], b["clean"])
    with pytest.raises(FileNotFoundError):
        PairedFolder(tmp_path)


def test_crop_pads_white_and_moves_both_images():
    degraded = torch.rand(3, 40, 50)
    rng = rng_for(0, "t")
    d, c = paired_augment(degraded, degraded.clone(), 64, rng, augment=False)
    assert d.shape == (3, 64, 64) and torch.equal(d, c)
    assert d[:, 0, :].eq(1.0).all() and d[:, :, 0].eq(1.0).all()  # white padding around the page
    d, c = paired_augment(degraded, degraded.clone(), 32, rng_for(0, "u"), degrees=10.0, hflip=1.0)
    assert torch.equal(d, c)  # the same crop, rotation and flip for both
