"""A bounded load generator for the serving suite, run as its own process.

    python -m zoo.bench.loadgen --url http://127.0.0.1:PORT --model efficientad --shape 1,3,128,128 \
        --concurrency 16 --requests 400 --time-limit 20

Sends Open Inference Protocol v2 infer requests with Triton's binary tensor extension (the
way tritonclient does: a JSON header, then the raw input bytes; outputs asked back in binary)
from `--concurrency` threads, each on its own keep-alive connection, until `--requests` have
been sent or `--time-limit` seconds have passed, whichever comes first. Loopback only: any
other host is refused. Prints one JSON document (throughput, latency percentiles, errors).
Standard library only, so it starts fast and adds little load of its own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import threading
import time
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
BYTES_PER = {"FP32": 4, "FP16": 2, "INT64": 8, "INT32": 4, "UINT8": 1}


def infer_body(model_input: str, shape: list[int], datatype: str, outputs: list[str], seed: int = 0) -> tuple[bytes, int]:
    """(body, JSON header length) of one binary-extension infer request with pseudo-random data."""
    count = math.prod(shape)
    nbytes = count * BYTES_PER[datatype]
    header = {
        "inputs": [{"name": model_input, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": nbytes}}],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
    }
    head = json.dumps(header).encode()
    # Bytes of a float32/float16 in [0, 1) are what an image graph expects; a fixed pattern is enough.
    if datatype in ("FP32", "FP16"):
        import array

        values = array.array("f", ((i * 7919 + seed) % 1000 / 1000.0 for i in range(count)))
        data = values.tobytes()
        if datatype == "FP16":
            import struct

            data = b"".join(struct.pack("<e", v) for v in values)
    else:
        data = bytes(nbytes)
    return head + data, len(head)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def run_load(url: str, model: str, body: bytes, header_length: int, concurrency: int, requests: int, time_limit: float) -> dict:
    """Drive the server; returns throughput, latency percentiles (ms) and error counts."""
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        raise ValueError(f"the load generator only targets loopback addresses, not {parts.hostname!r}")
    path = f"/v2/models/{model}/infer"
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)}
    lock = threading.Lock()
    state = {"sent": 0}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + time_limit

    def take() -> bool:
        with lock:
            if state["sent"] >= requests or time.perf_counter() >= deadline:
                return False
            state["sent"] += 1
            return True

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=max(time_limit, 5.0))
        try:
            while take():
                started = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException) as err:
                    status = type(err).__name__
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=max(time_limit, 5.0))
                elapsed = 1000.0 * (time.perf_counter() - started)
                with lock:
                    if status == 200:
                        latencies.append(elapsed)
                    else:
                        errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(time_limit + 30.0)
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "sent": state["sent"],
        "ok": len(latencies),
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "stopped_by": "requests" if state["sent"] >= requests else "time limit",
        "throughput_rps": round(len(latencies) / elapsed, 2) if elapsed > 0 else None,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": sum(latencies) / len(latencies) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.loadgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT (loopback only)")
    parser.add_argument("--model", required=True, help="the v2 model name (a graph)")
    parser.add_argument("--input", default="image", help="the graph's input name")
    parser.add_argument("--outputs", default="anomaly_map,score", help="output names, comma-separated")
    parser.add_argument("--shape", required=True, help="input shape, comma-separated, batch first")
    parser.add_argument("--datatype", default="FP32")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=100, help="stop after this many requests")
    parser.add_argument("--time-limit", type=float, default=20.0, help="or after this many seconds")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.requests < 1 or args.time_limit <= 0:
        parser.error("--concurrency and --requests must be >= 1 and --time-limit > 0")
    if urlsplit(args.url).hostname not in LOOPBACK:
        parser.error(f"--url must be a loopback address ({', '.join(LOOPBACK)})")
    shape = [int(s) for s in args.shape.split(",")]
    body, header_length = infer_body(args.input, shape, args.datatype, [o for o in args.outputs.split(",") if o])
    result = run_load(args.url, args.model, body, header_length, args.concurrency, args.requests, args.time_limit)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
