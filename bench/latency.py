"""Latency suite: every registered graph under PyTorch eager, torch.compile and ONNX Runtime.

For each model's variants (micro and the paper sizes that fit in memory), each graph on its
card, batch 1 and batch 8: the median and p90 of interleaved rounds, and the ratios
eager / contender (above 1: the contender is faster). Threads are pinned (torch and ONNX
Runtime intra-op alike) and stated in the document.

Batch-1 cells of every variant run before any batch-8 cell, so when the time budget runs
out it is the largest cells that are skipped, each with its reason.

    zoo bench latency [--quick] [--json]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zoo.bench.common import (
    Budget,
    error_text,
    format_table,
    log,
    machine_info,
    measure_interleaved,
    new_document,
    pin_threads,
    ratio,
    round_sig,
    time_call,
    write_document,
)
from zoo.bench.graphs import OnnxGraphs, batch_sizes, eager_runner, first_output, graph_inputs, max_abs_diff, onnx_graphs, variant_cells

BATCHES = (1, 8)
BACKENDS = ("eager", "compile", "onnxruntime")
# Quick runs on CPU leave torch.compile out: inductor's cold compile alone takes over a minute
# on two shared cores (measured: 72 s for EfficientAD micro), more than the quick budget.
QUICK_CPU_BACKENDS = ("eager", "onnxruntime")
BUDGET_S = {True: 50.0, False: 270.0}
CELL_BUDGET_S = {True: 2.0, False: 15.0}
MIN_REPS = {True: 3, False: 7}
MAX_REPS = {True: 30, False: 200}
# A cold inductor compile of a small graph took 70 s here; never start one with less left.
COMPILE_RESERVE_S = 90.0


class _Setup:
    """Per (model, variant): the pipeline, its compiled graphs and its ONNX Runtime sessions."""

    def __init__(self, model: str, variant: str, backends: tuple[str, ...], threads: int):
        from zoo.registry import create_model

        self.pipeline = create_model(model, variant, weights="random", device="cpu")
        self.specs = self.pipeline.graph_specs()
        self.compiled: dict[str, Callable[..., Any]] = {}
        self.onnx = OnnxGraphs(error="not requested")
        if "onnxruntime" in backends:
            log(f"  exporting {model}/{variant} to ONNX ...")
            self.onnx = onnx_graphs(self.pipeline, threads)
            if self.onnx.error:
                log(f"  onnxruntime skipped for {model}/{variant}: {self.onnx.error}")

    def compiled_graph(self, spec: Any) -> Callable[..., Any]:
        if spec.name not in self.compiled:
            # Static shapes: each batch size gets its own specialised kernels, as deployed.
            self.compiled[spec.name] = torch.compile(spec.module, dynamic=False)
        return self.compiled[spec.name]


def run(
    quick: bool = False,
    out_dir: str | Path | None = None,
    threads: int | None = None,
    budget_s: float | None = None,
    command: str | None = None,
    models: list[str] | None = None,
    backends: tuple[str, ...] | None = None,
    batches: tuple[int, ...] = BATCHES,
    **_: Any,
) -> dict[str, Any]:
    """Measure, print progress to stderr, write the document to `out_dir` (if given), return it."""
    threads = pin_threads(threads)
    budget = Budget(budget_s or BUDGET_S[quick])
    backends = tuple(backends or (QUICK_CPU_BACKENDS if quick else BACKENDS))
    unknown = set(backends) - set(BACKENDS)
    if unknown or "eager" not in backends:
        raise ValueError(f"backends must include 'eager' and come from {BACKENDS}, got {backends}")
    document = new_document(
        "latency",
        quick=quick,
        machine=machine_info(threads),
        command=command,
        settings={
            "threads": threads,
            "backends": list(backends),
            "batches": list(batches),
            "budget_s": budget.seconds,
            "min_reps": MIN_REPS[quick],
            "max_reps": MAX_REPS[quick],
            "cell_budget_s": CELL_BUDGET_S[quick],
            "weights": "random (latency does not depend on the values)",
            "timing": "perf_counter per call; rounds call every backend once in rotating order",
            "compile": "torch.compile(module, dynamic=False), default mode; compile time reported apart",
            "onnxruntime": "zoo.export.onnx.export_onnx + zoo.export.runtime.OnnxRuntimeRunner (CPU provider, sequential, intra-op = threads)",
            "speedup": "eager median / backend median (above 1: faster than eager)",
        },
        results=[],
        skipped=[],
    )
    if quick and "compile" not in backends:
        document["skipped"].append({"what": "torch.compile", "reason": "quick run on CPU: a cold inductor compile exceeds the quick budget"})
    log(f"latency: threads {threads}, backends {', '.join(backends)}, budget {budget.seconds:.0f} s")
    cells = variant_cells(quick, models=models)
    setups: dict[tuple[str, str], _Setup] = {}
    measured: set[tuple[Any, str, int]] = set()
    try:
        for batch in batches:
            for cell in cells:
                if cell.skipped:
                    if batch == batches[0]:
                        document["skipped"].append({"model": cell.model, "variant": cell.variant, "reason": cell.skipped})
                    continue
                key = (cell.model, cell.variant)
                if key not in setups:
                    if budget.remaining < 5:
                        document["skipped"].append({"model": cell.model, "variant": cell.variant, "reason": "time budget spent"})
                        continue
                    setups[key] = _Setup(cell.model, cell.variant, backends, threads)
                    document.setdefault("onnx_export", {})[f"{cell.model}/{cell.variant}"] = setups[key].onnx.info or {"error": setups[key].onnx.error}
                setup = setups[key]
                for spec in setup.specs:
                    b = batch_sizes(spec, (batch,))[0]
                    if (key, spec.name, b) in measured:
                        continue  # clamped onto a batch size already measured
                    measured.add((key, spec.name, b))
                    entry = _measure_cell(cell, setup, spec, b, backends, budget, quick)
                    (document["results"] if "backends" in entry else document["skipped"]).append(entry)
                    _log_entry(entry)
    finally:
        for setup in setups.values():
            setup.onnx.close()
    document["elapsed_s"] = round(budget.elapsed, 1)
    if out_dir is not None:
        path = write_document(document, out_dir)
        log(f"latency: wrote {path}")
    return document


def _measure_cell(cell: Any, setup: _Setup, spec: Any, batch: int, backends: tuple[str, ...], budget: Budget, quick: bool) -> dict[str, Any]:
    where = {"model": cell.model, "variant": cell.variant, "graph": spec.name, "batch": batch, "params": cell.params}
    inputs = graph_inputs(spec, batch)
    eager = eager_runner(spec.module, inputs)
    estimate = time_call(eager)  # also the first warm-up call
    contenders: dict[str, Callable[[], Any]] = {"eager": eager}
    notes: dict[str, Any] = {}
    if "onnxruntime" in backends:
        runner = setup.onnx.runners.get(spec.name)
        if runner is not None:
            contenders["onnxruntime"] = lambda: runner(*inputs)
        else:
            notes["onnxruntime"] = setup.onnx.error or "graph failed export parity"
    needed = estimate * (len(contenders) + ("compile" in backends)) * (MIN_REPS[quick] + 1)
    if needed > budget.remaining:
        left = f"{budget.remaining:.0f} s left" if budget.remaining > 0 else "none left"
        return {**where, "reason": f"time budget: needs about {needed:.0f} s, {left}"}
    if "compile" in backends:
        if budget.remaining - needed < COMPILE_RESERVE_S:
            notes["compile"] = f"skipped: {budget.remaining:.0f} s left, a compile may take {COMPILE_RESERVE_S:.0f} s"
        else:
            compiled = setup.compiled_graph(spec)
            try:
                compile_s = time_call(eager_runner(compiled, inputs))
                contenders["compile"] = eager_runner(compiled, inputs)
                notes["compile_s"] = round(compile_s, 1)
            except Exception as err:  # noqa: BLE001 - a graph inductor cannot compile is a finding
                notes["compile"] = f"failed: {error_text(err)}"
    reference = eager()
    agreement = {name: round_sig(max_abs_diff(reference, fn()), 3) for name, fn in contenders.items() if name != "eager"}
    scale = round_sig(float(first_output(reference).detach().float().abs().max()), 3)
    timings = measure_interleaved(
        contenders,
        warmup=1,
        min_reps=MIN_REPS[quick],
        max_reps=MAX_REPS[quick],
        budget_s=min(CELL_BUDGET_S[quick], max(budget.remaining - 5, 0)),
    )
    eager_median = timings["eager"].median_ms
    return {
        **where,
        "backends": {name: t.summary() for name, t in timings.items()},
        "speedup_vs_eager": {name: ratio(eager_median, t.median_ms) for name, t in timings.items() if name != "eager"},
        "p90_speedup_vs_eager": {name: ratio(timings["eager"].p90_ms, t.p90_ms) for name, t in timings.items() if name != "eager"},
        "max_abs_diff_vs_eager": agreement,
        "eager_output_max_abs": scale,
        "notes": notes,
    }


def _log_entry(entry: dict[str, Any]) -> None:
    head = f"  {entry['model']}/{entry['variant']} {entry['graph']} b{entry['batch']}"
    if "backends" not in entry:
        log(f"{head}: skipped ({entry['reason']})")
        return
    speed = ", ".join(f"{k} x{v}" for k, v in entry["speedup_vs_eager"].items())
    log(f"{head}: eager {entry['backends']['eager']['median_ms']} ms median; {speed or 'eager only'}")


def render(document: dict[str, Any]) -> str:
    """Speedups over eager per cell (median and p90); absolute medians only for GPU runs."""
    gpu = str(document["machine"].get("device", "cpu")).startswith("cuda")
    rows = []
    for e in document["results"]:
        row = [f"{e['model']}/{e['variant']}", e["graph"], e["batch"], e["backends"]["eager"]["n"]]
        for name in ("compile", "onnxruntime"):
            med = e["speedup_vs_eager"].get(name)
            p90 = e["p90_speedup_vs_eager"].get(name)
            row.append(f"x{med} (p90 x{p90})" if med is not None else "-")
        if gpu:
            row.append(e["backends"]["eager"]["median_ms"])
        rows.append(row)
    header = ["model", "graph", "batch", "rounds", "compile vs eager", "onnxruntime vs eager"] + (["eager ms"] if gpu else [])
    lines = [
        f"latency ({document['date']}, threads {document['settings']['threads']}, {document['machine']['cpu']}):",
        format_table(rows, header),
        "speedup = eager median / backend median in the same interleaved rounds (above 1: faster than eager)",
    ]
    for e in document["results"]:
        for key, note in e.get("notes", {}).items():
            if key != "compile_s":
                lines.append(f"{e['model']}/{e['variant']} {e['graph']} b{e['batch']}: {key} {note}")
    for s in document["skipped"]:
        what = s.get("what") or f"{s.get('model')}/{s.get('variant')}" + (f" {s['graph']} b{s['batch']}" if "graph" in s else "")
        lines.append(f"skipped {what}: {s['reason']}")
    return "\n".join(lines)
