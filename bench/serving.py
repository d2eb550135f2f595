"""Serving suite: `zoo serve` on loopback under a bounded load generator in a second process.

Two servers run side by side on 127.0.0.1 (free ports), the same model and backend, one with
dynamic batching off (`--max-batch-size 1`) and one with it on (the default 8 rows, 5 ms
queue delay). `zoo.bench.loadgen` (its own process, standard library only) sends Open Inference
Protocol v2 requests with binary tensors, as tritonclient does, at concurrency 1, 4 and 16,
each run bounded by a request count and a time limit. Rounds alternate which server goes
first; figures are medians over rounds. The same graph is also called in this process
(`Pipeline.run_graph`, the call the server makes for a request) between rounds: the server's
overhead is its batch-off p50 at concurrency 1 over that in-process p50.

Goals: batching at least 1.5x the throughput at concurrency 16; server p50 within 1.2x of the
in-process call.

    zoo bench serving [--quick] [--json]
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from zoo.bench.common import (
    Budget,
    Timing,
    format_table,
    log,
    machine_info,
    new_document,
    pin_threads,
    ratio,
    round_sig,
    time_call,
    write_document,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 4, 16)
BATCH_ON = 8
QUEUE_DELAY_MS = 0.0  # the server default, as Triton's
ROUNDS = {True: 1, False: 3}
REQUESTS = {True: 40, False: 300}
TIME_LIMIT_S = {True: 4.0, False: 12.0}
IN_PROCESS_CALLS = {True: 20, False: 100}
BUDGET_S = {True: 55.0, False: 280.0}
READY_TIMEOUT_S = 120.0
GOAL_BATCHING_GAIN = 1.5
GOAL_OVERHEAD = 1.2
GOAL_SCALING = 1.7  # throughput at the top concurrency over concurrency 1 (batching on, the default instances)


def free_port() -> int:
    """A port the OS has just handed out on 127.0.0.1 (closed again for the server to take)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`zoo serve` (as `python -m zoo.cli serve`) in a child process on 127.0.0.1."""

    def __init__(self, model: str, variant: str, max_batch_size: int, threads: int, device: str, log_dir: Path, random_weights: bool = False,
                 instances: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            "serve", "--host", "127.0.0.1", "--port", str(self.port), "--models", f"{model}:{variant}", "--no-demo",
            "--device", device, "--max-batch-size", str(max_batch_size), "--max-queue-delay-ms", str(QUEUE_DELAY_MS),
            "--queue-size", "256", "--instances", str(instances), *(["--random-weights"] if random_weights else []),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)  # the server's torch uses the same pinned thread count
        self.log_path = log_dir / f"serve-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "zoo.cli", *self.args], cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def command(self) -> str:
        return "zoo " + " ".join(self.args)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll /v2/health/ready until 200; raise with the log's tail if the server dies or stalls."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`{self.command}` exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.25)
        raise RuntimeError(f"`{self.command}` not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        """One readiness probe: True on 200, False while it is still starting (or refusing)."""
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def load(server: Server, graph: Any, v2_name: str, concurrency: int, requests: int, time_limit: float) -> dict[str, Any]:
    """One bounded `zoo.bench.loadgen` run in its own process; its JSON result."""
    shape = ",".join(str(d) for d in graph.inputs[0].concrete_shape({**{k: v[1] for k, v in graph.dims.items()}, "batch": 1}))
    cmd = [
        sys.executable, "-m", "zoo.bench.loadgen", "--url", server.url, "--model", v2_name, "--input", graph.inputs[0].name,
        "--outputs", ",".join(o.name for o in graph.outputs), "--shape", shape, "--datatype", _triton_dtype(graph.inputs[0].dtype),
        "--concurrency", str(concurrency), "--requests", str(requests), "--time-limit", str(time_limit),
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=time_limit + 60)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _proc_kib(pid: int, field: str) -> int | None:
    """A `/proc/PID/status` field in KiB (VmRSS: resident now, VmHWM: its peak), None where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its VmRSS (Linux clear_refs 5); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory(server: Server, graph: Any, v2_name: str, batches: tuple[int, ...] = (1, 8)) -> dict[str, Any]:
    """Resident memory of a warmed-up server (model loaded, its graphs run) and the peak a single request
    adds on top of it at each batch size (VmHWM reset before each), in MiB; {} where /proc is unreadable."""
    from zoo.bench.loadgen import infer_body

    pid = server.process.pid
    idle = _proc_kib(pid, "VmRSS")
    if idle is None:
        return {}
    result: dict[str, Any] = {"server_rss_mib": round(idle / 1024, 1), "peak_rss_since_start_mib": round((_proc_kib(pid, "VmHWM") or 0) / 1024, 1)}
    sizes = {**{k: v[1] for k, v in graph.dims.items()}}
    for batch in batches:
        shape = list(graph.inputs[0].concrete_shape({**sizes, "batch": batch}))
        body, header = infer_body(graph.inputs[0].name, shape, _triton_dtype(graph.inputs[0].dtype), [o.name for o in graph.outputs])
        base = _proc_kib(pid, "VmRSS") or idle
        if not _reset_peak(pid):
            return result
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("POST", f"/v2/models/{v2_name}/infer", body=body,
                           headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header)})
        response = connection.getresponse()
        response.read()
        connection.close()
        peak = _proc_kib(pid, "VmHWM")
        if response.status != 200 or peak is None:
            result[f"request_b{batch}_error"] = response.status
            continue
        result[f"request_b{batch}_peak_mib"] = round(max(0, peak - base) / 1024, 1)
    return result


def _triton_dtype(dtype: str) -> str:
    return {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "uint8": "UINT8"}.get(dtype, "FP32")


def _median(values: list[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    return present[len(present) // 2] if present else None


def run(
    quick: bool = False,
    out_dir: str | Path | None = None,
    threads: int | None = None,
    budget_s: float | None = None,
    command: str | None = None,
    model: str = "efficientad",
    variant: str | None = None,
    device: str | None = None,
    concurrency: tuple[int, ...] = CONCURRENCY,
    requests: int | None = None,
    time_limit_s: float | None = None,
    rounds: int | None = None,
    instances: int | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Start both servers, drive them, compare with the in-process call, write to `out_dir` if given.

    `requests`, `time_limit_s` and `rounds` override the quick/full defaults per load run."""
    from zoo.bench.graphs import graph_inputs, quick_variant
    from zoo.registry import create_model, get_card
    from zoo.serving.batching import default_instances

    threads = pin_threads(threads)
    device = device or "cpu"
    instances = int(instances or default_instances(device))
    budget = Budget(budget_s or BUDGET_S[quick])
    card = get_card(model)
    variant = variant or quick_variant(card)
    # bundled weights, as the server loads them; random ones (said so in the settings) where the variant has none
    random_weights = card.demo_weights_path(variant) is None
    pipeline = create_model(model, variant, weights="random" if random_weights else None, device=device)
    graph = pipeline.graph_specs()[0]
    v2_name = f"{model}.{graph.name}"  # the graph's alias on every server (its bare name may be the model's pipeline)
    x = graph_inputs(graph, 1)
    in_process, http_floor = Timing(), Timing()
    requests = int(requests or REQUESTS[quick])
    time_limit_s = float(time_limit_s or TIME_LIMIT_S[quick])
    rounds = int(rounds or ROUNDS[quick])
    document = new_document(
        "serving",
        quick=quick,
        machine=machine_info(threads, device=device),
        command=command,
        settings={
            "model": model,
            "variant": variant,
            "weights": "random" if random_weights else "bundled",
            "graph": graph.name,
            "device": device,
            "threads": threads,
            "protocol": "Open Inference Protocol v2 infer, binary tensor extension (as tritonclient), keep-alive connections",
            "instances": instances,
            "batching_off": "--max-batch-size 1",
            "batching_on": f"--max-batch-size {BATCH_ON} --max-queue-delay-ms {QUEUE_DELAY_MS}",
            "concurrency": list(concurrency),
            "rounds": rounds,
            "requests_per_run": requests,
            "time_limit_s_per_run": time_limit_s,
            "in_process": f"Pipeline.run_graph('{graph.name}', batch 1) in the bench process, between rounds",
            "loopback_only": True,
            "goals": {"batching_gain_c16": GOAL_BATCHING_GAIN, "server_p50_over_in_process": GOAL_OVERHEAD},
        },
        runs=[],
        results={},
        ratios={},
        skipped=[],
    )
    log(f"serving: {model}/{variant} graph {graph.name}, threads {threads}, starting two servers on 127.0.0.1 ...")
    log_dir = Path(tempfile.mkdtemp(prefix="zoo-bench-serve-"))
    servers: dict[str, Server] = {}
    try:
        servers = {mode: Server(model, variant, size, threads, device, log_dir, random_weights, instances) for mode, size in (("off", 1), ("on", BATCH_ON))}
        document["settings"]["server_commands"] = {mode: s.command for mode, s in servers.items()}
        for server in servers.values():
            server.wait_ready()
        log(f"serving: both ready after {budget.elapsed:.0f} s")
        for server in servers.values():  # warm-up: first requests pay for lazy initialisation
            load(server, graph, v2_name, 2, 6, 10.0)
        document["memory"] = memory(servers["on"], graph, v2_name)
        log(f"serving: memory {document['memory']}")

        def health(probe: http.client.HTTPConnection) -> None:  # the HTTP floor: a keep-alive round trip that runs no graph
            probe.request("GET", "/v2/health/ready")
            probe.getresponse().read()

        def in_process_round() -> None:
            # a fresh connection each round (uvicorn closes one idle for 5 s), opened before the timing
            probe = http.client.HTTPConnection("127.0.0.1", servers["off"].port, timeout=10)
            health(probe)
            for _ in range(IN_PROCESS_CALLS[quick]):
                in_process.samples_ms.append(1000.0 * time_call(lambda: pipeline.run_graph(graph.name, *x)))
                http_floor.samples_ms.append(1000.0 * time_call(lambda: health(probe)))
            probe.close()

        for round_index in range(rounds):
            in_process_round()
            for c in concurrency:
                for mode in (("off", "on") if round_index % 2 == 0 else ("on", "off")):
                    if budget.remaining < time_limit_s + 5:
                        document["skipped"].append({"round": round_index, "mode": mode, "concurrency": c, "reason": "time budget spent"})
                        continue
                    result = load(servers[mode], graph, v2_name, c, requests, time_limit_s)
                    document["runs"].append({"round": round_index, "batching": mode, **result})
                    log(f"  round {round_index} batching {mode:<3} c{c:<3}: {result['throughput_rps']} req/s, p50 {round_sig(result['p50_ms'])} ms, "
                        f"p99 {round_sig(result['p99_ms'])} ms, {result['ok']}/{result['sent']} ok")
        in_process_round()
    finally:
        for server in servers.values():
            server.stop()
    _summarise(document, in_process, concurrency)
    document["results"]["http_floor"] = {"p50_ms": round_sig(http_floor.median_ms), "n": http_floor.n,
                                         "what": "GET /v2/health/ready on the batching-off server, keep-alive, from this process"}
    document["elapsed_s"] = round(budget.elapsed, 1)
    if out_dir is not None:
        log(f"serving: wrote {write_document(document, out_dir)}")
    return document


def _summarise(document: dict[str, Any], in_process: Timing, concurrency: tuple[int, ...]) -> None:
    results: dict[str, Any] = {"in_process": {"p50_ms": round_sig(in_process.median_ms), "p99_ms": round_sig(_p(in_process, 99)), "n": in_process.n}}
    for mode in ("off", "on"):
        for c in concurrency:
            runs = [r for r in document["runs"] if r["batching"] == mode and r["concurrency"] == c]
            if runs:
                results[f"batching_{mode}_c{c}"] = {
                    "throughput_rps": round_sig(_median([r["throughput_rps"] for r in runs])),
                    "p50_ms": round_sig(_median([r["p50_ms"] for r in runs])),
                    "p99_ms": round_sig(_median([r["p99_ms"] for r in runs])),
                    "errors": sum(sum(r["errors"].values()) for r in runs),
                    "rounds": len(runs),
                }
    document["results"] = results
    top = max(concurrency)

    def get(key: str, field: str) -> float | None:
        return results.get(key, {}).get(field)

    ratios = {
        f"batching_throughput_gain_c{top}": ratio(get(f"batching_on_c{top}", "throughput_rps"), get(f"batching_off_c{top}", "throughput_rps")),
        "server_p50_over_in_process": ratio(get("batching_off_c1", "p50_ms"), results["in_process"]["p50_ms"]),
        "server_p50_over_in_process_batching_on": ratio(get("batching_on_c1", "p50_ms"), results["in_process"]["p50_ms"]),
    }
    for c in concurrency:
        ratios[f"batching_throughput_gain_c{c}"] = ratio(get(f"batching_on_c{c}", "throughput_rps"), get(f"batching_off_c{c}", "throughput_rps"))
    low = min(concurrency)
    ratios[f"throughput_c{top}_over_c{low}"] = ratio(get(f"batching_on_c{top}", "throughput_rps"), get(f"batching_on_c{low}", "throughput_rps"))
    document["ratios"] = ratios
    gain, overhead = ratios[f"batching_throughput_gain_c{top}"], ratios["server_p50_over_in_process"]
    scaling = ratios[f"throughput_c{top}_over_c{low}"]
    gains = [ratios[f"batching_throughput_gain_c{c}"] for c in concurrency]
    document["goals_met"] = {
        "batching_gain": None if gain is None else bool(gain >= GOAL_BATCHING_GAIN),
        "server_overhead": None if overhead is None else bool(overhead <= GOAL_OVERHEAD),
        "scaling": None if scaling is None else bool(scaling >= GOAL_SCALING),
        "batching_never_loses": None if any(g is None for g in gains) else bool(min(gains) >= 1.0),
    }


def _p(timing: Timing, q: float) -> float:
    from zoo.bench.common import percentile

    return percentile(timing.samples_ms, q)


def render(document: dict[str, Any]) -> str:
    s, res, r = document["settings"], document["results"], document["ratios"]
    gpu = str(s.get("device", "cpu")).startswith("cuda")
    rows = []
    for c in s["concurrency"]:
        off, on = res.get(f"batching_off_c{c}", {}), res.get(f"batching_on_c{c}", {})
        row = [c, f"x{r.get(f'batching_throughput_gain_c{c}')}", ratio(on.get("p50_ms"), off.get("p50_ms")), ratio(on.get("p99_ms"), off.get("p99_ms"))]
        if gpu:
            row += [off.get("throughput_rps"), on.get("throughput_rps")]
        rows.append(row)
    header = ["concurrency", "throughput on/off", "p50 on/off", "p99 on/off"] + (["req/s off", "req/s on"] if gpu else [])
    goals = document.get("goals_met", {})
    top = max(s["concurrency"])
    return "\n".join([
        f"serving {s['model']}/{s['variant']} ({document['date']}, threads {s['threads']}, {s['device']}, loopback):",
        format_table(rows, header),
        f"batching gain at concurrency {top}: x{r.get(f'batching_throughput_gain_c{top}')} (goal x{GOAL_BATCHING_GAIN}: {_word(goals.get('batching_gain'))})",
        f"server p50 / in-process p50: x{r.get('server_p50_over_in_process')} (goal <= x{GOAL_OVERHEAD}: {_word(goals.get('server_overhead'))}); "
        f"with batching on: x{r.get('server_p50_over_in_process_batching_on')}; in-process p50 {res.get('in_process', {}).get('p50_ms')} ms, "
        f"HTTP floor (health round trip) p50 {res.get('http_floor', {}).get('p50_ms')} ms",
        f"memory (batching-on server): {document.get('memory') or 'not measured'}",
        f"throughput at concurrency {top} / 1 ({s.get('instances', 1)} instances): x{r.get(f'throughput_c{top}_over_c1')} "
        f"(goal x{GOAL_SCALING}: {_word(goals.get('scaling'))}); batching never loses: {_word(goals.get('batching_never_loses'))}",
    ])


def _word(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "not met")
