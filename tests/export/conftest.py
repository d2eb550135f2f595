"""Fixtures for the export tests: every registered model (plus the toys in toys.py), each
exported once per format per session and shared by the tests that read the files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import toys  # noqa: E402

from zoo import registry  # noqa: E402


# The toys are registered only while a test module of this folder runs, so other tests that
# walk the registry never see them.
@pytest.fixture(autouse=True, scope="module")
def toy_models() -> Any:
    toys.register()
    yield
    toys.unregister()


class Exports:
    """Per (model, format): weights saved once, the export made once, both reused."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[tuple[str, str], tuple[Path, dict[str, Any], Path]] = {}

    def weights(self, name: str) -> Path:
        from zoo.weights import save_weights

        path = self.root / name / "weights.safetensors"
        if not path.is_file():
            pipeline = registry.create_model(name, "micro", weights="random")
            save_weights(pipeline.model, path, {"model": name, "variant": "micro"})
        return path

    def get(self, name: str, fmt: str = "onnx") -> tuple[Path, dict[str, Any], Path]:
        """(export dir, manifest, weights path)."""
        key = (name, fmt)
        if key not in self.cache:
            from zoo.export.fp16 import export_onnx_fp16
            from zoo.export.onnx import export_onnx

            weights = self.weights(name)
            pipeline = registry.create_model(name, "micro", weights=weights)
            out = self.root / name / fmt
            make = export_onnx_fp16 if fmt == "onnx-fp16" else export_onnx
            manifest = make(pipeline, out, weights=weights, raise_on_failure=False)
            self.cache[key] = (out, manifest, weights)
        return self.cache[key]


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tmp_path_factory.mktemp("exports"))
