"""What every benchmark suite shares: thread pinning, interleaved timing, statistics, the
machine's description and the results file.

Our CPUs are shared and noisy, so suites compare contenders *side by side*: each round calls
every contender once, in a rotating order, and the figures that matter are ratios of medians
taken in the same rounds (drift and neighbours' load hit all contenders alike). Absolute
times are kept in the JSON for the record but only reported as such on a GPU.

This module needs only the standard library and torch (the GPU script imports it on a
machine where nothing else may be installed).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1
SHARED_MACHINE_NOTE = (
    "CPU figures come from a 2-core machine shared with other jobs: absolute times are noisy, "
    "ratios are medians of interleaved rounds measured in the same run"
)


def log(message: str) -> None:
    """Progress goes to stderr, so `--json` keeps stdout for the document alone."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- threads


def available_cpus() -> int:
    """CPUs this process may run on (affinity), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# One intra-op thread unless told otherwise: on our shared 2-core machine two OpenMP threads
# fight the other jobs for the cores and eager PyTorch collapses (measured: EfficientAD micro,
# batch 1, 11 ms at one thread against 70-195 ms at two), which would flatter every contender
# that runs its own thread pool. Pass --threads N on a dedicated machine.
DEFAULT_THREADS = 1
THREADS_NOTE = (
    "1 intra-op thread by default: on a shared 2-core machine 2 OpenMP threads contend with other jobs "
    "(EfficientAD micro eager: 11 ms at 1 thread vs 70-195 ms at 2); use --threads N on a dedicated machine"
)


def pin_threads(threads: int | None = None) -> int:
    """Fix torch's intra-op threads (and OMP/MKL's for child processes); returns the count.

    Inter-op threads are set to 1 where torch still allows it (only before the first parallel
    region); ONNX Runtime sessions are given the same intra-op count by the suites."""
    threads = int(threads or DEFAULT_THREADS)
    torch.set_num_threads(threads)
    # Only possible before the first parallel region; otherwise left as is (machine_info records it).
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    return threads


# --------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Timing:
    """Per-call times in milliseconds, with the summary the reports use."""

    samples_ms: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p90_ms(self) -> float:
        return percentile(self.samples_ms, 90)

    def summary(self) -> dict[str, Any]:
        s = self.samples_ms
        return {
            "median_ms": round_sig(self.median_ms),
            "p90_ms": round_sig(self.p90_ms),
            "mean_ms": round_sig(sum(s) / len(s)) if s else None,
            "min_ms": round_sig(min(s)) if s else None,
            "n": self.n,
        }


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds (or any repeats), skipping None and NaN: the spread
    every evidence table reports. One value: std 0; none: NaN."""
    kept = [float(v) for v in values if v is not None and v == v]
    if not kept:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "values": []}
    return {"mean": statistics.fmean(kept), "std": statistics.stdev(kept) if len(kept) > 1 else 0.0, "n": len(kept), "values": kept}


def seed_list(text: str) -> list[int]:
    """argparse type of `--seeds`: "0,1,2" -> [0, 1, 2]; blanks skipped, anything else refused by name."""
    try:
        return [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"seeds are comma-separated integers, e.g. 0,1,2; got {text!r}") from None


def round_sig(value: float | None, digits: int = 4) -> float | None:
    """Round to `digits` significant figures (JSON stays readable, nothing meaningful is lost)."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator to 3 significant figures; None when either is missing."""
    if numerator is None or denominator is None or not denominator:
        return None
    return round_sig(numerator / denominator, 3)


# --------------------------------------------------------------------------- timing


@dataclass
class Budget:
    """A wall-clock allowance for a whole suite; cells check it before they start."""

    seconds: float
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def remaining(self) -> float:
        return self.seconds - self.elapsed


def time_call(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> float:
    """Seconds one call takes (after `sync`, when given, so queued device work is included)."""
    start = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - start


def measure_interleaved(
    contenders: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    min_reps: int = 5,
    max_reps: int = 50,
    budget_s: float = 10.0,
    sync: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time every contender in rounds (each called once a round, order rotating).

    Stops after `max_reps` rounds, or once `min_reps` rounds are done and `budget_s` seconds
    have passed. Warm-up calls (not recorded) come first, interleaved too."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            time_call(contenders[name], sync)
    timings = {name: Timing() for name in names}
    started = time.perf_counter()
    for round_index in range(max_reps):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            timings[name].samples_ms.append(1000.0 * time_call(contenders[name], sync))
        if round_index + 1 >= min_reps and time.perf_counter() - started >= budget_s:
            break
    return timings


# --------------------------------------------------------------------------- machine and files


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info(threads: int | None = None, device: str = "cpu", note: str | None = None) -> dict[str, Any]:
    """What the figures were measured on: CPU, threads, load, versions, and the GPU if any."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus_total": os.cpu_count(),
        "cpus_available": available_cpus(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _package_version("onnxruntime") or _package_version("onnxruntime-gpu"),
        "device": device,
    }
    with contextlib.suppress(OSError, AttributeError):  # no load average on some platforms
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    notes = [note] if note else []
    if device == "cpu" and available_cpus() <= 4:
        notes.append(SHARED_MACHINE_NOTE)
    if device == "cpu" and threads == DEFAULT_THREADS:
        notes.append(THREADS_NOTE)
    if notes:
        info["note"] = "; ".join(notes)
    return info


def device_tag(info: Mapping[str, Any]) -> str:
    """A short file-name tag for the device: "cpu", or the GPU's model (e.g. "h200")."""
    gpu = info.get("gpu")
    if not gpu:
        return "cpu"
    words = [w for w in str(gpu).lower().replace("nvidia", "").replace("-", " ").split() if w]
    tag = next((w for w in words if any(ch.isdigit() for ch in w)), words[0] if words else "gpu")
    return "".join(ch for ch in tag if ch.isalnum()) or "gpu"


def default_command() -> str:
    """How this process was started, as a command a reader can rerun."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "zoo":
        return "zoo " + shlex.join(argv[1:])
    if argv and argv[0].endswith(".py") and "bench" in Path(argv[0]).parts:
        module = ".".join(Path(argv[0]).with_suffix("").parts[-2:])
        return f"python -m {module} " + shlex.join(argv[1:])
    return shlex.join(["python", *argv])


def new_document(suite: str, *, quick: bool, machine: dict[str, Any], command: str | None = None, **extra: Any) -> dict[str, Any]:
    """The header every results file starts with; suites add `settings`, `results`, `ratios`."""
    now = _dt.datetime.now(_dt.UTC)
    return {
        "schema": SCHEMA_VERSION,
        "suite": suite,
        "date": now.strftime("%Y-%m-%d"),
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command or default_command(),
        "quick": quick,
        "machine": machine,
        **extra,
    }


def result_path(document: Mapping[str, Any], out_dir: str | Path) -> Path:
    """`<suite>-<device>-<date>.json`: one file a suite, device and day (a rerun replaces it)."""
    tag = device_tag(document.get("machine", {}))
    return Path(out_dir) / f"{document['suite']}-{tag}-{document['date']}.json"


def write_document(document: Mapping[str, Any], out_dir: str | Path, path: Path | None = None) -> Path:
    """Write the document as indented JSON (atomically: a killed run leaves the last good file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = path or result_path(document, out_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(finite(document), indent=2, default=_json_default, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def finite(value: Any) -> Any:
    """NaN and infinities become None, recursively (JSON has no literal for them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def error_text(err: BaseException, limit: int = 300) -> str:
    """One line naming the exception, for a skipped cell's `error` field."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:limit]}"


def format_table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain fixed-width table for the terminal."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
