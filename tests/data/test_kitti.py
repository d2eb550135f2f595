"""KITTI-format reader (malformed lines named by file:line) and the procedural 3D scenes written in that format."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.kitti import (
    KittiDataset,
    KittiFormatError,
    box_corners,
    camera_from_p2,
    parse_calib,
    parse_labels,
    project,
    read_labels,
    write_labels,
)
from zoo.data.scenes3d import BEV_CLASSES, generate_scenes_dataset, render_scene

LINE = "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"


def test_label_line_parses_and_round_trips(tmp_path):
    (obj,) = parse_labels(LINE + "\n\n")
    assert obj.type == "Car" and obj.dimensions == (1.65, 1.67, 3.64) and obj.location == (-0.65, 1.71, 46.70)
    assert obj.rotation_y == -1.59 and obj.score is None
    path = write_labels(tmp_path / "x.txt", [obj])
    assert read_labels(path)[0].to_line() == LINE
    assert parse_labels(LINE + " 0.75")[0].score == 0.75


@pytest.mark.parametrize("bad, what", [("Car 0 0 0 1 2 3 4 5 6 7 8 9 10", "expected 15 fields"),
                                       ("Car 0 0 0 1 2 3 4 5 6 7 8 9 ten 11", "not a number"),
                                       ("Car 0 0.5 0 1 2 3 4 5 6 7 8 9 10 11", "occluded must be an integer")])
def test_malformed_lines_are_reported_with_file_and_line(tmp_path, bad, what):
    path = tmp_path / "000007.txt"
    path.write_text(LINE + "\n" + bad + "\n")
    with pytest.raises(KittiFormatError, match=rf"000007\.txt:2: .*{what}"):
        read_labels(path)


def test_calib_p2_and_errors():
    p2 = "P2: 7.2e+02 0 6.0e+02 4.5e+01 0 7.2e+02 1.7e+02 -0.3 0 0 1 0.003"
    calib = parse_calib("P0: " + " ".join(["0"] * 12) + "\n" + p2 + "\nR0_rect: 1 0 0 0 1 0 0 0 1\n", "c.txt")
    assert calib["P2"].shape == (3, 4) and calib["R0_rect"].shape == (3, 3)
    assert camera_from_p2(calib["P2"]) == (720.0, 720.0, 600.0, 170.0)
    with pytest.raises(KittiFormatError, match=r"c\.txt:1: P2 needs 12 numbers"):
        parse_calib("P2: 1 2 3", "c.txt")
    with pytest.raises(KittiFormatError, match="no P2"):
        parse_calib("P0: " + " ".join(["0"] * 12), "c.txt")


def test_box_corners_and_projection():
    corners = box_corners(np.array([0, 1.5, 10, 4, 2, 1.5, 0]))[0]
    assert np.allclose(corners[:4, 1], 1.5) and np.allclose(corners[4:, 1], 0.0)
    assert np.allclose(sorted(set(np.round(corners[:, 0], 6))), [-2, 2]) and np.allclose(sorted(set(np.round(corners[:, 2], 6))), [9, 11])
    p2 = np.array([[100, 0, 50, 0], [0, 100, 20, 0], [0, 0, 1, 0]], float)
    assert np.allclose(project(np.array([[1.0, 0.5, 10.0]]), p2), [[60.0, 25.0]])


def test_scenes_are_deterministic_and_labels_match_the_render():
    a, b = render_scene(3, "train", 5), render_scene(3, "train", 5)
    assert np.array_equal(a["image"], b["image"]) and [o.to_line() for o in a["objects"]] == [o.to_line() for o in b["objects"]]
    assert not np.array_equal(a["image"], render_scene(3, "train", 6)["image"])
    assert a["bev"].shape == (128, 128) and set(np.unique(a["bev"])) <= {0, 1, 2}
    for obj in a["objects"]:
        x1, y1, x2, y2 = obj.bbox
        assert 0 <= x1 <= x2 <= 320 and 0 <= y1 <= y2 <= 96 and obj.occluded in (0, 1, 2)
        assert abs(obj.location[1] - 1.55) < 1e-6  # standing on the ground
    # every footprint inside the BEV lands in the map with its class
    assert (a["bev"] > 0).sum() > 0 and a["vf"].shape == (96, 320)


def test_generated_folder_reads_back(tmp_path):
    root = generate_scenes_dataset(tmp_path, {"train": 3, "val": 2}, seed=1)
    data = KittiDataset(root, "val")
    assert len(data) == 2 and data.meta["bev_classes"] == list(BEV_CLASSES)
    item = data[1]
    scene = render_scene(1, "val", 1)
    assert np.array_equal(item["image"], scene["image"]) and np.array_equal(item["bev"], scene["bev"])
    assert [o.type for o in item["objects"]] == [o.type for o in scene["objects"]]
    assert np.allclose(item["P2"], scene["P2"], rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="label_2"):
        KittiDataset(tmp_path, "test")
