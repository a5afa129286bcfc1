#!/usr/bin/env bash
# The pending GPU checks of benchmarks/RESULTS.md, in two parts of one command each:
#
#   bash benchmarks/gpu_check.sh speed          # the timed figures
#   bash benchmarks/gpu_check.sh experiment     # a gpu-profile experiment and two diagnostics
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh speed experiment   # tiny, on the CPU
#
# speed:
#   1. train_throughput.py, eager: mit_b2, 512² crops, batch 16, bf16, channels_last; trainer ÷
#      model-only ceiling from 3 alternating rounds of 60 steps (target ≥ 0.95), the trainer
#      against the DataLoader + albumentations baseline with 2 workers, a 1500² tile predicted
#      by sliding windows (target ≤ 20 ms);
#   2. fit_speed.py --profile gpu --precision fp16: a T4's path (fp16 autocast and the gradient
#      scaler) for 4 epochs of 20 steps: loss finite and falling, images/s;
#   3. fit_speed.py --profile paper: 1024² crops, mit_b2, batch 4, 100 timed steps after a
#      warm-up epoch: images/s and the time of one strategy × 5 folds × 30 epochs of the paper
#      profile's 36 steps (target ≤ 15 min);
#   4. train_throughput.py with torch.compile, for training and prediction (last: compiling
#      takes minutes; an earlier compiled run of 3 rounds did not finish within 125 s).
# experiment:
#   1. a synthetic COSAS tree, 6 tiles of 1024² per domain (the gpu profile's 5 folds need 5);
#   2. cosas experiment --profile gpu --weights none --epochs 2: every strategy on both tasks,
#      from random initialisation (no internet needed); its records say the precision per epoch;
#   3. the CUDA-only tests: a bf16 or fp16 training step never waits for the GPU;
#   4. profile_step.py: whether the host or the GPU bounds a training step.
#
# Steps run one at a time, so that nothing else competes for the card or the cores while one
# is timed. A step that fails or outruns its time limit is logged and the next one runs; the
# script then exits non-zero. No step starts once GPU_CHECK_SECONDS (default 500) have passed,
# and a step's limit is cut to what is left of them. Results in $OUT (default runs/gpu-check),
# at most 8 files and no subfolders: speed.log, bench-eager.json, fp16.json, paper.json,
# bench-compiled.json; experiment.log, experiment-results.jsonl, profile-eager.json.
#
# Needs the package's dependencies (the repository root is put on PYTHONPATH here). A GPU
# machine with Python 3.12, torch, torchvision, timm, huggingface-hub, numpy, scipy, pandas,
# matplotlib, scikit-learn, opencv-python-headless, pyyaml, tqdm and pytest, but no internet,
# needs these wheels in .whl/ (the versions installed in the development environment; CPython
# 3.12 manylinux x86_64 builds of the three marked *; torchstain and kornia are not imported):
#   segmentation_models_pytorch 0.6.0, albumentations 2.0.8, albucore 0.0.24, simsimd 6.5.16*,
#   stringzilla 5.3.2*, pydantic 2.14.4, pydantic_core 2.50.5*, annotated_types 0.8.0,
#   typing_inspection 0.4.5, typing_extensions 4.16.0
# and runs, from the repository root (then again with `experiment` in place of `speed`):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_check.sh speed
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
WORK=${WORK:-$(mktemp -d)}
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-500}))
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
export MPLBACKEND=Agg
PY=${PYTHON:-python3}
TILES=(--data "$WORK/tiles")  # written by the first script, reused by the others

if [[ -n "${GPU_CHECK_SMOKE:-}" ]]; then
    BENCH=(--tiny --device cpu)
    FP16=()
    PAPER=()
    TRAIN=(--profile ci --device cpu)
    SYNTHETIC=(--tiles 4 --size 128)
else
    BENCH=(--device cuda)
    FP16=(--epochs 4 --steps 20)
    PAPER=(--epochs 3 --steps 50)
    TRAIN=(--profile gpu --weights none --epochs 2)
    SYNTHETIC=(--tiles 6 --size 1024)  # the gpu profile's tile size (× 0.5 → 512² crops)
fi

FAILED=()
step() {  # step NAME SECONDS COMMAND...: run it with a time limit, logged; its exit status
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    if ((left < 30)); then
        echo "=== $name: not run, ${left} s left of GPU_CHECK_SECONDS" | tee -a "$LOG"
        FAILED+=("$name (not run)")
        return 1
    fi
    ((limit > left)) && limit=$left
    echo "=== $name (limit $limit s, $(date -u +%H:%M:%S))" | tee -a "$LOG"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - started)) s" | tee -a "$LOG"
    ((rc == 0)) || FAILED+=("$name (exit $rc)")
    return "$rc"
}

speed() {
    step "benchmark, eager" 200 "$PY" benchmarks/train_throughput.py "${BENCH[@]}" \
        --precision bf16 "${TILES[@]}" --json "$OUT/bench-eager.json"
    step "fp16 with the gradient scaler, gpu profile" 90 "$PY" benchmarks/fit_speed.py \
        "${BENCH[@]}" --profile gpu --precision fp16 "${FP16[@]}" "${TILES[@]}" \
        --json "$OUT/fp16.json"
    step "paper profile's speed" 120 "$PY" benchmarks/fit_speed.py "${BENCH[@]}" \
        --profile paper "${PAPER[@]}" "${TILES[@]}" --json "$OUT/paper.json"
    step "benchmark, compiled" 300 "$PY" benchmarks/train_throughput.py "${BENCH[@]}" \
        --precision bf16 --compile "${TILES[@]}" --json "$OUT/bench-compiled.json"
}

experiment() {
    step "synthetic data" 120 "$PY" -m cosas_tutorial.cli data synthetic "$WORK/synthetic" \
        "${SYNTHETIC[@]}"
    step "cosas experiment, ${TRAIN[*]}" 300 "$PY" -m cosas_tutorial.cli experiment \
        --data "$WORK/synthetic" "${TRAIN[@]}" --out "$WORK/experiment" --quiet &&
        cp "$WORK/experiment/results.jsonl" "$OUT/experiment-results.jsonl"
    if [[ -z "${GPU_CHECK_SMOKE:-}" ]]; then
        step "CUDA-only tests" 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_train.py \
            -k never_waits
    fi
    step "profile of one step, eager" 120 "$PY" benchmarks/profile_step.py "${BENCH[@]}" \
        --precision bf16 "${TILES[@]}" --json "$OUT/profile-eager.json"
}

for part in "${@:-speed}"; do
    if [[ $part != speed && $part != experiment ]]; then
        echo "gpu_check: unknown part '$part' (speed or experiment)" >&2
        exit 2
    fi
    LOG="$OUT/$part.log"
    {
        date -u +%Y-%m-%dT%H:%M:%SZ
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1 || true
        "$PY" -m cosas_tutorial.cli info
        "$PY" -c 'import albumentations as A, cv2; print("albumentations", A.__version__, "opencv", cv2.__version__)'
    } 2>&1 | tee "$LOG"
    "$part"
done

if ((${#FAILED[@]})); then
    printf 'gpu_check: %d step(s) failed:\n' "${#FAILED[@]}" | tee -a "$LOG" >&2
    printf '  %s\n' "${FAILED[@]}" | tee -a "$LOG" >&2
    exit 1
fi
echo "gpu_check: all steps passed" | tee -a "$LOG"
