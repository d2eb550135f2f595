"""`zoo bench demo-check`: the checkers on hand cases, and every bundled example on its bundled weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zoo.bench.demo_check import check_anomaly, check_card, check_detections, check_ranking, check_restoration, check_segments, check_text
from zoo.bench.examples import expect_path
from zoo.registry import get_card, list_models
from zoo.results import AnomalyResult, Detections, Segmentation

NAMES = ["circle", "square", "star"]
TRUTH = {"objects": [{"label": "circle", "box": [0, 0, 10, 10]}, {"label": "star", "box": [20, 20, 40, 40]}]}

# Bundled examples whose bundled weights do not yet show what the example is meant to show
# (issue #21). strict: the day they pass, this list must be emptied.
_WEAK_VIDT = "micro misses small or overlapping shapes and names tilted squares hexagons (box AP50 0.83 ViDT, 0.85 ViDT+ on 128 held-out scenes)"
_MIXED_DOCDIFF = "the mixed micro (1,000 steps, all four tasks) still lowers PSNR a little on these real scans"
KNOWN_FAILURES: dict[tuple[str, str, str], str] = {  # (model, example, variant): why
    ("vidt", "shapes.png", "micro"): _WEAK_VIDT, ("vidt", "shapes-wide.png", "micro"): _WEAK_VIDT,
    ("vidt-plus", "shapes.png", "micro"): _WEAK_VIDT, ("vidt-plus", "shapes-wide.png", "micro"): _WEAK_VIDT,
    ("oneformer", "shapes_1.png", "micro"): "micro things rarely reach the official 0.8 confidence (PQ things 20.4 on 128 held-out scenes)",
    ("oneformer", "shapes_2.png", "micro"): "micro things rarely reach the official 0.8 confidence (PQ things 20.4 on 128 held-out scenes)",
    ("efficientad", "good.png", "micro"): "micro scores the good tray above the scratched one",
    ("efficientad", "missing_part.png", "micro"): "micro map peaks on the tray's edge, not on the empty compartment",
    ("efficientad", "scratch.png", "micro"): "micro map peaks on the tray's edge, not on the thin scratch (structural image AUROC 0.59)",
    ("docdiff", "page-blurred.png", "micro"): _MIXED_DOCDIFF, ("docdiff", "page-watermark.png", "micro"): _MIXED_DOCDIFF,
    ("anytext", "sign.png", "micro"): "the micro (6,000 CPU steps) writes text-shaped ink at the line's position, not letters "
                                      "(Sen.ACC 0.000 on 100 held-out images)",
    ("interlcm", "astronaut-degraded.png", "micro"): "the micro restores a 64-px crop in which the face spans ~32 px; the photo's face spans "
                                                      "~90 px, so the pasted face carries no more detail (21.28 -> 21.27 dB); micro-128, "
                                                      "the demo's default, passes",
}


def detections(boxes, labels, scores=None):
    return Detections(np.asarray(boxes, float), np.asarray(scores or [0.9] * len(boxes)), np.asarray(labels), class_names=NAMES)


def test_detections_all_found_passes():
    assert check_detections(detections([[0, 0, 10, 10], [21, 20, 40, 41]], [0, 2]), TRUTH) == []


def test_detections_wrong_class_missing_spurious_and_double_labels_fail():
    problems = check_detections(detections([[0, 0, 10, 10], [20, 20, 40, 40], [20, 20, 40, 39], [60, 60, 70, 70]], [1, 2, 0, 2]), TRUTH)
    text = " | ".join(problems)
    assert "circle at [0, 0, 10, 10] not found; nearest: square IoU 1.00" in text  # right place, wrong class
    assert "spurious star" in text and "spurious square" in text  # matches nothing / a box of no object
    assert "one object boxed twice: star and circle" in text


def test_segments_need_each_thing_with_its_class():
    segment_map = -np.ones((48, 48), int)
    segment_map[0:10, 0:10] = 1
    segment_map[20:40, 20:40] = 2
    found = Segmentation("instance", segment_map, [{"id": 1, "label": 0}, {"id": 2, "label": 2}], class_names=NAMES)
    assert check_segments(found, TRUTH) == []
    wrong = Segmentation("instance", segment_map, [{"id": 1, "label": 1}, {"id": 2, "label": 2}], class_names=NAMES)
    assert check_segments(wrong, TRUTH) == ["circle at [0, 0, 10, 10] not segmented"]


def test_anomaly_peak_inside_the_defect_box_and_ranking():
    heat = np.zeros((64, 64), np.float32)
    heat[30, 40] = 1.0
    result = AnomalyResult(score=1.0, map=heat)
    assert check_anomaly(result, {"defect": "scratch", "defect_box": [38, 28, 45, 35]}) == []
    assert "outside the scratch" in check_anomaly(result, {"defect": "scratch", "defect_box": [0, 0, 10, 10]})[0]
    entries = [{"example": "good.png", "defect": "good", "score": 0.5, "problems": [], "passed": True},
               {"example": "a.png", "defect": "scratch", "score": 0.7, "problems": [], "passed": True},
               {"example": "b.png", "defect": "chip", "score": 0.4, "problems": [], "passed": True}]
    check_ranking(entries)
    assert not entries[0]["passed"] and "not below b.png" in entries[0]["problems"][0]


def test_every_checked_example_has_a_valid_expectation():
    checked = [(card.name, example) for card in list_models() for example in card.examples if expect_path(example).exists()]
    assert {name for name, _ in checked} >= {"vidt", "vidt-plus", "oneformer", "efficientad", "docdiff", "interlcm", "anytext"}
    for name, example in checked:
        expect = json.loads(expect_path(example).read_text())
        assert expect["check"] in ("detections", "segments", "anomaly", "restoration", "text") and "seed" in expect
        assert set(expect.get("variants", [])) <= set(get_card(name).variants)


def test_restoration_must_bring_the_image_closer_to_the_clean_one():
    from zoo.imageio import load_image
    from zoo.results import ImageResult

    clean = np.asarray(load_image("skimage:page"), dtype=np.float64)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 20, clean.shape), 0, 255)
    expect = {"clean": "skimage:page", "task": "denoise"}
    closer = ImageResult([np.round(0.5 * clean + 0.5 * noisy).astype(np.uint8)])
    assert check_restoration(closer, expect, noisy) == []
    further = ImageResult([np.clip(noisy + 30, 0, 255).astype(np.uint8)])
    assert "the denoise model lowers it" in check_restoration(further, expect, noisy)[0]


def test_text_must_be_read_back_at_its_position():
    from zoo.data.words import word_image
    from zoo.results import Generation

    rec = word_image(1, "val", 0, 64, 1, 0.0)  # a held-out procedural word image, read perfectly by rapidocr
    lines, positions = [line.text for line in rec.lines], [line.polygon.tolist() for line in rec.lines]
    written = Generation([rec.image], info={"lines": lines, "positions": positions})
    assert check_text(written, {"check": "text"}) == []
    blank = Generation([np.full_like(rec.image, 128)], info={"lines": lines, "positions": positions})
    assert check_text(blank, {"check": "text"}) == [f"{lines[0]!r} reads as ''"]
    assert "the example expects ['NOPE']" in check_text(written, {"check": "text", "lines": ["NOPE"]})[0]


CARDS_WITH_EXAMPLES = [card.name for card in list_models() if card.examples]


@pytest.mark.parametrize("name", CARDS_WITH_EXAMPLES)
def test_bundled_examples_show_what_they_should(name):
    """Each bundled example runs on the card's bundled weights, returns and draws its result, and
    (with an expectation) shows what it is meant to: objects found, defect localised, ..."""
    entries = check_card(get_card(name))
    assert entries, f"{name}: no example was checked"
    failures = {(e["example"], e["variant"]): e["problems"] for e in entries if not e["passed"]}
    known = {(example, variant): reason for (model, example, variant), reason in KNOWN_FAILURES.items() if model == name}
    unexpected = {example: problems for example, problems in failures.items() if example not in known}
    assert not unexpected, f"{name}: {unexpected}"
    fixed = sorted(set(known) - set(failures))
    assert not fixed, f"{name}: {fixed} now pass: remove them from KNOWN_FAILURES"
    if known:
        pytest.xfail("; ".join(f"{example} [{variant}]: {reason}" for (example, variant), reason in known.items()))
