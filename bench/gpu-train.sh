#!/usr/bin/env bash
# Demo weights on a lent GPU (issue #21: one GPU minute is worth CPU hours), as one prepared script.
#
#   bench/gpu-train.sh OUT_DIR [FAMILY ...]      (default: vidt vidt-plus oneformer efficientad docdiff; anytext when named)
#
# Each family trains its micro variant on CUDA with the recipe below for at most its share of
# ZOO_GPU_TRAIN_BUDGET_S (default 480 s, under the device's 10-minute call limit). At its share the
# run gets Ctrl-C (SIGINT): the trainer finishes the update and checkpoints; the script then resumes
# it with --steps set to the step it reached, which evaluates and writes OUT_DIR/FAMILY/model.safetensors
# and model.json (metrics, command). Copy the weights you keep to zoo/models/<family>/weights/ and run
# `zoo bench demo-check`. Needs the repository's dependencies importable by $PYTHON.
set -uo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: bench/gpu-train.sh OUT_DIR [FAMILY ...]" >&2
    exit 2
fi
OUT="$1"
shift
FAMILIES=("$@")
[[ ${#FAMILIES[@]} -eq 0 ]] && FAMILIES=(vidt vidt-plus oneformer efficientad docdiff)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"
BUDGET_S="${ZOO_GPU_TRAIN_BUDGET_S:-480}"
SHARE_S=$(( BUDGET_S / ${#FAMILIES[@]} ))
DEVICE="${ZOO_GPU_TRAIN_DEVICE:-cuda}"
mkdir -p "$OUT"
cd "$ROOT"

# The recipe per family: more steps and more (fresh) procedural data than the CPU demo runs could afford.
recipe() {
    case "$1" in
        vidt) echo "vidt --variant micro --steps 30000 --set train_images=8192 --set val_images=128 --set batch_size=32" ;;
        vidt-plus) echo "vidt-plus --variant micro --steps 30000 --set train_images=8192 --set val_images=128 --set batch_size=32" ;;
        oneformer) echo "oneformer --variant micro --steps 20000 --set train_images=4096" ;;
        efficientad) echo "efficientad --variant micro --steps 70000 --set category=parts --set lr=0.0001" ;;
        docdiff) echo "docdiff --variant micro --steps 6000 --set pages=1024" ;;
        anytext) echo "anytext --variant micro --steps 100000 --set train_images=200000" ;;  # the CPU demo: 6,000 steps, no legible letters
        *) echo "" ;;
    esac
}

last_step() {  # the step of a run's latest checkpoint (0 when none)
    "$PYTHON" -c 'import sys; from pathlib import Path; from zoo.training.checkpoint import list_checkpoints; found = list_checkpoints(Path(sys.argv[1]) / "checkpoints"); print(found[-1][0] if found else 0)' "$1"
}

status=0
for family in "${FAMILIES[@]}"; do
    args=$(recipe "$family")
    if [[ -z "$args" ]]; then
        echo "bench/gpu-train.sh: no recipe for $family" >&2
        status=2
        continue
    fi
    run="$OUT/$family"
    echo "bench/gpu-train.sh: $family for at most ${SHARE_S} s: zoo train $args --device $DEVICE --out $run"
    # shellcheck disable=SC2086
    timeout -s INT --kill-after=60 "$SHARE_S" "$PYTHON" -m zoo.cli train $args --device "$DEVICE" --out "$run" --no-progress
    code=$?
    if [[ $code -ne 0 && ! -f "$run/model.safetensors" ]]; then
        reached=$(last_step "$run")
        if [[ "$reached" -eq 0 ]]; then
            echo "bench/gpu-train.sh: $family reached no checkpoint in ${SHARE_S} s; nothing to keep" >&2
            status=1
            continue
        fi
        echo "bench/gpu-train.sh: $family stopped at step $reached; finishing the run there (evaluation, model.safetensors)"
        # shellcheck disable=SC2086
        "$PYTHON" -m zoo.cli train $args --device "$DEVICE" --out "$run" --resume --steps "$reached" --no-progress || status=1
    fi
    ls -l "$run"/model.safetensors "$run"/model.json 2>/dev/null || status=1
done
exit $status
