"""The demo tests reuse the serving tests' doubles (tests/serving/serving_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

from serving_support import register_fakes, unregister_fakes  # noqa: E402


@pytest.fixture(scope="module")
def fakes():
    register_fakes()
    try:
        yield
    finally:
        unregister_fakes()
