"""FLOPs suite: FLOPs per image and how close each graph runs to the machine's matmul peak.

FLOPs come from torch's own counter (`torch.utils.flop_counter.FlopCounterMode`, which counts
convolutions, matmuls and attention at 2 FLOPs a multiply-add; elementwise ops, pooling and
interpolation are not counted), on the meta device so paper sizes cost nothing. The peak is a
large square fp32 matmul timed *in the same interleaved rounds* as the graph, so load on a
shared machine lowers both alike and the fraction of peak stays meaningful.

    zoo bench flops [--quick] [--json]
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
    round_sig,
    time_call,
    write_document,
)

BATCHES = (1, 8)
BUDGET_S = {True: 40.0, False: 240.0}
CELL_BUDGET_S = {True: 2.0, False: 12.0}
MIN_REPS = {True: 3, False: 5}
MATMUL_N = {"cpu": 1024, "cuda": 8192}
COUNTER_NOTE = "torch.utils.flop_counter: conv, matmul and attention at 2 FLOPs per multiply-add; elementwise, pooling and resizing not counted"


def module_flops(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of `module(*inputs)` by torch's counter (meta tensors work: nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return int(counter.get_total_flops())


def count_flops(spec: Any, batch: int = 1) -> int:
    """FLOPs of one call of graph `spec` at `batch` (inputs at the card's opt sizes).

    Runs on the meta device when the module's parameters live there (no memory, no time);
    otherwise on real tensors of the module's device."""
    module = spec.module
    device = next(iter(module.parameters()), torch.empty(0)).device
    dims = {k: v[1] for k, v in spec.dims.items()}
    if "batch" in spec.dims:
        dims["batch"] = batch
    inputs = []
    for tensor_spec in spec.inputs:
        shape = tensor_spec.concrete_shape(dims)
        dtype = getattr(torch, tensor_spec.dtype)
        low, high = tensor_spec.value_range
        if device.type == "meta":
            inputs.append(torch.empty(shape, dtype=dtype, device="meta"))
        elif dtype.is_floating_point:
            inputs.append(torch.rand(shape, device=device) * (high - low) + low)
        else:
            inputs.append(torch.randint(int(low), int(high) + 1, shape, dtype=dtype, device=device))
    return module_flops(module, tuple(inputs))


def graph_flops(model: str, variant: str) -> dict[str, int]:
    """FLOPs per image of each graph of a registered variant (meta device first, CPU fallback)."""
    from zoo.registry import build_pipeline, create_model

    out: dict[str, int] = {}
    with torch.device("meta"):
        meta = build_pipeline(model, variant)
    for spec in meta.graph_specs():
        try:
            out[spec.name] = count_flops(spec, 1)
        except Exception as err:  # noqa: BLE001 - data-dependent graphs need real tensors
            log(f"  {model}/{variant} {spec.name}: meta count failed ({error_text(err)}), counting on CPU")
            real = create_model(model, variant, weights="random").graph(spec.name)
            out[spec.name] = count_flops(real, 1)
    return out


def matmul_runner(n: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Callable[[], Any], int]:
    """A square n x n matmul (2 n^3 FLOPs) to time as the machine's peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def call() -> torch.Tensor:
        return a @ b

    return call, 2 * n**3


def run(
    quick: bool = False,
    out_dir: str | Path | None = None,
    threads: int | None = None,
    budget_s: float | None = None,
    command: str | None = None,
    models: list[str] | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Count, time against the matmul peak, print progress to stderr, write to `out_dir` if given."""
    from zoo.bench.graphs import batch_sizes, eager_runner, graph_inputs, variant_cells

    threads = pin_threads(threads)
    budget = Budget(budget_s or BUDGET_S[quick])
    n = MATMUL_N["cpu"]
    matmul, matmul_flops = matmul_runner(n)
    document = new_document(
        "flops",
        quick=quick,
        machine=machine_info(threads),
        command=command,
        settings={
            "threads": threads,
            "batches": list(BATCHES),
            "budget_s": budget.seconds,
            "counter": COUNTER_NOTE,
            "peak": f"fp32 {n}x{n} matmul (torch.matmul), timed in the same interleaved rounds as each graph",
            "achieved": "FLOPs per image x batch / eager median",
        },
        results=[],
        skipped=[],
    )
    log(f"flops: threads {threads}, peak from a {n}x{n} fp32 matmul, budget {budget.seconds:.0f} s")
    peaks: list[float] = []
    for cell in variant_cells(quick, models=models):
        if cell.skipped:
            document["skipped"].append({"model": cell.model, "variant": cell.variant, "reason": cell.skipped})
            continue
        flops = graph_flops(cell.model, cell.variant)
        pipeline = None
        for graph, per_image in flops.items():
            for batch in BATCHES:
                where = {"model": cell.model, "variant": cell.variant, "graph": graph, "batch": batch, "params": cell.params, "flops_per_image": per_image}
                if budget.remaining < 5:
                    document["skipped"].append({**where, "reason": "time budget spent"})
                    continue
                if pipeline is None:
                    from zoo.registry import create_model

                    pipeline = create_model(cell.model, cell.variant, weights="random")
                spec = pipeline.graph(graph)
                b = batch_sizes(spec, (batch,))[0]
                if b != batch:
                    document["skipped"].append({**where, "reason": f"batch {batch} outside the graph's range"})
                    continue
                eager = eager_runner(spec.module, graph_inputs(spec, b))
                estimate = time_call(eager) + time_call(matmul)
                needed = estimate * (MIN_REPS[quick] + 1)
                if needed > budget.remaining:
                    document["skipped"].append({**where, "reason": f"time budget: needs about {needed:.0f} s, {budget.remaining:.0f} s left"})
                    continue
                timings = measure_interleaved(
                    {"graph": eager, "matmul": matmul},
                    warmup=0,
                    min_reps=MIN_REPS[quick],
                    max_reps=100,
                    budget_s=min(CELL_BUDGET_S[quick], max(budget.remaining - 5, 0)),
                )
                achieved = per_image * b / (timings["graph"].median_ms / 1000) / 1e9
                peak = matmul_flops / (timings["matmul"].median_ms / 1000) / 1e9
                peaks.append(peak)
                entry = {
                    **where,
                    "gflops_per_image": round_sig(per_image / 1e9),
                    "eager": timings["graph"].summary(),
                    "achieved_gflops_s": round_sig(achieved, 3),
                    "peak_gflops_s": round_sig(peak, 3),
                    "fraction_of_peak": round_sig(achieved / peak, 3),
                }
                document["results"].append(entry)
                log(f"  {cell.model}/{cell.variant} {graph} b{b}: {entry['gflops_per_image']} GFLOP/image, "
                    f"{entry['achieved_gflops_s']} GFLOP/s = {entry['fraction_of_peak']:.0%} of the matmul's {entry['peak_gflops_s']}")
    document["peak_gflops_s"] = {"median_over_cells": round_sig(sorted(peaks)[len(peaks) // 2], 3) if peaks else None, "max": round_sig(max(peaks), 3) if peaks else None}
    document["elapsed_s"] = round(budget.elapsed, 1)
    if out_dir is not None:
        log(f"flops: wrote {write_document(document, out_dir)}")
    return document


def render(document: dict[str, Any]) -> str:
    rows = [
        [f"{e['model']}/{e['variant']}", e["graph"], e["batch"], e["gflops_per_image"], e["achieved_gflops_s"], e["peak_gflops_s"], f"{e['fraction_of_peak']:.1%}"]
        for e in document["results"]
    ]
    lines = [
        f"flops ({document['date']}, threads {document['settings']['threads']}, {document['machine']['cpu']}):",
        format_table(rows, ["model", "graph", "batch", "GFLOP/image", "achieved GFLOP/s", "matmul GFLOP/s", "of peak"]),
        f"counter: {document['settings']['counter']}",
    ]
    lines += [f"skipped {s['model']}/{s['variant']}" + (f" {s['graph']} b{s['batch']}" if "graph" in s else "") + f": {s['reason']}" for s in document["skipped"]]
    return "\n".join(lines)
