#!/usr/bin/env bash
# The GPU benchmark, as one prepared script for the CUDA machine (needs only python + torch).
#
#   bench/gpu.sh OUT_DIR [--quick] [--no-compile] [--device cpu] [--budget-s S]
#
# Prints as it goes and writes OUT_DIR/gpu-<device>-<date>.json after every section; a hard
# limit stops it before 8 minutes (the budget below makes it stop starting new work first).
# Copy the JSON into bench/results/ and run `zoo bench report` for the README's table.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: bench/gpu.sh OUT_DIR [--quick] [--no-compile] [--device cpu] [--budget-s S]" >&2
    exit 2
fi
OUT="$1"
shift

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"

# 460 s = 7 min 40 s (+5 s to die): the python side stops starting work at its 420 s budget; this is the backstop.
LIMIT_S="${ZOO_GPU_BENCH_LIMIT_S:-460}"
echo "bench/gpu.sh: $("$PYTHON" --version 2>&1), repo ${ROOT}, output ${OUT}, hard limit ${LIMIT_S} s"
cd "$ROOT"
set +e
if command -v timeout >/dev/null 2>&1; then
    timeout --kill-after=5 "$LIMIT_S" "$PYTHON" -m zoo.bench.gpu --out "$OUT" --command "bench/gpu.sh $OUT $*" "$@"
else
    "$PYTHON" -m zoo.bench.gpu --out "$OUT" --command "bench/gpu.sh $OUT $*" "$@"
fi
status=$?
set -e
if [[ $status -eq 124 || $status -eq 137 ]]; then
    echo "bench/gpu.sh: stopped at the ${LIMIT_S} s limit; the JSON in ${OUT} holds every section finished before it" >&2
fi
ls -l "$OUT"/gpu-*.json 2>/dev/null || true
exit $status
