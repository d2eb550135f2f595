"""The demo tests reuse the serving tests' doubles (tests/serving/serving_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

from serving_support import fakes  # noqa: E402,F401 - a fixture

