"""Edit distance, NED and CER on hand-counted cases."""

from __future__ import annotations

import pytest

from zoo.metrics.text import character_error_rate, edit_distance, normalized_edit_similarity


def test_edit_distance_counts_each_edit_once():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3 and edit_distance("文档", "文档") == 0


def test_ned_and_cer():
    assert normalized_edit_similarity("", "") == 1.0
    assert normalized_edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert character_error_rate("kitten", "sitting") == pytest.approx(3 / 7)
    assert character_error_rate("a much longer reading", "ab") > 1.0
