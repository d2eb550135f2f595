"""Procedural anomaly data, the MVTec AD / LOCO reader and the bundled natural images."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from zoo.data import anomaly, mvtec, natural
from zoo.data._io import to_uint8
from zoo.data._rng import rng_for
from zoo.data.textures import sample_texture

SMALL = dict(image_size=64, n_train=3, n_test_good=2, n_test_per_defect=2)


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("category", ["brick", "parts"])
def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path, category: str) -> None:
    a = _tree_bytes(anomaly.generate_anomaly_dataset(tmp_path / "a", category, seed=3, **SMALL))
    b = _tree_bytes(anomaly.generate_anomaly_dataset(tmp_path / "b", category, seed=3, **SMALL))
    c = _tree_bytes(anomaly.generate_anomaly_dataset(tmp_path / "c", category, seed=4, **SMALL))
    assert a == b
    assert a.keys() == c.keys()
    pngs = [k for k in a if k.endswith(".png") and not k.endswith("_mask.png")]
    assert all(a[k] != c[k] for k in pngs)
    assert json.loads(c["meta.json"])["seed"] == 4


def test_more_training_images_leave_test_set_unchanged(tmp_path: Path) -> None:
    a = _tree_bytes(anomaly.generate_anomaly_dataset(tmp_path / "a", "gravel", **SMALL))
    b = _tree_bytes(anomaly.generate_anomaly_dataset(tmp_path / "b", "gravel", **{**SMALL, "n_train": 5}))
    assert all(a[k] == b[k] for k in a if k.startswith(("test", "ground_truth")))


def test_layout_and_read_back(tmp_path: Path) -> None:
    folder = anomaly.generate_anomaly_dataset(tmp_path, "parts", seed=1, n_validation=2, **{**SMALL, "image_size": 96})
    assert folder == tmp_path / "parts"
    kinds = json.loads((folder / "defects.json").read_text())
    assert kinds == anomaly.OBJECT_DEFECTS
    assert {"logical", "structural"} == set(kinds.values())
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["generator"] == "zoo.data.anomaly" and meta["args"]["n_train"] == 3 and meta["seed"] == 1
    assert sorted(p.name for p in (folder / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
    assert (folder / "ground_truth" / "missing_part" / "001_mask.png").is_file()

    train = mvtec.MVTecAD(tmp_path, "parts", split="train", image_size=64)
    assert len(train) == 3 and set(train.labels) == {0}
    assert len(mvtec.MVTecAD(folder, split="validation", image_size=64)) == 2

    test = mvtec.MVTecAD(folder, split="test", image_size=48)  # root = the category folder itself
    assert len(test) == 2 + 2 * len(kinds)
    assert test.defect_types[:2] == ["good", "good"]
    assert mvtec.defect_kinds(folder) == kinds == test.defect_kinds()
    for i in range(len(test)):
        item = test[i]
        assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
        assert item["mask"].shape == (1, 48, 48)
        assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}
        if item["defect_type"] == "good":
            assert item["label"] == 0 and item["mask"].sum() == 0
        else:
            assert item["label"] == 1 and item["mask"].sum() > 0
            written = np.asarray(Image.open(folder / "ground_truth" / item["defect_type"] / (Path(item["path"]).stem + "_mask.png")))
            assert set(np.unique(written)) == {0, 255}

    stacked = mvtec.stack_split(test)
    assert stacked["image"].shape == (len(test), 3, 48, 48) and stacked["label"].tolist() == test.labels

    # At the file's own size, reading returns exactly what make_sample produced.
    full = mvtec.MVTecAD(folder, split="test", image_size=None)
    k = full.defect_types.index("chip")
    image, mask = anomaly.make_sample("parts", "chip", seed=1, index=0, image_size=96)
    np.testing.assert_array_equal(np.rint(full[k]["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8), to_uint8(image))
    np.testing.assert_array_equal(full[k]["mask"][0].numpy() > 0, mask)


def test_every_category_generates_with_nonempty_masks(tmp_path: Path) -> None:
    assert anomaly.list_categories() == ["brick", "grass", "gravel", "fabric", "parts"]
    for category in anomaly.list_categories():
        folder = anomaly.generate_anomaly_dataset(tmp_path, category, image_size=48, n_train=1, n_test_good=1, n_test_per_defect=2)
        for defect in anomaly.defect_kinds_for(category):
            for mask_file in (folder / "ground_truth" / defect).iterdir():
                assert (np.asarray(Image.open(mask_file)) == 255).any(), mask_file


def test_texture_defects_are_local_and_subtle() -> None:
    for i in range(6):
        image = sample_texture("brick", rng_for(0, "t", i), 128)
        luma_std = image.mean(axis=2).std()
        out, mask = anomaly.add_scratch(image, rng_for(1, "s", i))
        change = np.abs(out - image)
        assert mask.any() and change[~mask].max() == 0.0  # the mask covers the whole change
        assert change.max() <= luma_std + 1e-6  # no brighter than the texture's own variation
        for fn in (anomaly.add_hole, anomaly.add_stain):
            out, mask = fn(image, rng_for(2, fn.__name__, i))
            change = np.abs(out - image).sum(axis=2)
            assert mask.any() and (change * mask).sum() > 0.85 * change.sum()


@pytest.mark.parametrize("category", ["parts", "gravel"])
def test_defects_change_the_image_where_the_mask_says(category: str) -> None:
    for defect, kind in anomaly.defect_kinds_for(category).items():
        for index in range(3):
            image, mask, reference = anomaly.make_sample(category, defect, index=index, image_size=128, with_reference=True)
            change = np.abs(image - reference).max(axis=2)
            outside = ndimage.binary_dilation(mask, iterations=3)  # part shadows reach a little further
            assert mask.any() and change[mask].mean() > 0.01, (defect, index)
            assert (change[~outside] > 0.05).sum() <= 0.1 * mask.sum(), (defect, index)
            if kind == "logical":  # a part appears, vanishes or changes colour: a large change
                assert change[ndimage.binary_erosion(mask)].mean() > 0.15, (defect, index)
    good, _, reference = anomaly.make_sample(category, "good", index=0, image_size=64, with_reference=True)
    assert np.array_equal(good, reference)


def test_generator_refuses_foreign_folder_and_bad_args(tmp_path: Path) -> None:
    (tmp_path / "brick").mkdir()
    (tmp_path / "brick" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        anomaly.generate_anomaly_dataset(tmp_path, "brick", **SMALL)
    assert (tmp_path / "brick" / "mine.txt").is_file()
    with pytest.raises(ValueError, match="unknown anomaly category"):
        anomaly.generate_anomaly_dataset(tmp_path, "marble", **SMALL)
    with pytest.raises(ValueError):
        anomaly.make_sample("brick", "missing_part")


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _fake_loco(root: Path) -> Path:
    """A tiny MVTec LOCO AD tree: RGBA and grey images, multi-file masks with type values."""
    cat = root / "juice_bottle"
    rng = np.random.default_rng(0)
    _png(cat / "train/good/000.png", rng.integers(0, 255, (20, 30, 4), dtype=np.uint8))
    _png(cat / "train/good/001.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    _png(cat / "validation/good/000.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    _png(cat / "test/good/000.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    _png(cat / "test/logical_anomalies/000.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    _png(cat / "test/structural_anomalies/000.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    first, second = np.zeros((20, 30), np.uint8), np.zeros((20, 30), np.uint8)
    first[2:6, 3:9] = 241  # LOCO stores a defect-type value, not 255
    second[10:12, 20:25] = 12
    _png(cat / "ground_truth/logical_anomalies/000/000.png", first)
    _png(cat / "ground_truth/logical_anomalies/000/001.png", second)
    third = np.zeros((20, 30), np.uint8)
    third[15:18, 0:4] = 255
    _png(cat / "ground_truth/structural_anomalies/000/000.png", third)
    return cat


def test_loco_layout(tmp_path: Path) -> None:
    cat = _fake_loco(tmp_path)
    train = mvtec.MVTecAD(tmp_path, "juice_bottle", "train", image_size=16)
    assert [train[i]["image"].shape for i in range(2)] == [(3, 16, 16)] * 2  # RGBA and grey become RGB
    assert len(mvtec.MVTecAD(cat, split="validation")) == 1
    test = mvtec.MVTecAD(tmp_path, "juice_bottle", "test", image_size=None)
    assert test.defect_types == ["good", "logical_anomalies", "structural_anomalies"]
    assert test.labels == [0, 1, 1]
    logical = test[1]["mask"][0]
    assert logical.shape == (20, 30) and logical.sum() == 4 * 6 + 2 * 5  # union of both files
    assert test[2]["mask"].sum() == 3 * 4 and test[0]["mask"].sum() == 0
    assert mvtec.defect_kinds(cat) == {"logical_anomalies": "logical", "structural_anomalies": "structural"}
    resized = mvtec.MVTecAD(cat, split="test", image_size=(10, 15))[1]
    assert resized["image"].shape == (3, 10, 15) and resized["mask"].shape == (1, 10, 15) and resized["mask"].sum() > 0


def test_reader_errors(tmp_path: Path) -> None:
    cat = _fake_loco(tmp_path)
    with pytest.raises(FileNotFoundError, match="juice_bottle"):
        mvtec.MVTecAD(tmp_path, "screw")
    with pytest.raises(ValueError, match="category="):
        mvtec.MVTecAD(tmp_path)
    with pytest.raises(FileNotFoundError):
        mvtec.MVTecAD(tmp_path / "nowhere", "screw")
    (cat / "ground_truth/structural_anomalies/000/000.png").unlink()
    with pytest.raises(FileNotFoundError, match="no ground-truth mask"):
        mvtec.MVTecAD(cat, split="test")
    assert mvtec.MVTecAD(cat, split="test", missing_masks="empty")[2]["mask"].sum() == 0
    brick = anomaly.generate_anomaly_dataset(tmp_path, "brick", **SMALL)
    with pytest.raises(FileNotFoundError, match="train_validation_split"):
        mvtec.MVTecAD(brick, split="validation")
    with pytest.raises(ValueError):
        mvtec.MVTecAD(brick, split="val")


def test_train_validation_split_is_deterministic_and_disjoint() -> None:
    data = list(range(50))
    train, val = mvtec.train_validation_split(data, fraction=0.1, seed=7)
    again_train, again_val = mvtec.train_validation_split(data, fraction=0.1, seed=7)
    other_val = mvtec.train_validation_split(data, fraction=0.1, seed=8)[1]
    assert len(val) == 5 and len(train) == 45
    assert val.indices == again_val.indices and train.indices == again_train.indices
    assert val.indices != other_val.indices
    assert sorted(train.indices + val.indices) == data
    assert len(mvtec.train_validation_split(list(range(3)), fraction=0.1)[1]) == 1  # never empty


def test_natural_images_load_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("natural images must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    natural._natural_images_cached.cache_clear()
    images = natural.natural_images()
    assert len(images) == len(natural.NATURAL_IMAGE_NAMES) >= 10
    for img in images:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 128
    camera = images[natural.NATURAL_IMAGE_NAMES.index("camera")]
    assert np.array_equal(camera[..., 0], camera[..., 2])  # grey expanded to RGB
    images[0][:] = 0  # copies: the cache is untouched
    assert natural.natural_images()[0].any()


def test_image_folder_dataset(tmp_path: Path) -> None:
    ds = natural.ImageFolderDataset(None, 32, seed=1, length=7)
    assert len(ds) == 7
    x = ds[6]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    assert torch.equal(x, natural.ImageFolderDataset("", 32, seed=1, length=7)[6])
    assert not torch.equal(x, natural.ImageFolderDataset(None, 32, seed=2, length=7)[6])
    with pytest.raises(IndexError):
        ds[7]

    rng = np.random.default_rng(0)
    _png(tmp_path / "a.png", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    (tmp_path / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (30, 20), dtype=np.uint8)).save(tmp_path / "sub" / "b.jpg")  # grey JPEG
    (tmp_path / "notes.txt").write_text("not an image")
    folder = natural.ImageFolderDataset(tmp_path, (16, 24), seed=0)
    assert len(folder) == 2 and folder.num_images == 2
    assert [folder[i].shape for i in range(2)] == [(3, 16, 24)] * 2
    with pytest.raises(FileNotFoundError):
        natural.ImageFolderDataset(tmp_path / "empty", 16)
