"""`python -m zoo.bench SUITE [--quick] [--json] [--out DIR]`: the same as `zoo bench`, without typer.

Full runs write to bench/results/ unless `--out` says otherwise; quick runs (CI smoke tests)
write only where `--out` points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.bench import SUITES, render, run_suite
from zoo.bench.common import RESULTS_DIR, finite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=list(SUITES))
    parser.add_argument("--quick", action="store_true", help="each suite in under a minute (CI smoke test)")
    parser.add_argument("--json", action="store_true", help="print the document as JSON on stdout, nothing else")
    parser.add_argument("--out", type=Path, default=None, help=f"results folder (default: {RESULTS_DIR} for full runs, none for quick ones)")
    parser.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime intra-op threads (default: the CPUs available)")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget for the suite")
    parser.add_argument("--device", default=None, help="gpu suite: cuda or cpu")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else (None if args.quick else RESULTS_DIR)
    command = "python -m zoo.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    document = run_suite(args.suite, quick=args.quick, out_dir=out, threads=args.threads, budget_s=args.budget_s, device=args.device, command=command)
    if args.json:
        sys.stdout.write(json.dumps(finite(document), indent=2, default=str) + "\n")
    else:
        print(render(args.suite, document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
