#!/usr/bin/env bash
# The GPU checks of the benchmark in one run, one step at a time so that nothing else competes
# for the card or the cores while a step is timed (each step has its own time limit):
#   1. train_throughput.py at the target setting (mit_b2, 512² crops, batch 16, bf16, eager);
#   2. profile_step.py: where a step's time goes (host or GPU), ceiling beside trainer; then the
#      CUDA-only tests: cutting and augmenting a batch (from a cache on the GPU or in host
#      memory) and a training step never wait for the GPU;
#   3. a short `cosas train --profile gpu` on synthetic data (2 epochs, random init: no internet
#      needed; 6 tiles per domain, since its 5 folds need 5); its record says which precision
#      the steps ran in;
#   4. train_throughput.py again with torch.compile (last: compiling takes minutes; on an H200
#      the compiled run did not finish within 125 s).
# Logs and JSON results go to $OUT (default: runs/gpu-check). Needs the package importable from
# the repository root (PYTHONPATH is set here) and its dependencies installed.
#
#   bash benchmarks/gpu_check.sh               # on a CUDA machine
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh   # tiny sizes on the CPU: checks the script
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
PY=${PYTHON:-python3}

if [[ -n "${GPU_CHECK_SMOKE:-}" ]]; then
    BENCH=(--tiny --device cpu)
    TRAIN=(--profile ci --device cpu)
    SYNTHETIC=(--tiles 4 --size 128)
else
    BENCH=(--device cuda)
    TRAIN=(--profile gpu --weights none --epochs 2)
    SYNTHETIC=(--tiles 6 --size 1024)  # the gpu profile's tile size (× 0.5 → 512² crops)
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, stop the check if it fails
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S))" | tee -a "$LOG"
    local started=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - started)) s" | tee -a "$LOG"
    if [[ $rc -ne 0 ]]; then
        echo "gpu_check: $name failed (exit $rc); see $LOG" >&2
        exit "$rc"
    fi
}

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1 || true
    "$PY" -m cosas_tutorial.cli info
} 2>&1 | tee "$LOG"

step "benchmark, eager" 150 "$PY" benchmarks/train_throughput.py "${BENCH[@]}" \
    --data "$WORK/tiles" --json "$OUT/bench-eager.json"
step "profile of one step, eager" 120 "$PY" benchmarks/profile_step.py "${BENCH[@]}" \
    --data "$WORK/tiles" --json "$OUT/profile-eager.json"
if [[ -z "${GPU_CHECK_SMOKE:-}" ]]; then
    step "CUDA-only tests" 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_tiles.py \
        tests/test_train.py -k never_waits
fi
step "synthetic data" 120 "$PY" -m cosas_tutorial.cli data synthetic "$WORK/synthetic" \
    "${SYNTHETIC[@]}"
step "cosas train, ${TRAIN[*]}" 120 "$PY" -m cosas_tutorial.cli train --data "$WORK/synthetic" \
    "${TRAIN[@]}" --task task2 --strategy standard --out "$WORK/run" --quiet
cp "$WORK/run/records.jsonl" "$OUT/train-records.jsonl"
if [[ -z "${GPU_CHECK_SMOKE:-}" ]]; then
    step "benchmark, compiled" 300 "$PY" benchmarks/train_throughput.py "${BENCH[@]}" \
        --data "$WORK/tiles" --compile --json "$OUT/bench-compiled.json"
fi
echo "gpu_check: all steps passed" | tee -a "$LOG"
