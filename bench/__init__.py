"""Benchmarks that print ratios measured side by side in one run, with JSON under bench/results/.

Suites (`zoo bench SUITE [--quick] [--json]`):

- `latency`   every registered graph: PyTorch eager vs torch.compile vs ONNX Runtime, batch 1 and 8.
- `reference` EfficientAD-S/-M against anomalib's EfficientAdModel: inference and one training step.
- `serving`   `zoo serve` on loopback under a bounded load generator: batching on/off, server overhead.
- `ladder`    each family's main graph down the CPU precision ladder (eager, ORT/OpenVINO fp32, bf16, int8), EfficientAD-S vs anomalib.
- `flops`     FLOPs per image and achieved GFLOP/s against a large matmul measured in the same run.
- `gpu`       the CUDA script (`bench/gpu.sh OUT`); `--device cpu --quick` until it has run on a GPU.
- `demo-check` every bundled example through its bundled weights, checked against what it should show.
- `report`    regenerate bench/results/TABLE.md (the README's performance table) from the JSON files.

Each suite module exposes `run(quick=..., out_dir=..., threads=..., budget_s=..., command=...) -> dict`
(the document it wrote) and `render(document) -> str` (the terminal summary).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

SUITES: dict[str, str] = {
    "latency": "zoo.bench.latency",
    "reference": "zoo.bench.reference",
    "serving": "zoo.bench.serving",
    "flops": "zoo.bench.flops",
    "ladder": "zoo.bench.ladder",
    "gpu": "zoo.bench.gpu",
    "report": "zoo.bench.report",
    "demo-check": "zoo.bench.demo_check",
}


def suite_module(name: str) -> ModuleType:
    """The module of suite `name`; a clear error lists the suites for an unknown one."""
    if name not in SUITES:
        raise KeyError(f"unknown bench suite {name!r}; suites: {', '.join(SUITES)}")
    return importlib.import_module(SUITES[name])


def run_suite(name: str, **options: Any) -> dict[str, Any]:
    """Run one suite with its options (quick, out_dir, threads, budget_s, command, ...)."""
    return suite_module(name).run(**options)


def render(name: str, document: dict[str, Any]) -> str:
    """The terminal summary of a suite's document."""
    return suite_module(name).render(document)


__all__ = ["SUITES", "render", "run_suite", "suite_module"]
