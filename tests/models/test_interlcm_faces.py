"""InterLCM on photos (issue #15): alignment, paste-back, the rules for no face / many faces / tiny faces /
huge photos, MTCNN on a real photo, the wavelet colour fix, CodeFormer's degradation, the result drawing."""

import numpy as np
import pytest
import skimage.data
import torch

from zoo import registry
from zoo.data.degradation import CodeFormerDegradation, codeformer_degrade
from zoo.data.faces import ASTRONAUT_LANDMARKS, FacePairs, procedural_face
from zoo.models.interlcm import (
    FFHQ_TEMPLATE_512,
    Face,
    align_face,
    find_faces,
    paste_face,
    similarity_transform,
    wavelet_color_fix,
    wavelet_split,
)
from zoo.models.interlcm.faces import detector_available


def _face_at(landmarks_512, scale, offset):
    pts = landmarks_512 * scale + np.asarray(offset, np.float64)
    return Face(np.r_[pts.min(0) - 10, pts.max(0) + 10], pts, 0.99)


def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = FFHQ_TEMPLATE_512
    dst = src @ (scale * rot).T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-7)


def test_align_then_paste_back_leaves_the_photo_where_the_face_is_unchanged():
    photo = np.asarray(skimage.data.astronaut()).copy()
    crop, matrix = align_face(photo, ASTRONAUT_LANDMARKS, 64)
    assert crop.shape == (64, 64, 3)
    # the eyes land on the template
    eyes = np.c_[ASTRONAUT_LANDMARKS[:2], np.ones(2)] @ matrix.T
    np.testing.assert_allclose(eyes, FFHQ_TEMPLATE_512[:2] / 8, atol=1.5)
    out = paste_face(photo.copy(), crop, matrix)
    diff = np.abs(out.astype(int) - photo.astype(int))
    assert diff[200:, :].max() == 0 and diff[:, 320:].max() == 0  # outside the crop's region (x 136-315, y 17-196): untouched
    assert diff[100:140, 205:245].mean() < 20  # inside: the (downsampled) face itself comes back
    # a black "restored" face shows inside the face, softly
    dark = paste_face(photo.copy(), np.zeros_like(crop), matrix)
    assert dark[120, 225].sum() < photo[120, 225].sum() / 4


def test_find_faces_rules_tiny_many_huge():
    big = _face_at(FFHQ_TEMPLATE_512, 0.5, (0, 0))
    tiny = _face_at(FFHQ_TEMPLATE_512, 0.01, (300, 300))  # eye distance ~1.3 px
    others = [_face_at(FFHQ_TEMPLATE_512, 0.2 + 0.01 * i, (200 + 10 * i, 0)) for i in range(4)]
    search = find_faces(np.zeros((400, 400, 3), np.uint8), lambda im: [tiny, *others, big], max_faces=3)
    assert search.too_small == 1 and search.over_limit == 2
    assert len(search.faces) == 3 and search.faces[0] is not big and search.faces[0].eye_distance == pytest.approx(big.eye_distance)
    # a huge photo: the detector sees a copy at most detect_side px long, coordinates come back in the photo's
    seen = {}

    def detector(image):
        seen["shape"] = image.shape
        return [_face_at(FFHQ_TEMPLATE_512, 0.5, (100, 100))]

    search = find_faces(np.zeros((4000, 2000, 3), np.uint8), detector, detect_side=1000)
    assert seen["shape"][:2] == (1000, 500) and search.detect_scale == 0.25
    np.testing.assert_allclose(search.faces[0].landmarks, (FFHQ_TEMPLATE_512 * 0.5 + 100) * 4)


@pytest.mark.skipif(not detector_available(), reason="facenet-pytorch not installed")
def test_mtcnn_finds_the_astronaut_and_no_face_in_noise():
    from zoo.models.interlcm import mtcnn_detect

    faces = mtcnn_detect(np.asarray(skimage.data.astronaut()))
    assert len(faces) == 1 and faces[0].score > 0.99
    np.testing.assert_allclose(faces[0].landmarks, ASTRONAUT_LANDMARKS, atol=2.0)
    assert mtcnn_detect(np.full((80, 80, 3), 128, np.uint8)) == []


@pytest.fixture(scope="module")
def pipeline():
    return registry.create_model("interlcm", "micro", weights="random")


def test_pipeline_modes_and_photos(pipeline, monkeypatch):
    rng = np.random.default_rng(0)
    blank = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    monkeypatch.setattr(pipeline, "detect", lambda image: [])
    whole = pipeline.predict(blank)  # auto, no face: the whole image as one face, same size back
    assert whole.info["mode"] == "whole image" and whole.images[0].shape == blank.shape
    np.testing.assert_array_equal(whole.boxes, [[0, 0, 70, 50]])
    same = pipeline.predict(blank, mode="detect")  # detect, no face: unchanged
    assert same.info["mode"] == "unchanged" and len(same.boxes) == 0
    np.testing.assert_array_equal(same.images[0], blank)
    # many faces and a tiny one on a large photo: two restored, the tiny one skipped; away from faces the photo is kept
    photo = rng.integers(0, 255, (1500, 1200, 3), dtype=np.uint8)
    faces = [_face_at(FFHQ_TEMPLATE_512, 0.4, (50, 60)), _face_at(FFHQ_TEMPLATE_512, 0.3, (700, 900)),
             _face_at(FFHQ_TEMPLATE_512, 0.005, (1000, 100))]
    monkeypatch.setattr(pipeline, "detect", lambda image: faces)
    out = pipeline.predict(photo, steps=2)
    assert out.info["faces"] == 2 and out.info["skipped_small"] == 1 and out.info["timesteps"] == [999, 499]
    assert out.images[0].shape == photo.shape and out.boxes.shape == (2, 4) and out.info["images"] == ["restored", "faces"]
    np.testing.assert_array_equal(out.images[0][1300:, :600], photo[1300:, :600])
    assert np.abs(out.images[0][150:170, 150:170].astype(int) - photo[150:170, 150:170]).mean() > 1
    drawn = out.draw(photo)
    assert drawn.size == (2400, 1500)  # before / after
    assert out.to_json(include_images=False)["boxes"][0][0] == pytest.approx(float(out.boxes[0][0]), abs=0.01)


def test_wavelet_colour_fix_takes_low_frequencies_from_the_lq():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    high, low = wavelet_split(image, 5)
    torch.testing.assert_close(high + low, image)
    lq = torch.full((1, 3, 32, 32), 0.3)
    restored = torch.full((1, 3, 32, 32), 0.7)
    restored[..., ::2, ::2] += 0.1  # fine detail on a wrong colour
    fixed = wavelet_color_fix(restored, lq)
    assert abs(float(fixed.mean()) - 0.3) < 0.005  # the LQ's colour: the detail's own mean is low frequency too
    assert float(fixed[..., ::2, ::2].mean() - fixed[..., 1::2, 1::2].mean()) > 0.05  # the detail survives


def test_codeformer_degradation_ranges_and_determinism():
    hq = procedural_face(np.random.default_rng(3), 64).astype(np.float32) / 255
    a = codeformer_degrade(hq, np.random.default_rng(1))
    b = codeformer_degrade(hq, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == hq.shape and a.min() >= 0 and a.max() <= 1 and np.abs(a - hq).mean() > 0.01
    assert CodeFormerDegradation().kernel_size == 41 and CodeFormerDegradation().downsample_range == (1.0, 12.0)
    mild = CodeFormerDegradation(blur_sigma=(0.1, 0.1), downsample_range=(1.0, 1.0), noise_range=(0.0, 0.0), jpeg_range=(99, 100))
    assert np.abs(codeformer_degrade(hq, np.random.default_rng(1), mild) - hq).mean() < 0.01
    item = FacePairs(None, 64, 4, seed=0)[2]
    assert item["lq"].shape == item["gt"].shape == (3, 64, 64)
