"""Class-labelled generation data: determinism, shapes, balance, split disjointness, folder reader."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import ClassImageSet, ImageFolderSet
from zoo.data._rng import rng_for
from zoo.data.generation import TEXTURE_BANDS, texture_patch_coords
from zoo.data.shapes import THING_CLASSES
from zoo.data.textures import TEXTURES
from zoo.imageio import ImageDecodeError


@pytest.mark.parametrize("kind,size", [("shapes", 32), ("shapes", 64), ("textures", 48)])
def test_items_have_the_promised_form(kind, size):
    ds = ClassImageSet(kind, size=size, count=10, seed=1, split="val")
    item = ds[3]
    assert set(item) == {"image", "label"}
    assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert isinstance(item["label"], int) and 0 <= item["label"] < len(ds.classes)
    assert float(item["image"].std()) > 0.02  # not a blank canvas
    assert len(ds) == 10
    with pytest.raises(IndexError):
        ds[10]


def test_classes_are_named():
    assert ClassImageSet("shapes").classes == tuple(THING_CLASSES)
    assert ClassImageSet("textures").classes == tuple(TEXTURES)
    with pytest.raises(ValueError, match="kind"):
        ClassImageSet("faces")
    with pytest.raises(ValueError, match="split"):
        ClassImageSet("shapes", split="holdout")


@pytest.mark.parametrize("kind", ["shapes", "textures"])
def test_deterministic_by_seed_split_index(kind):
    a = ClassImageSet(kind, size=32, count=8, seed=3)
    b = ClassImageSet(kind, size=32, count=100, seed=3)  # a longer set does not change earlier items
    for i in (0, 5, 7):
        assert torch.equal(a[i]["image"], b[i]["image"]) and a[i]["label"] == b[i]["label"]
    assert not torch.equal(a[0]["image"], ClassImageSet(kind, size=32, count=8, seed=4)[0]["image"])
    assert not torch.equal(a[0]["image"], ClassImageSet(kind, size=32, count=8, seed=3, split="val")[0]["image"])


@pytest.mark.parametrize("kind", ["shapes", "textures"])
def test_classes_are_balanced(kind):
    ds = ClassImageSet(kind, size=32, count=6 * len(ClassImageSet(kind).classes) + 1)
    _, labels = ds.tensors()
    counts = torch.bincount(labels, minlength=ds.num_classes)
    assert counts.max() - counts.min() <= 1 and counts.min() == 6


@pytest.mark.parametrize("kind", ["shapes", "textures"])
def test_splits_share_no_image(kind):
    def digests(split):
        x, _ = ClassImageSet(kind, size=32, count=40, split=split).tensors()
        return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in x}

    train, val, test = digests("train"), digests("val"), digests("test")
    assert len(train) == 40  # no repeats within a split either
    assert not (train & val) and not (train & test) and not (val & test)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_texture_patches_stay_in_their_split_band(split):
    """Texture splits cut from disjoint source rows, so no held-out pixel was seen in training."""
    lo, hi = TEXTURE_BANDS[split]
    for name in TEXTURES:
        for i in range(50):
            rows, _, _ = texture_patch_coords(rng_for(0, "band", split, name, i), name, 32, split)
            assert rows.min() >= lo * 512 + 1 and rows.max() <= hi * 512 - 2


def test_shapes_differ_by_class():
    """Same class, same stream -> same image; the class changes the silhouette."""
    ds = ClassImageSet("shapes", size=32, count=12)
    means = torch.stack([ds[i]["image"] for i in range(12)]).mean(dim=(1, 2, 3))
    assert len(set(means.tolist())) == 12


# ------------------------------------------------------------------ folder reader


def _write(path, w, h, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path)


def test_folder_with_class_subfolders(tmp_path):
    _write(tmp_path / "cats" / "a.png", 40, 20, (255, 0, 0))
    _write(tmp_path / "cats" / "deep" / "b.jpg", 20, 40, (250, 0, 0))
    _write(tmp_path / "dogs" / "c.png", 64, 64, (0, 0, 255))
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "loose.png", 8, 8, (0, 255, 0))  # ignored when there are class folders
    ds = ImageFolderSet(tmp_path, size=16)
    assert ds.classes == ("cats", "dogs") and len(ds) == 3
    labels = [ds[i]["label"] for i in range(3)]
    assert labels == [0, 0, 1]
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["image"][0].mean() > 0.95 and item["image"][2].mean() < 0.05
    assert ds[2]["image"][2].mean() > 0.95


def test_flat_folder_is_one_class_and_centre_cropped(tmp_path):
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, 20:40] = 255  # white centre square, black sides that the crop removes
    Image.fromarray(img).save(tmp_path / "x.png")
    ds = ImageFolderSet(tmp_path, size=10)
    assert ds.classes == (tmp_path.name,) and len(ds) == 1
    assert float(ds[0]["image"].min()) > 0.95


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolderSet(tmp_path, size=16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderSet(tmp_path / "missing", size=16)
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    ds = ImageFolderSet(tmp_path, size=16)
    with pytest.raises(ImageDecodeError, match="bad.png"):
        ds[0]
