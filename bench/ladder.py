"""Ladder suite: each family's main graph down the CPU precision ladder, side by side in one run.

    zoo bench ladder [--quick] [--json]          # python -m zoo.bench ladder

Contenders (batch 1, the graph's own input recorded from the family's data):
PyTorch eager, ONNX Runtime fp32, OpenVINO fp32, OpenVINO bf16 (where the CPU reports BF16),
ONNX Runtime int8 (QDQ) and OpenVINO int8 (NNCF), each int8 file calibrated on the family's
own data with the network layers only quantised (zoo.export.quantize, the code `zoo export` runs).
Each lower precision carries the task metric `zoo export` records (held-out data, declared
tolerance); "best bf16" / "best int8" in the table is the fastest that passes it. Every cell is
timed at 1 thread and at all the CPUs, each setting in its own interleaved rounds.

EfficientAD-S (256 x 256, C = 384) also runs against anomalib's eager `EfficientAdModel` with the
same weights (zoo.bench.reference.build_pair: random weights with non-trivial statistics; anomalib's
teacher cannot be distilled offline), and every precision's image AUROC on >= 180 held-out
images of zoo.data.anomaly's `parts` (half good, half defective) and its score rank correlation
with fp32. Goal: the best rung >= 3x anomalib eager at equal quality (AUROC within 0.01, rank
correlation >= 0.99).

Graphs a pipeline calls several times a prediction (a sampler's step) are not quantised: the
int8 cell says so. The machine is shared (load average in the JSON): ratios, not absolute times.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.bench.common import (
    Budget,
    error_text,
    format_table,
    log,
    machine_info,
    measure_interleaved,
    new_document,
    ratio,
    round_sig,
    write_document,
)

CONTENDERS = ("eager", "ort_fp32", "ov_fp32", "ov_bf16", "ort_int8", "ov_int8")
BUDGET_S = {True: 240.0, False: 1500.0}
REPS = {True: (3, 10, 2.0), False: (7, 40, 6.0)}  # min rounds, max rounds, seconds per setting
HELD_OUT_IMAGES = {True: 48, False: 192}
GOAL_VS_ANOMALIB = 3.0
QUALITY = {"auroc_within": 0.01, "rank_correlation": 0.99}


def main_graph(pipeline: Any, calibration: Any = None) -> Any:
    """The family's main graph: the one with the most FLOPs per prediction (torch's flop counter at
    batch 1, times the calls per prediction the calibration run counted: a sampler's denoiser rather
    than its VAE); the first on ties or where counting fails."""
    from torch.utils.flop_counter import FlopCounterMode

    specs = pipeline.graph_specs()
    flops = []
    for spec in specs:
        try:
            counter = FlopCounterMode(display=False)
            dims = {"batch": 1} if "batch" in spec.dims else {}
            with counter, torch.inference_mode():
                spec.module.eval()(*spec.example_inputs(dims, seed=0))
            flops.append(counter.get_total_flops())
        except Exception:  # noqa: BLE001 - a graph the counter cannot follow competes with 0
            flops.append(0)
    calls = [max(calibration.iterative(spec), 1.0) if calibration is not None else 1.0 for spec in specs]
    return specs[max(range(len(specs)), key=lambda i: (flops[i] * calls[i], -i))]


def _setting_threads(quick: bool) -> list[int]:
    from zoo.bench.common import available_cpus

    cpus = available_cpus()
    return [1] if quick or cpus == 1 else [1, cpus]


class Rung:
    """One graph's exported files and a factory of runners per thread count."""

    def __init__(self, pipeline: Any, spec: Any, workdir: Path, calibration: Any):
        self.pipeline, self.spec, self.workdir, self.calibration = pipeline, spec, workdir, calibration
        self.files: dict[str, Path] = {}
        self.info: dict[str, Any] = {}

    def build(self) -> None:
        """fp32 ONNX (parity-checked), its IR, and both int8 files with their task metrics."""
        from zoo.export.onnx import export_onnx_graph
        from zoo.export.openvino import bf16_unsupported_reason, convert_onnx, require_openvino
        from zoo.export.quantize import iterative_reason, judge, nncf_quantize, ort_quantize

        spec = self.spec
        entry = export_onnx_graph(spec, self.workdir)
        if not entry["parity"]["passed"]:
            raise RuntimeError("fp32 ONNX export failed its parity check")
        onnx_path = self.workdir / entry["file"]
        self.files["ort_fp32"] = onnx_path
        xml = self.workdir / f"{spec.name}.xml"
        model = convert_onnx(onnx_path, xml)
        self.files["ov_fp32"] = xml
        log(f"ladder: {spec.name}: fp32 ONNX and IR ready; judging bf16 and int8 on held-out data")
        reason = bf16_unsupported_reason()
        if reason is None:
            self.files["ov_bf16"] = xml
            runner = self.ov_runner(xml, "bf16", 0)
            self.info["ov_bf16"] = {"task_metric": judge(self.pipeline, spec, runner, "bf16", self.calibration)}
        else:
            self.info["ov_bf16"] = {"skipped": reason}
        loop = iterative_reason(self.calibration, spec)
        if loop:
            self.info["ort_int8"] = self.info["ov_int8"] = {"skipped": loop}
            return
        q_onnx = self.workdir / f"{spec.name}.int8.onnx"
        quant = ort_quantize(onnx_path, q_onnx, spec, self.calibration)
        self.files["ort_int8"] = q_onnx
        self.info["ort_int8"] = {"quantization": quant, "task_metric": judge(self.pipeline, spec, self.ort_runner(q_onnx, 0), "int8", self.calibration)}
        try:
            q_model, quant = nncf_quantize(model, spec, self.calibration)
            q_xml = self.workdir / f"{spec.name}.int8.xml"
            require_openvino().save_model(q_model, str(q_xml), compress_to_fp16=False)
            metric = judge(self.pipeline, spec, self.ov_runner(q_xml, "int8", 0), "int8", self.calibration)
        except Exception as err:  # noqa: BLE001 - e.g. an IR OpenVINO cannot compile: this rung only
            self.info["ov_int8"] = {"skipped": f"failed: {error_text(err)}"}
            return
        self.files["ov_int8"] = q_xml
        self.info["ov_int8"] = {"quantization": quant, "task_metric": metric}

    def ort_runner(self, path: Path, threads: int) -> Callable[..., list[np.ndarray]]:
        from zoo.export.runtime import make_session

        session = make_session(path, "cpu", threads or None)
        names_in, names_out = [t.name for t in self.spec.inputs], [t.name for t in self.spec.outputs]
        return lambda *arrays: session.run(names_out, dict(zip(names_in, arrays)))

    def ov_runner(self, path: Path, precision: str, threads: int) -> Callable[..., list[np.ndarray]]:
        from zoo.export.openvino import OpenVinoRunner, compile_model

        return OpenVinoRunner(compile_model(path, precision, threads or None), self.spec, "cpu", precision).run_numpy

    def runners(self, threads: int) -> dict[str, Callable[..., list[np.ndarray]]]:
        module = self.spec.module.eval()

        def eager(*arrays: np.ndarray) -> Any:
            with torch.inference_mode():
                return module(*(torch.from_numpy(a) for a in arrays))

        out: dict[str, Callable[..., Any]] = {"eager": eager}
        for name, path in self.files.items():
            if name.startswith("ort"):
                out[name] = self.ort_runner(path, threads)
            else:
                out[name] = self.ov_runner(path, {"ov_fp32": "f32", "ov_bf16": "bf16", "ov_int8": "int8"}[name], threads)
        return out


def _example(rung: Rung) -> tuple[np.ndarray, ...]:
    rows, _ = rung.calibration.samples(rung.spec, "test", limit=1)
    return tuple(x.numpy() for x in rows[0])


def _time(rung: Rung, extra: dict[str, Callable[[], Any]], threads: int, quick: bool) -> dict[str, Any]:
    torch.set_num_threads(threads)
    runners = rung.runners(threads)
    x = _example(rung)
    contenders = {name: (lambda r=run: r(*x)) for name, run in runners.items()}
    contenders.update(extra)
    min_reps, max_reps, seconds = REPS[quick]
    timings = measure_interleaved(contenders, warmup=2, min_reps=min_reps, max_reps=max_reps, budget_s=seconds)
    return {name: {**t.summary(), "samples_ms": [round_sig(v, 3) for v in t.samples_ms]} for name, t in timings.items()}


def _spread(base: list[float], other: list[float]) -> list[float | None]:
    """10th and 90th percentile of the per-round ratios base / other (rounds are aligned)."""
    from zoo.bench.common import percentile

    per_round = [b / o for b, o in zip(base, other) if o]
    return [round_sig(percentile(per_round, 10), 3), round_sig(percentile(per_round, 90), 3)] if per_round else [None, None]


def _best(rung: Rung, timing: dict[str, Any], prefix: tuple[str, ...]) -> tuple[str | None, float | None]:
    """The fastest contender of a rung whose task metric passed."""
    best, best_ms = None, None
    for name in prefix:
        info = rung.info.get(name, {})
        if name not in timing or "skipped" in info or not info.get("task_metric", {}).get("passed", False):
            continue
        ms = timing[name]["median_ms"]
        if best_ms is None or ms < best_ms:
            best, best_ms = name, ms
    return best, best_ms


def _summary(rung: Rung, timings: dict[int, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for threads, timing in timings.items():
        eager = timing["eager"]["median_ms"]
        row: dict[str, Any] = {name: ratio(eager, t["median_ms"]) for name, t in timing.items()}
        row["spread_p10_p90"] = {name: _spread(timing["eager"]["samples_ms"], t["samples_ms"]) for name, t in timing.items() if name != "eager"}
        for label, names in (("best_bf16", ("ov_bf16",)), ("best_int8", ("ort_int8", "ov_int8"))):
            name, ms = _best(rung, timing, names)
            row[label] = {"contender": name, "speedup_over_eager": ratio(eager, ms)}
        out[f"threads_{threads}"] = row
    return out


LOWER = ("ov_bf16", "ort_int8", "ov_int8")  # judged on every held-out image
FP32_SUBSET = 16  # fp32 runtimes (parity-checked at 1e-4) and anomalib: a subset confirms they rank alike


def _anomalib_quality(rung: Rung, theirs: torch.nn.Module, n: int, threads: int) -> dict[str, Any]:
    """Image AUROC of every lower precision on n held-out images, each one's score rank correlation
    with fp32 eager; fp32 runtimes and anomalib's eager model on the first FP32_SUBSET images."""
    from zoo.export.quantize import family_data, spearman
    from zoo.metrics.anomaly import image_auroc

    torch.set_num_threads(threads)
    data = family_data(rung.pipeline, "test", n, seed=2)
    batch, _ = rung.pipeline.preprocess(data.items)
    labels = np.asarray(data.labels)
    subset = np.concatenate([np.flatnonzero(labels == 0)[: FP32_SUBSET // 2], np.flatnonzero(labels == 1)[: FP32_SUBSET // 2]])
    names = [t.name for t in rung.spec.outputs]
    scores: dict[str, np.ndarray] = {}
    for name, run in rung.runners(threads).items():
        rows = np.arange(len(labels)) if name == "eager" or name in LOWER else subset
        parts = []
        for start in range(0, len(rows), 8):
            out = run(batch[rows[start : start + 8]].numpy())
            parts.append(np.asarray(out[names.index("score")]).reshape(-1))
        scores[name] = np.concatenate(parts)
        log(f"ladder: efficientad/s quality: {name} on {len(rows)} images done")
    with torch.inference_mode():
        scores["anomalib_eager"] = theirs(batch[subset]).pred_score.reshape(-1).numpy()
    ref = scores["eager"]
    result: dict[str, Any] = {"images": len(labels), "anomalous": int(labels.sum()), "source": data.source,
                              "fp32_subset": len(subset), "contenders": {}}
    for name, s in scores.items():
        rows = np.arange(len(labels)) if len(s) == len(labels) else subset
        base = image_auroc(ref[rows], labels[rows])
        auroc = image_auroc(s, labels[rows])
        rho = spearman(ref[rows], s)
        result["contenders"][name] = {
            "images": len(rows), "image_auroc": round(auroc, 4), "auroc_delta": round(auroc - base, 4), "rank_correlation": round(rho, 5),
            "equal_quality": bool(abs(auroc - base) <= QUALITY["auroc_within"] and rho >= QUALITY["rank_correlation"]),
        }
    return result


def run(
    quick: bool = False,
    out_dir: str | Path | None = None,
    threads: int | None = None,
    budget_s: float | None = None,
    command: str | None = None,
    models: list[str] | None = None,
    reference: bool = True,
    held_out: int | None = None,
    **_: Any,
) -> dict[str, Any]:
    """reference=False leaves out EfficientAD-S against anomalib (the families' rows only);
    held_out: held-out inputs per family's judge (default: what `zoo export` uses, 48; anomaly 96)."""
    from zoo.bench.graphs import quick_variant
    from zoo.export.quantize import calibration_inputs
    from zoo.registry import create_model, list_models

    budget = Budget(budget_s or BUDGET_S[quick])
    settings = [threads] if threads else _setting_threads(quick)
    document = new_document(
        "ladder", quick=quick, machine=machine_info(max(settings)), command=command,
        settings={"threads": settings, "batch": 1, "contenders": list(CONTENDERS), "quality": QUALITY, "goal_vs_anomalib": GOAL_VS_ANOMALIB,
                  "note": "the CPU is shared with other jobs during the run: ratios of medians of interleaved rounds"},
        graphs={}, skipped=[],
    )
    workroot = Path(tempfile.mkdtemp(prefix="zoo-bench-ladder-"))
    original_threads = torch.get_num_threads()
    import zoo.export.quantize as quantize
    saved = (quantize.HELD_OUT_ITEMS, quantize.HELD_OUT_ANOMALY)
    if held_out:
        quantize.HELD_OUT_ITEMS = quantize.HELD_OUT_ANOMALY = held_out
        document["settings"]["held_out_per_family"] = held_out
    try:
        # EfficientAD-S against anomalib first: the headline
        try:
            if reference:
                _efficientad_s(document, workroot, settings, quick)
        except Exception as err:  # noqa: BLE001 - recorded, the other families still run
            document["skipped"].append({"graph": "efficientad/s", "reason": error_text(err)})
            log(f"ladder: efficientad/s skipped: {error_text(err)}")
        cards = {card.name: card for card in list_models()}
        for card in [cards[m] for m in models if m in cards] if models else list(cards.values()):  # `models` in its own order
            if budget.remaining < 60:
                document["skipped"].append({"graph": card.name, "reason": "time budget spent"})
                continue
            variant = quick_variant(card)
            key = f"{card.name}/{variant}"
            started = time.perf_counter()
            try:
                weights = None if card.demo_weights_path(variant) is not None else "random"
                pipeline = create_model(card.name, variant, weights=weights)
                calibration = calibration_inputs(pipeline, size=8)
                spec = main_graph(pipeline, calibration)
                rung = Rung(pipeline, spec, workroot / card.name, calibration)
                rung.workdir.mkdir(parents=True, exist_ok=True)
                rung.build()
                timings = {t: _time(rung, {}, t, quick) for t in settings}
            except Exception as err:  # noqa: BLE001 - a family that cannot be laddered is a recorded outcome
                document["skipped"].append({"graph": key, "reason": error_text(err)})
                log(f"ladder: {key} skipped: {error_text(err)}")
                continue
            document["graphs"][key] = {"graph": spec.name, "weights": weights or "bundled", "timings": timings, "speedups": _summary(rung, timings),
                                       "rungs": rung.info, "calibration": calibration.train.data.source, "seconds": round(time.perf_counter() - started, 1)}
            log(f"ladder: {key} ({spec.name}) done in {time.perf_counter() - started:.0f} s: {_line(document['graphs'][key], max(settings))}")
    finally:
        quantize.HELD_OUT_ITEMS, quantize.HELD_OUT_ANOMALY = saved
        torch.set_num_threads(original_threads)
        shutil.rmtree(workroot, ignore_errors=True)
    document["elapsed_s"] = round(budget.elapsed, 1)
    document["table_rows"] = table_rows(document)
    if out_dir is not None:
        log(f"ladder: wrote {write_document(document, out_dir)}")
    return document


def _efficientad_s(document: dict[str, Any], workroot: Path, settings: list[int], quick: bool) -> None:
    from zoo.bench.reference import OUT_CHANNELS, build_pair
    from zoo.export.quantize import calibration_inputs

    ours, theirs = build_pair("s", OUT_CHANNELS[quick])
    spec = ours.graph_specs()[0]
    started = time.perf_counter()
    calibration = calibration_inputs(ours, size=16 if quick else 32)
    log(f"ladder: efficientad/s calibration recorded ({time.perf_counter() - started:.0f} s)")
    rung = Rung(ours, spec, workroot / "efficientad-s", calibration)
    rung.workdir.mkdir(parents=True, exist_ok=True)
    rung.build()
    x = torch.from_numpy(_example(rung)[0])

    def anomalib_eager() -> Any:
        with torch.inference_mode():
            return theirs(x)

    log(f"ladder: efficientad/s rungs built ({time.perf_counter() - started:.0f} s); timing")
    timings = {t: _time(rung, {"anomalib_eager": anomalib_eager}, t, quick) for t in settings}
    quality = _anomalib_quality(rung, theirs, HELD_OUT_IMAGES[quick], max(settings))
    vs: dict[str, Any] = {}
    for t, timing in timings.items():
        base = timing["anomalib_eager"]["median_ms"]
        row = {name: ratio(base, c["median_ms"]) for name, c in timing.items() if name != "anomalib_eager"}
        spread = {name: _spread(timing["anomalib_eager"]["samples_ms"], c["samples_ms"]) for name, c in timing.items() if name != "anomalib_eager"}
        fair = {n: r for n, r in row.items() if quality["contenders"].get(n, {}).get("equal_quality") and r is not None}
        best = max(fair, key=fair.get) if fair else None
        vs[f"threads_{t}"] = {"over_anomalib_eager": row, "spread_p10_p90": spread, "best_at_equal_quality": best, "best_ratio": fair.get(best) if best else None,
                              "goal_met": bool(best and fair[best] >= GOAL_VS_ANOMALIB)}
    document["graphs"]["efficientad/s"] = {
        "graph": spec.name, "weights": "random (anomalib's EfficientAdModel, seed 0, non-trivial statistics), converted", "image_size": 256,
        "out_channels": OUT_CHANNELS[quick], "timings": timings, "speedups": _summary(rung, timings), "vs_anomalib": vs, "quality": quality,
        "rungs": rung.info, "calibration": calibration.train.data.source, "seconds": round(time.perf_counter() - started, 1),
    }
    log(f"ladder: efficientad/s vs anomalib: {vs}")


def _x(value: Any) -> str:
    return "-" if value is None else f"×{value}"


def table_rows(document: dict[str, Any]) -> list[list[str]]:
    """Rows for docs/benchmarks.md (`zoo bench report` reads `table_rows`): model, measure, value, goal."""
    rows = []
    s = document["graphs"].get("efficientad/s")
    if s:
        for setting, v in s["vs_anomalib"].items():
            threads = setting.split("_")[1]
            best = v["best_at_equal_quality"]
            goal = f"≥ ×{GOAL_VS_ANOMALIB} at equal quality ({'met' if v['goal_met'] else 'not met'})"
            q = s["quality"]["contenders"].get(best or "", {})
            rows.append(["EfficientAD-S", f"anomalib eager / ours best rung ({best}), b1, {threads} thread(s); AUROC Δ {q.get('auroc_delta')}, "
                         f"rank corr. {q.get('rank_correlation')} on {s['quality']['images']} held-out images", _x(v["best_ratio"]), goal])
    for key, entry in document["graphs"].items():
        model, variant = key.split("/")
        name = ("EfficientAD-S" if key == "efficientad/s" else f"{model} {variant}") + f" ({entry['graph']})"
        for setting, row in entry["speedups"].items():
            bf16, int8 = row.get("best_bf16", {}), row.get("best_int8", {})
            value = " / ".join([_x(row.get("ort_fp32")), _x(row.get("ov_fp32")), _x(bf16.get("speedup_over_eager")), _x(int8.get("speedup_over_eager"))])
            rows.append([name, f"over eager, b1, {setting.split('_')[1]} thread(s): ORT fp32 / OpenVINO fp32 / best bf16 / best int8 "
                         f"(int8: {int8.get('contender') or _why(entry, ('ort_int8', 'ov_int8'))})", value, ""])
    return rows


def _line(entry: dict[str, Any], threads: int) -> str:
    row = entry["speedups"].get(f"threads_{threads}", {})
    return ", ".join(f"{k} x{v}" for k, v in row.items() if not isinstance(v, dict) and k != "eager")


def _spread_text(row: dict[str, Any], name: str | None) -> str:
    low, high = row.get("spread_p10_p90", {}).get(name, [None, None]) if name else (None, None)
    return f" [{low}-{high}]" if low is not None else ""


def render(document: dict[str, Any]) -> str:
    lines = [f"ladder ({document['date']}, batch 1, speed-up over PyTorch eager; best = fastest passing its task metric; shared CPU):"]
    header = ["graph", "threads", "ORT fp32", "OV fp32", "best bf16", "best int8"]
    rows = []
    for key, entry in document["graphs"].items():
        for setting, row in entry["speedups"].items():
            bf16, int8 = row.get("best_bf16", {}), row.get("best_int8", {})
            rows.append([key, setting.split("_")[1], f"x{row.get('ort_fp32')}{_spread_text(row, 'ort_fp32')}", f"x{row.get('ov_fp32')}{_spread_text(row, 'ov_fp32')}",
                         f"x{bf16.get('speedup_over_eager')} ({bf16.get('contender')})" if bf16.get("contender") else _why(entry, ("ov_bf16",)),
                         f"x{int8.get('speedup_over_eager')} ({int8.get('contender')})" if int8.get("contender") else _why(entry, ("ort_int8", "ov_int8"))])
    lines.append(format_table(rows, header))
    s = document["graphs"].get("efficientad/s")
    if s:
        for setting, v in s["vs_anomalib"].items():
            lines.append(f"EfficientAD-S vs anomalib eager, {setting.replace('_', ' ')}: " + ", ".join(f"{k} x{r}" for k, r in v["over_anomalib_eager"].items())
                         + f"; best at equal quality: {v['best_at_equal_quality']} x{v['best_ratio']} (goal x{GOAL_VS_ANOMALIB}: {'met' if v['goal_met'] else 'not met'})")
        q = s["quality"]
        lines.append(f"  quality on {q['images']} held-out images: " + ", ".join(
            f"{k} AUROC {c['image_auroc']} (rho {c['rank_correlation']})" for k, c in q["contenders"].items()))
    for skip in document.get("skipped", []):
        lines.append(f"skipped {skip['graph']}: {skip['reason']}")
    return "\n".join(lines)


def _why(entry: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        info = entry["rungs"].get(name, {})
        if "skipped" in info:
            return "n/a (" + info["skipped"].split(":")[0][:40] + ")"
    metric = [entry["rungs"].get(n, {}).get("task_metric", {}) for n in names]
    return "refused (task metric)" if any(m and not m.get("passed") for m in metric) else "-"
