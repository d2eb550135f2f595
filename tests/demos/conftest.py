"""The demo tests reuse the serving tests' doubles (tests/serving/serving_support.py) and drive
chromium through tests/demos/demo_browser.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # demo_browser, the headless-chromium driver

from serving_support import fakes  # noqa: E402,F401 - a fixture

