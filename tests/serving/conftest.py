"""Fixtures for the serving tests: the test-double models (registered for one test module
at a time, so no other test sees them) and a live server on a free loopback port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# serving_support sits beside this file; make it importable under any pytest import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_support import BROKEN, FAKE, MAX_BODY, MAX_PIXELS, fakes, live  # noqa: E402,F401 - fakes is a fixture

from zoo.serving import BatchingConfig, Limits, create_app  # noqa: E402


@pytest.fixture(scope="module")
def server(fakes):  # noqa: F811 - the fixture imported above, requested by name
    """fake-anomaly and fake-broken behind small limits and a 20 ms batching window."""
    app = create_app(
        [FAKE, BROKEN],
        batching=BatchingConfig(max_batch_size=8, max_queue_delay_s=0.02, queue_size=64, timeout_s=10),
        limits=Limits(max_body_bytes=MAX_BODY, max_image_pixels=MAX_PIXELS),
        random_weights=True,  # the doubles have no bundled weights
    )
    with live(app) as running:
        yield running
