"""Example inputs that follow a card's typed inputs, for the registry-wide tests (so a new family is
covered without editing them)."""

from __future__ import annotations

import numpy as np
import pytest

SIZES = ((48, 64), (40, 40), (40, 56))
SENTENCE = "the small red triangle left of the blue circle"


def example_inputs(card, rng: np.random.Generator, count: int = 2) -> list:
    """`count` inputs for `card`: None for a generator, an image for one image input, and a dict of an
    image plus a short sentence for each required text input (e.g. a referring expression); skips the
    calling test for input kinds that have no example yet."""
    images = [rng.integers(0, 255, (*SIZES[i % len(SIZES)], 3), dtype=np.uint8) for i in range(count)]
    if not card.inputs:
        return [None] * count
    if len(card.inputs) == 1 and card.inputs[0].is_image:
        return images
    if len(card.image_inputs) == 1 and all(i.is_image or i.kind == "text" or not i.required for i in card.inputs):
        return [{s.name: image if s.is_image else SENTENCE for s in card.inputs if s.required} for image in images]
    if all(i.kind == "text" or not i.required for i in card.inputs):  # text in, optional rest (e.g. a text-to-image prompt)
        return [{s.name: SENTENCE for s in card.inputs if s.required} for _ in images]
    pytest.skip(f"{card.name}: a registry-wide example for inputs {[i.kind for i in card.inputs]} is not written yet")
