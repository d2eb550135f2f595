"""GPU suite: EfficientAD-S and -M at 256 x 256 on one CUDA device, plus every other model's micro.

Run on the CUDA machine as `bench/gpu.sh OUT_DIR` (it sets PYTHONPATH and a hard time limit);
needs only torch and this repository, prints as it goes and writes `OUT_DIR/gpu-<device>-<date>.json`
after every section, so a run cut short still leaves its figures. Copy that file into
bench/results/ and run `zoo bench report` to put it in the README's table.

Measured (CUDA events; inputs already on the device, host transfers excluded):
- EfficientAD-S and -M, fp32 (TF32 off) and fp16, channels-last: eager, CUDA graphs
  (`torch.cuda.CUDAGraph` replay) and `torch.compile` (default mode at batch 1, 16, 64, and
  mode="reduce-overhead" at batch 1); latency at batch 1 (median, p90 of single synchronised
  calls) and throughput at batch 16 and 64 (images/s over back-to-back calls).
- Every other registered model's micro variant, each graph at batch 1: eager and CUDA graph.
- A large matmul's TFLOP/s per precision (the device's achievable peak) and each model's
  FLOPs per image, to show how close the graphs run to it.

The paper (Batzner et al., WACV 2024, Table 1 / Sec. 4) reports EfficientAD-S at about 2 ms and
600 images/s and EfficientAD-M at about 4.5 ms on an RTX A6000; our goal on an H200 is under
1 ms at batch 1 for EfficientAD-S.

Until it has run on a GPU it is exercised on CPU: `python -m zoo.bench.gpu --device cpu --quick --out DIR`
(micro in place of S and M, no CUDA graphs, no compile; the same code paths otherwise).
Written for Python >= 3.10 and torch >= 2.1 (the CUDA machine has Python 3.12 and torch 2.11).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zoo.bench.common import Budget, error_text, machine_info, new_document, percentile, pin_threads, result_path, round_sig, write_document

PAPER = {"s": {"latency_ms": 2.0, "images_per_s": 600.0}, "m": {"latency_ms": 4.5}}
PAPER_DEVICE = "RTX A6000"
GOAL_S_LATENCY_MS = 1.0
IMAGE_SIZE = 256
BATCH_LATENCY = 1
BATCH_THROUGHPUT = (16, 64)
DEFAULT_BUDGET_S = 420.0  # the python part; gpu.sh adds a hard limit under 8 minutes
COMPILE_FLOOR_S = 60.0  # never start a compile with less than this left (or 1.5x the slowest so far)


def say(message: str) -> None:
    """Progress on stdout, flushed: gpu.sh's output is the live log of the run."""
    print(message, flush=True)


# --------------------------------------------------------------------------- clocks


class Clock:
    """Latency and throughput with CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def latency_ms(self, fn: Callable[[], Any], iters: int, warmup: int) -> list[float]:
        """Single synchronised calls: each sample is one request's latency."""
        for _ in range(warmup):
            fn()
        self.sync()
        samples = []
        for _ in range(iters):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                fn()
                samples.append(1000.0 * (time.perf_counter() - t))
        return samples

    def block_ms(self, fn: Callable[[], Any], iters: int) -> float:
        """Wall time of `iters` back-to-back calls (the device queue kept full)."""
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        return 1000.0 * (time.perf_counter() - t)

    def throughput(self, fn: Callable[[], Any], batch: int, target_s: float, warmup: int) -> dict[str, Any]:
        """Images per second over enough back-to-back calls to last about `target_s`."""
        for _ in range(warmup):
            fn()
        per_call = self.block_ms(fn, 3) / 3
        iters = int(min(2000, max(3, math.ceil(1000.0 * target_s / max(per_call, 1e-3)))))
        total = self.block_ms(fn, iters)
        return {"images_per_s": round_sig(batch * iters / (total / 1000.0)), "ms_per_batch": round_sig(total / iters), "iters": iters}


def latency_summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median_ms": round_sig(percentile(samples, 50)),
        "p90_ms": round_sig(percentile(samples, 90)),
        "min_ms": round_sig(min(samples)),
        "n": len(samples),
    }


# --------------------------------------------------------------------------- runners


def cuda_graph_runner(module: torch.nn.Module, x: torch.Tensor) -> tuple[Callable[[], Any], Any]:
    """Capture one call of `module` on a static copy of `x`; returns (replay, static outputs).

    Warm-up runs on a side stream first (cuDNN picks its algorithms there, allocations settle),
    as torch.cuda.graphs' documentation prescribes."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):
            module(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out = module(static_x)
    return graph.replay, static_out


def eager_call(module: torch.nn.Module, *inputs: torch.Tensor) -> Callable[[], Any]:
    def call() -> Any:
        with torch.no_grad():
            return module(*inputs)

    return call


def compiled_call(compiled: Callable[..., Any], *inputs: torch.Tensor, mark_step: bool) -> Callable[[], Any]:
    mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None) if mark_step else None

    def call() -> Any:
        if mark is not None:
            mark()  # reduce-overhead: a new step, earlier outputs may be overwritten
        with torch.no_grad():
            return compiled(*inputs)

    return call


def first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def max_diff(a: Any, b: Any) -> float:
    return round_sig(float((first(a).float() - first(b).float()).abs().max()), 3)


def raise_compile_limits() -> None:
    """Each (model, precision, batch) is its own specialisation: lift dynamo's recompile caps so
    none silently falls back to eager (the option was renamed across torch versions)."""
    import torch._dynamo.config as dynamo_config

    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(int(getattr(dynamo_config, name)), 64))


def set_precision_flags(tf32: bool) -> dict[str, Any]:
    """fp32 means IEEE fp32: TF32 off for cuDNN convolutions and cuBLAS matmuls."""
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return {"cudnn.allow_tf32": tf32, "cuda.matmul.allow_tf32": tf32}


# --------------------------------------------------------------------------- models


def _load_efficientad_model_module() -> Any:
    """zoo/models/efficientad/model.py loaded on its own (it needs only torch), for a machine
    where the family's other imports (image decoding, training data) are unavailable."""
    path = Path(__file__).resolve().parents[1] / "zoo" / "models" / "efficientad" / "model.py"
    spec = importlib.util.spec_from_file_location("zoo_bench_efficientad_model", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def build_efficientad(variant: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    """(EfficientAD module in eval mode on `device`, how it was built), random weights."""
    try:
        from zoo.registry import create_model

        pipeline = create_model("efficientad", variant, weights="random", device=str(device))
        return pipeline.model.eval(), "zoo.create_model"
    except Exception as err:  # noqa: BLE001 - the registry path needs the family's other imports
        if variant not in ("s", "m"):
            raise
        say(f"  registry unavailable for efficientad ({error_text(err)}); building model.py directly")
        model_mod = _load_efficientad_model_module()
        config = model_mod.EfficientADConfig(size=variant)
        return model_mod.EfficientAD(config).to(device).eval(), "zoo/models/efficientad/model.py"


def efficientad_flops(model: torch.nn.Module) -> int | None:
    """FLOPs of one image through `model` (an EfficientAD), counted on a meta-device twin."""
    try:
        from zoo.bench.flops import module_flops

        config = model.config
        with torch.device("meta"):
            twin = type(model)(config)
        side = config.image_size
        return module_flops(twin, (torch.empty(1, 3, side, side, device="meta"),))
    except Exception as err:  # noqa: BLE001 - FLOPs are context, not the measurement
        say(f"  FLOP count failed: {error_text(err)}")
        return None


# --------------------------------------------------------------------------- the run


class Run:
    """Holds the document, the clock and the budget; `save()` after every section."""

    def __init__(self, args: argparse.Namespace):
        self.device = torch.device(args.device)
        self.quick = args.quick
        self.clock = Clock(self.device)
        self.budget = Budget(args.budget_s)
        self.out_dir = Path(args.out)
        cuda = self.device.type == "cuda"
        if args.variants == "none":  # only the other models (`--models`)
            self.variants: tuple[str, ...] = ()
        else:
            self.variants = tuple(args.variants.split(",")) if args.variants else (("s", "m") if (cuda or not self.quick) else ("micro",))
        self.model_variants = _parse_model_variants(args.models)
        self.batches = (BATCH_LATENCY, *BATCH_THROUGHPUT) if (cuda or not self.quick) else (1, 2)
        self.precisions = ("fp32", "fp16")
        if cuda:
            self.lat_iters, self.lat_warmup = (30, 5) if self.quick else (200, 20)
            self.target_s = 0.2 if self.quick else 1.0
        else:  # a dry run of the code paths, not a measurement
            self.lat_iters, self.lat_warmup = (5, 1) if self.quick else (20, 3)
            self.target_s = 0.05 if self.quick else 0.5
            pin_threads()
        self.compile_enabled = not args.no_compile and not (self.quick and not cuda)
        self.slowest_compile = 0.0
        threads = torch.get_num_threads()
        self.doc = new_document(
            args.suite,
            quick=self.quick,
            machine=machine_info(threads, device=str(self.device), note=None if cuda else "CPU dry run of the GPU script"),
            command=args.command or f"bench/gpu.sh {args.out}" + (" --quick" if self.quick else "") + ("" if cuda else f" --device {args.device}"),
            settings={
                "image_size": IMAGE_SIZE,
                "variants": list(self.variants),
                "batches": list(self.batches),
                "precisions": {"fp32": "IEEE fp32 (TF32 off)", "fp16": "weights and inputs in fp16"},
                "memory_format": "channels_last" if cuda else "contiguous",
                "cudnn_benchmark": cuda,
                "latency": f"median/p90 of {self.lat_iters} synchronised batch-{BATCH_LATENCY} calls after {self.lat_warmup} warm-up, CUDA events",
                "throughput": f"back-to-back calls for about {self.target_s} s, CUDA events",
                "inputs": "already on the device; host-to-device transfer excluded",
                "compile": "torch.compile(fullgraph=True, dynamic=False): mode default at every batch, reduce-overhead at batch 1" if self.compile_enabled else "skipped",
                "weights": "random (timing does not depend on the values)",
                "budget_s": args.budget_s,
                "paper": {"device": PAPER_DEVICE, **{f"efficientad-{k}": v for k, v in PAPER.items()}},
                "goal": {"efficientad-s_batch1_ms": GOAL_S_LATENCY_MS},
            },
            peak={},
            results=[],
            checks=[],
            others=[],
            skipped=[],
        )
        if not self.compile_enabled:
            reason = "--no-compile" if args.no_compile else "quick run on CPU (a cold inductor compile takes minutes on small CPUs)"
            self.doc["skipped"].append({"what": "torch.compile", "reason": reason})
        self.path = result_path(self.doc, self.out_dir)
        self._main_graphs: list[tuple[str, str, Any]] = []  # each family's first graph: what torch.compile measures
        self._ort_missing: str | None = None

    def save(self) -> None:
        self.doc["elapsed_s"] = round(self.budget.elapsed, 1)
        write_document(self.doc, self.out_dir, self.path)

    def skip(self, what: str, reason: str) -> None:
        self.doc["skipped"].append({"what": what, "reason": reason})
        say(f"  skipped {what}: {reason}")

    # -- sections ------------------------------------------------------------------------
    def header(self) -> None:
        m = self.doc["machine"]
        say(f"zoo GPU benchmark {self.doc['date']}: {m.get('gpu', 'CPU ' + m['cpu'])}, torch {m['torch']}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}, python {m['python']}")
        say(f"writing {self.path}; budget {self.budget.seconds:.0f} s")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def peak(self) -> None:
        """TFLOP/s of an n x n matmul per precision: what the device reaches on dense math."""
        from zoo.bench.flops import matmul_runner

        n = 8192 if self.device.type == "cuda" else (512 if self.quick else 1024)
        for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True), ("fp16", torch.float16, False)):
            if self.device.type != "cuda" and name != "fp32":
                continue
            set_precision_flags(tf32)
            fn, flops = matmul_runner(n, str(self.device), dtype)
            fn()
            iters = 3 if self.device.type != "cuda" else 20
            ms = self.clock.block_ms(fn, iters) / iters
            self.doc["peak"][name] = {"n": n, "ms": round_sig(ms), "tflops": round_sig(flops / ms / 1e9, 3)}
            say(f"peak {name} matmul {n}x{n}: {self.doc['peak'][name]['tflops']} TFLOP/s")
        set_precision_flags(False)
        self.save()

    def _prepare(self, base: torch.nn.Module, precision: str) -> torch.nn.Module:
        model = copy.deepcopy(base)
        if precision == "fp16":
            model = model.half()
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model.eval()

    def _input(self, batch: int, precision: str, size: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(batch)
        x = torch.rand(batch, 3, size, size, generator=gen).to(self.device)
        x = x.half() if precision == "fp16" else x
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    def _record(self, variant: str, precision: str, mode: str, batch: int, fn: Callable[[], Any], flops: int | None) -> None:
        entry: dict[str, Any] = {"model": f"efficientad-{variant}", "variant": variant, "precision": precision, "mode": mode, "batch": batch}
        if batch == BATCH_LATENCY:
            entry["metric"] = "latency"
            entry.update(latency_summary(self.clock.latency_ms(fn, self.lat_iters, self.lat_warmup)))
            entry["images_per_s"] = round_sig(1000.0 * batch / entry["median_ms"])
            seconds_per_image = entry["median_ms"] / 1000.0 / batch
            text = f"latency median {entry['median_ms']} ms, p90 {entry['p90_ms']} ms"
        else:
            entry["metric"] = "throughput"
            entry.update(self.clock.throughput(fn, batch, self.target_s, warmup=3))
            seconds_per_image = 1.0 / entry["images_per_s"]
            text = f"{entry['images_per_s']} images/s ({entry['ms_per_batch']} ms a batch)"
        if flops:
            entry["tflops_s"] = round_sig(flops / seconds_per_image / 1e12, 3)
            peak = self.doc["peak"].get("fp16" if precision == "fp16" else "fp32", {}).get("tflops")
            if peak:
                entry["fraction_of_peak"] = round_sig(entry["tflops_s"] / peak, 3)
        self.doc["results"].append(entry)
        say(f"  efficientad-{variant} {precision} {mode:<22} b{batch:<3} {text}")

    def efficientad(self) -> dict[tuple[str, str], torch.nn.Module]:
        """Eager and CUDA graphs for every variant, precision and batch; returns the models for compile."""
        models: dict[tuple[str, str], torch.nn.Module] = {}
        for variant in self.variants:
            base, built = build_efficientad(variant, self.device)
            size = base.config.image_size
            flops = efficientad_flops(base)
            self.doc.setdefault("flops_per_image", {})[f"efficientad-{variant}"] = flops
            say(f"efficientad-{variant} ({built}): {sum(p.numel() for p in base.parameters()):,} parameters, "
                f"{(flops or 0) / 1e9:.1f} GFLOP an image at {size}x{size}")
            reference = None
            for precision in self.precisions:
                if self.budget.remaining < 30:
                    self.skip(f"efficientad-{variant} {precision}", "time budget spent")
                    continue
                model = self._prepare(base, precision)
                models[(variant, precision)] = model
                for batch in self.batches:
                    if self.budget.remaining < 30:
                        self.skip(f"efficientad-{variant} {precision} b{batch}", "time budget spent")
                        continue
                    x = self._input(batch, precision, size)
                    try:
                        eager = eager_call(model, x)
                        out = eager()
                        if batch == BATCH_LATENCY:
                            if reference is None:
                                reference = out
                            else:
                                self.doc["checks"].append({"what": f"efficientad-{variant} {precision} eager vs fp32 eager", "max_abs_diff": max_diff(out, reference)})
                        self._record(variant, precision, "eager", batch, eager, flops)
                    except Exception as err:  # noqa: BLE001 - recorded; the run goes on
                        self.skip(f"efficientad-{variant} {precision} eager b{batch}", f"failed: {error_text(err)}")
                        continue
                    if self.device.type != "cuda":
                        continue
                    try:
                        replay, static_out = cuda_graph_runner(model, x)
                        replay()
                        torch.cuda.synchronize()
                        if batch == BATCH_LATENCY:
                            self.doc["checks"].append({"what": f"efficientad-{variant} {precision} CUDA graph vs eager", "max_abs_diff": max_diff(static_out, out)})
                        self._record(variant, precision, "cuda_graph", batch, replay, flops)
                        del replay, static_out
                    except Exception as err:  # noqa: BLE001
                        self.skip(f"efficientad-{variant} {precision} cuda_graph b{batch}", f"failed: {error_text(err)}")
                    torch.cuda.empty_cache()
                self.save()
            if self.device.type != "cuda":
                self.skip(f"efficientad-{variant} CUDA graphs", "needs a CUDA device")
        return models

    def others(self) -> None:
        """Micro variants of every other registered model (or the `--models` list), each graph at batch 1."""
        try:
            from zoo.bench.graphs import graph_inputs
            from zoo.registry import create_model, family_errors, list_models

            cards = [c for c in list_models() if c.name != "efficientad"]
            for module, error in family_errors().items():
                self.skip(f"family {module}", f"import failed: {error}")
        except Exception as err:  # noqa: BLE001
            self.skip("other models", f"registry unavailable: {error_text(err)}")
            return
        if not cards:
            say("other models: none registered besides efficientad")
        jobs = self.model_variants or [(c.name, "micro" if "micro" in c.variants else c.default_variant) for c in cards]
        for name, variant in jobs:
            card = next((c for c in list_models() if c.name == name), None)
            if card is None or variant not in card.variants:
                self.skip(f"{name}/{variant}", "no such registered model variant")
                continue
            if self.budget.remaining < 60:
                self.skip(f"{card.name}/{variant}", "time budget spent")
                continue
            try:
                pipeline = create_model(card.name, variant, weights="random", device=str(self.device))
                specs = pipeline.graph_specs()
            except Exception as err:  # noqa: BLE001
                self.skip(f"{card.name}/{variant}", f"failed to build: {error_text(err)}")
                continue
            for spec in specs:
                inputs = graph_inputs(spec, 1, self.device)
                cuda = self.device.type == "cuda"
                for mode, precision in (("eager", "fp32"), ("eager", "fp16"), ("cuda_graph", "fp32"), ("ort_cuda", "fp32")):
                    entry: dict[str, Any] = {"model": card.name, "variant": variant, "graph": spec.name, "precision": precision, "mode": mode, "batch": 1}
                    try:
                        if mode == "eager" and precision == "fp32":
                            fn = eager_call(spec.module, *inputs)
                        elif not cuda:
                            continue  # fp16, CUDA graphs and ORT's CUDA provider: on a GPU only (listed once in `skipped`)
                        elif mode == "eager":
                            fn = _fp16_call(spec.module, inputs)
                        elif mode == "cuda_graph":
                            fn = _graph_runner_multi(spec.module, inputs)
                        else:
                            fn = self._ort_cuda(spec, inputs)
                            if fn is None:
                                continue
                        entry.update(latency_summary(self.clock.latency_ms(fn, self.lat_iters, self.lat_warmup)))
                        say(f"  {card.name}/{variant} {spec.name} {precision} {mode:<10} b1 latency median {entry['median_ms']} ms, p90 {entry['p90_ms']} ms")
                    except Exception as err:  # noqa: BLE001
                        entry["error"] = error_text(err)
                        say(f"  {card.name}/{variant} {spec.name} {mode}: failed: {entry['error']}")
                    self.doc["others"].append(entry)
            if specs:
                self._main_graphs.append((card.name, variant, specs[0]))
            del pipeline
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.save()
        if self.device.type != "cuda":
            self.skip("other models: fp16 eager, CUDA graphs, ONNX Runtime CUDA", "measured on a CUDA device only (this is a CPU dry run)")

    def _ort_cuda(self, spec: Any, inputs: tuple[torch.Tensor, ...]) -> Callable[[], Any] | None:
        """The graph exported (zoo.export.onnx, parity-checked) and run by ONNX Runtime's CUDA provider with
        IO binding (zoo.export.runtime); None, listed once in `skipped`, where onnxruntime has no CUDA provider."""
        if self._ort_missing is None:
            try:
                import onnxruntime

                providers = onnxruntime.get_available_providers()
                self._ort_missing = "" if "CUDAExecutionProvider" in providers else (
                    f"onnxruntime {onnxruntime.__version__} has no CUDA provider ({', '.join(providers)}); install onnxruntime-gpu")
            except ImportError as err:
                self._ort_missing = f"onnxruntime not importable: {error_text(err)}"
            if self._ort_missing:
                self.skip("other models: ONNX Runtime CUDA", self._ort_missing)
        if self._ort_missing:
            return None
        import tempfile

        from zoo.export.onnx import export_onnx_graph
        from zoo.export.runtime import OnnxRuntimeRunner, make_session

        folder = Path(tempfile.mkdtemp(prefix="zoo-gpu-ort-"))
        module = spec.module.to("cpu").float()  # export runs on the CPU in fp32, then the module goes back
        try:
            entry = export_onnx_graph(spec, folder)
        finally:
            module.to(self.device)
        if not entry["parity"]["passed"]:
            raise RuntimeError("ONNX export failed its parity check")
        runner = OnnxRuntimeRunner(make_session(folder / entry["file"], self.device), spec, self.device)
        return lambda: runner(*inputs)

    def others_compiled(self) -> None:
        """torch.compile (default mode) of each family's main graph at batch 1, after everything else, while the budget allows."""
        if not self.compile_enabled:
            self.skip("other models: torch.compile", "compile disabled for this run (--no-compile, or a quick CPU run)")
            return
        for name, variant, spec in self._main_graphs:
            if self.budget.remaining < max(90.0, 2 * self.slowest_compile):
                self.skip(f"{name}/{variant} {spec.name} torch.compile", "time budget spent")
                continue
            entry: dict[str, Any] = {"model": name, "variant": variant, "graph": spec.name, "precision": "fp32", "mode": "compile", "batch": 1}
            try:
                from zoo.bench.graphs import graph_inputs

                inputs = graph_inputs(spec, 1, self.device)
                started = time.perf_counter()
                fn = compiled_call(torch.compile(spec.module), *inputs, mark_step=False)
                fn()
                entry["compile_s"] = round(time.perf_counter() - started, 1)
                self.slowest_compile = max(self.slowest_compile, entry["compile_s"])
                entry.update(latency_summary(self.clock.latency_ms(fn, self.lat_iters, self.lat_warmup)))
                say(f"  {name}/{variant} {spec.name} compile b1 latency median {entry['median_ms']} ms (compiled in {entry['compile_s']} s)")
            except Exception as err:  # noqa: BLE001
                entry["error"] = error_text(err)
                say(f"  {name}/{variant} {spec.name} compile: failed: {entry['error']}")
            self.doc["others"].append(entry)
            self.save()

    def compiled(self, models: dict[tuple[str, str], torch.nn.Module]) -> None:
        """torch.compile in priority order, each compile only while the budget clearly allows one."""
        if not self.compile_enabled:
            return
        raise_compile_limits()
        # Priority: batch-1 latency first (the goal is S under 1 ms), fp16 before fp32, then the
        # throughput batches; whatever the budget cannot fit is skipped with its reason.
        lat, thr = (BATCH_LATENCY,), tuple(b for b in self.batches if b != BATCH_LATENCY)
        plan: list[tuple[str, str, str, tuple[int, ...]]] = []
        for v in self.variants:
            plan += [(v, "fp16", "default", lat), (v, "fp16", "reduce-overhead", lat)]
        plan += [(v, "fp16", "default", thr) for v in self.variants]
        plan += [(v, "fp32", "default", lat) for v in self.variants]
        plan += [(v, "fp32", "default", thr) for v in self.variants]
        if self.quick:
            plan = plan[:2]
        for variant, precision, mode, batches in plan:
            model = models.get((variant, precision))
            if model is None:
                continue
            import torch._dynamo

            torch._dynamo.reset()  # a fresh cache per plan line: no stale specialisations
            try:
                compiled = torch.compile(model, mode=None if mode == "default" else mode, fullgraph=True, dynamic=False)
            except Exception as err:  # noqa: BLE001
                self.skip(f"compile efficientad-{variant} {precision} {mode}", f"failed: {error_text(err)}")
                continue
            for batch in batches:
                what = f"compile efficientad-{variant} {precision} {mode} b{batch}"
                need = max(COMPILE_FLOOR_S, 1.5 * self.slowest_compile)
                if self.budget.remaining < need:
                    self.skip(what, f"{self.budget.remaining:.0f} s left, a compile may need {need:.0f} s")
                    continue
                x = self._input(batch, precision, model.config.image_size)
                fn = compiled_call(compiled, x, mark_step=mode == "reduce-overhead")
                try:
                    started = time.perf_counter()
                    fn()
                    fn()  # reduce-overhead records its CUDA graph on a later call
                    self.clock.sync()
                    compile_s = time.perf_counter() - started
                    self.slowest_compile = max(self.slowest_compile, compile_s)
                    say(f"  compiled efficientad-{variant} {precision} {mode} b{batch} in {compile_s:.1f} s")
                    self.doc.setdefault("compile_s", []).append({"variant": variant, "precision": precision, "mode": mode, "batch": batch, "seconds": round(compile_s, 1)})
                    if batch == BATCH_LATENCY:
                        ref = eager_call(model, x)()
                        self.doc["checks"].append({"what": f"efficientad-{variant} {precision} compile {mode} vs eager", "max_abs_diff": max_diff(fn(), ref)})
                    self._record(variant, precision, f"compile:{mode}", batch, fn, self.doc.get("flops_per_image", {}).get(f"efficientad-{variant}"))
                except Exception as err:  # noqa: BLE001
                    self.skip(what, f"failed: {error_text(err)}")
                self.save()

    def summary(self) -> None:
        """Best batch-1 latency and best throughput per model, against the paper and the goal."""
        out: dict[str, Any] = {}
        for variant in self.variants:
            name = f"efficientad-{variant}"
            rows = [r for r in self.doc["results"] if r["variant"] == variant]
            lat = [r for r in rows if r["metric"] == "latency"]
            thr = [r for r in rows if r["metric"] == "throughput"]
            entry: dict[str, Any] = {}
            if lat:
                best = min(lat, key=lambda r: r["median_ms"])
                entry["best_latency_ms"] = best["median_ms"]
                entry["best_latency_config"] = f"{best['precision']} {best['mode']}"
                eager32 = next((r for r in lat if r["precision"] == "fp32" and r["mode"] == "eager"), None)
                if eager32:
                    entry["speedup_vs_fp32_eager"] = round_sig(eager32["median_ms"] / best["median_ms"], 3)
            if thr:
                best_t = max(thr, key=lambda r: r["images_per_s"])
                entry["best_images_per_s"] = best_t["images_per_s"]
                entry["best_throughput_config"] = f"{best_t['precision']} {best_t['mode']} b{best_t['batch']}"
            paper = PAPER.get(variant, {})
            if paper and "best_latency_ms" in entry:
                entry["paper_latency_ms"] = paper["latency_ms"]
                entry["latency_vs_paper"] = round_sig(paper["latency_ms"] / entry["best_latency_ms"], 3)
            if "images_per_s" in paper and "best_images_per_s" in entry:
                entry["paper_images_per_s"] = paper["images_per_s"]
                entry["throughput_vs_paper"] = round_sig(entry["best_images_per_s"] / paper["images_per_s"], 3)
            if variant == "s" and "best_latency_ms" in entry:
                entry["goal_ms"] = GOAL_S_LATENCY_MS
                entry["goal_met"] = bool(entry["best_latency_ms"] < GOAL_S_LATENCY_MS)
            out[name] = entry
        self.doc["summary"] = out
        self.save()
        say("summary:")
        for name, entry in out.items():
            say(f"  {name}: {entry}")
        say(f"wrote {self.path} in {self.budget.elapsed:.0f} s")


def _fp16_call(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[[], Any]:
    """A half-precision copy of the graph's module on float inputs (integer inputs unchanged)."""
    half = copy.deepcopy(module).half().eval()
    cast = tuple(t.half() if t.is_floating_point() else t for t in inputs)
    return eager_call(half, *cast)


def _graph_runner_multi(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[[], Any]:
    """CUDA graph capture for a graph with any number of inputs."""

    class _Packed(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, packed: tuple[torch.Tensor, ...]) -> Any:
            return self.inner(*packed)

    static = tuple(t.clone() for t in inputs)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    wrapper = _Packed(module)
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):
            wrapper(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        wrapper(static)
    return graph.replay


def _parse_model_variants(text: str | None) -> list[tuple[str, str]]:
    """"vidt:tiny,oneformer:swin-t" -> [("vidt", "tiny"), ("oneformer", "swin-t")]."""
    pairs = []
    for item in (text or "").split(","):
        if item.strip():
            name, _, variant = item.strip().partition(":")
            pairs.append((name, variant or "micro"))
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu-<device>-<date>.json")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--quick", action="store_true", help="few iterations; on CPU, micro in place of S and M")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="stop starting new work after this many seconds")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--variants", default=None, help="EfficientAD variants, comma-separated (default: s,m; micro for a CPU quick run)")
    parser.add_argument("--models", default=None,
                        help="MODEL:VARIANT pairs for the other-models section, comma-separated (default: every model's micro)")
    parser.add_argument("--suite", default="gpu", help="suite name of the results file (gpu-<device>-<date>.json by default)")
    parser.add_argument("--command", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device visible to torch; use --device cpu --quick for a dry run")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    session = Run(args)
    session.header()
    session.peak()
    models = session.efficientad()
    session.others()
    session.compiled(models)
    session.others_compiled()
    session.summary()
    return session.doc


def run(quick: bool = False, out_dir: str | Path | None = None, budget_s: float | None = None, command: str | None = None, device: str | None = None, **_: Any) -> dict[str, Any]:
    """`zoo bench gpu`: the same run in this process (out_dir defaults to bench/results)."""
    import tempfile

    from zoo.bench.common import RESULTS_DIR

    if out_dir is None:  # full runs go to the results folder; a quick one only where asked
        out_dir = tempfile.mkdtemp(prefix="zoo-bench-gpu-") if quick else RESULTS_DIR
    argv = ["--out", str(out_dir), "--budget-s", str(budget_s or DEFAULT_BUDGET_S)]
    if quick:
        argv.append("--quick")
    if device:
        argv += ["--device", device]
    if command:
        argv += ["--command", command]
    stdout = sys.stdout
    sys.stdout = sys.stderr  # `zoo bench gpu --json` keeps stdout for the document
    try:
        return main(argv)
    finally:
        sys.stdout = stdout


def render(document: dict[str, Any]) -> str:
    lines = [f"gpu ({document['date']}, {document['machine'].get('gpu') or 'CPU dry run'}):"]
    for r in document["results"]:
        value = f"{r['median_ms']} ms (p90 {r['p90_ms']})" if r["metric"] == "latency" else f"{r['images_per_s']} images/s"
        lines.append(f"  {r['model']} {r['precision']} {r['mode']} b{r['batch']}: {value}")
    for name, entry in document.get("summary", {}).items():
        lines.append(f"  {name}: {entry}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
