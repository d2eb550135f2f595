"""What the demo shows of a result (issue #19): detection labels that stay readable on small
images, a legend of class names for segmentations, image results as one captioned sheet and
a JSON panel without base64 blobs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zoo.demos.app import _captioned_images, _picture, captioned_sheet, panel_json
from zoo.results import PALETTE, Detections, ImageResult, Segmentation, label_text_size

GREY = np.full((128, 128, 3), 120, np.uint8)
NAMES = ["square", "circle", "triangle"]


def _is(array: np.ndarray, colour) -> np.ndarray:
    return (array == np.asarray(colour, np.uint8)).all(-1)


@pytest.mark.parametrize("scale", [1, 4])
def test_detection_label_is_a_filled_tag_with_text_sized_to_the_drawing(scale):
    """ViDT on a 128-px image: "triangle 0.90" on a tag of the class colour just above the box,
    black on yellow, its glyphs at least 10 px tall (the old 11-px bitmap text had ~7-px glyphs
    in the class colour straight over the picture); scale=4 draws it 4x larger and sharper."""
    det = Detections([[40, 60, 90, 100]], [0.9], [2], class_names=NAMES)
    drawn = np.asarray(det.draw(GREY, scale=scale))
    assert drawn.shape == (128 * scale, 128 * scale, 3)
    size = label_text_size(128 * scale, 128 * scale)
    assert size == (10 if scale == 1 else 21)
    top, left = 60 * scale, 40 * scale
    tag = drawn[top - size:top, left:left + 5 * size]
    # filled: the grey picture does not show through (antialiased glyph edges are in between)
    assert _is(tag, PALETTE[2]).mean() > 0.3 and not _is(tag, GREY[0, 0]).any(), "no tag of the class colour above the box"
    tag = drawn[top - 2 * size:top, left:left + 5 * size]
    text = _is(tag, (0, 0, 0))
    rows = np.nonzero(text.any(axis=1))[0]
    columns = np.nonzero(text.any(axis=0))[0]
    assert rows.size and rows.max() - rows.min() + 1 >= max(10, 0.9 * size), "the label's glyphs are too small to read"
    assert columns.max() - columns.min() + 1 >= 4 * size  # "triangle 0.90": a dozen glyphs side by side
    # the box itself, outlined in the class colour below the tag
    assert _is(drawn[top:top + 40 * scale, left:left + 2], PALETTE[2]).mean() > 0.9


def test_tags_stay_inside_the_image_and_the_best_is_on_top():
    # a box in the top-right corner: no room above, not enough to the right
    det = Detections([[100, 0, 127, 20], [100, 0, 127, 20]], [0.95, 0.3], [0, 1], class_names=NAMES)
    drawn = np.asarray(det.draw(GREY))
    red = np.nonzero(_is(drawn, PALETTE[0]).any(axis=0))[0]
    assert red.max() <= 127 and red.min() < 80, "the tag was not moved left to fit"  # "square 0.95" is wider than the 28 px right of the box
    # both tags start at the same corner: the higher-scoring one is drawn last, so it is the one seen
    assert _is(drawn[:12, :], PALETTE[0]).sum() > _is(drawn[:12, :], PALETTE[1]).sum()


def test_scale_must_be_a_whole_number():
    det = Detections([[1, 1, 5, 5]], [0.5], [0])
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="scale"):
            det.draw(GREY, scale=bad)


def test_segmentation_legend_names_each_colour():
    seg_map = np.full((64, 64), -1, np.int32)
    seg_map[:32] = 1
    seg_map[40:50, 5:15] = 2
    seg_map[40:50, 30:40] = 3
    segments = [{"id": 1, "label": 0, "score": 0.9, "is_thing": False}, {"id": 2, "label": 1, "score": 0.8, "is_thing": True},
                {"id": 3, "label": 1, "score": 0.7, "is_thing": True}]
    seg = Segmentation("panoptic", seg_map, segments, class_names=["sky", "circle"])
    assert [name for _, name in seg.legend_entries()] == ["sky", "circle 1", "circle 2"]
    image = np.zeros((64, 64, 3), np.uint8)
    plain = np.asarray(seg.draw(image))
    drawn = np.asarray(seg.draw(image, legend=True))
    assert drawn.shape[0] > plain.shape[0] and drawn.shape[1] >= plain.shape[1]
    assert np.array_equal(drawn[:64, :64], plain)  # the overlay unchanged, the legend underneath
    panel = drawn[64:]
    for seg_id in (1, 2, 3):
        assert _is(panel, PALETTE[seg_id]).sum() >= 8 * 8, f"no swatch for segment {seg_id}"  # 10 px with a rim
    assert _is(panel, (0, 0, 0)).sum() > 50  # the names, in black on white
    # semantic maps hold class ids: named from the class names even without a segment list
    semantic = Segmentation("semantic", np.array([[0, 2], [2, 2]]), class_names=["a", "b", "c"])
    assert [name for _, name in semantic.legend_entries()] == ["a", "c"]
    assert [name for _, name in Segmentation("semantic", np.array([[4]])).legend_entries()] == ["class 4"]


def test_demo_draws_small_results_larger_with_their_legend():
    seg = Segmentation("semantic", np.array([[0, 1], [1, 1]]).repeat(32, 0).repeat(32, 1), class_names=["sky", "ground"])
    shown = _picture(seg, Image.fromarray(np.zeros((64, 64, 3), np.uint8)))
    assert np.array_equal(np.asarray(shown), np.asarray(seg.draw(np.zeros((64, 64, 3), np.uint8), scale=8, legend=True)))
    det = Detections([[1, 1, 50, 50]], [0.5], [0], class_names=NAMES)
    assert _picture(det, Image.fromarray(np.zeros((300, 200, 3), np.uint8))).size == (200, 300)  # 512 // 300: x1


def test_image_results_are_one_captioned_sheet():
    """DocDiff: input, restored and coarse, each above its caption; wide pages one under
    another, small pictures (the autoencoder's 64 px) side by side at a whole multiple."""
    page = Image.fromarray(np.zeros((20, 60, 3), np.uint8))
    restored, coarse = np.full((20, 60, 3), 200, np.uint8), np.full((20, 60, 3), 100, np.uint8)
    result = ImageResult([restored, coarse], info={"images": ["restored", "coarse"]})
    items = _captioned_images(result, page)
    assert [caption for _, caption in items] == ["input", "restored", "coarse"]
    sheet, boxes = captioned_sheet(items)
    assert np.array_equal(np.asarray(_picture(result, page)), np.asarray(sheet))
    scale = 512 // 60
    assert [b[2] - b[0] for b in boxes] == [60 * scale] * 3 and len({b[0] for b in boxes}) == 1  # stacked, x8
    drawn = np.asarray(sheet)
    for (left, top, right, bottom), want in zip(boxes, (0, 200, 100)):
        assert (drawn[top:bottom, left:right] == want).all()
        caption = drawn[bottom:bottom + 20, left:right]
        assert (caption.sum(-1) < 100).sum() > 20, "no caption text under the picture"
    square = np.full((64, 64, 3), 50, np.uint8)
    _, side_by_side = captioned_sheet(_captioned_images(ImageResult([square]), Image.fromarray(square)))
    assert side_by_side[0][1] == side_by_side[1][1] and side_by_side[0][2] - side_by_side[0][0] == 512  # 64 px x8
    assert [caption for _, caption in _captioned_images(ImageResult([square]), None)] == ["result"]


def test_json_panel_has_no_base64():
    document = ImageResult([np.zeros((4, 4, 3), np.uint8)] * 2).to_json()
    assert len(document["images_png_base64"][0]) > 50
    shown = panel_json({**document, "nested": {"map": {"png_base64": "A" * 400, "min": 0.0}}})
    assert shown["images_png_base64"] == "2 PNG image(s), base64 in the REST answer; shown as pictures here"
    assert shown["nested"]["map"]["min"] == 0.0 and "400 characters" in shown["nested"]["map"]["png_base64"]
    assert shown["shapes"] == document["shapes"] and len(str(shown)) < 600


def test_generated_samples_are_shown_larger_but_drawn_as_they_are():
    """lct's 32-px samples: `draw()` keeps their pixels (the CLI saves it), the demo shows x8
    (nearest, 2 px between cells)."""
    from zoo.results import Generation

    samples = [np.full((32, 32, 3), v, np.uint8) for v in (10, 200, 90)]
    generation = Generation(samples, seeds=[0, 1, 2])
    assert generation.draw().size == (64, 64)
    shown = np.asarray(_picture(generation, None))
    assert shown.shape == (2 * 256 + 2, 2 * 256 + 2, 3)
    assert (shown[:256, :256] == 10).all() and (shown[:256, 258:] == 200).all() and (shown[258:, :256] == 90).all()
    assert (shown[:, 256:258] == 255).all()  # the gap
    assert np.array_equal(np.asarray(Generation([samples[0]]).draw(scale=4)), samples[0].repeat(4, 0).repeat(4, 1))
