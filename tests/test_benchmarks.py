"""Smoke test of the throughput benchmark: it runs at tiny size on the CPU and reports fully."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "train_throughput.py"
ROWS = (
    "model-only ceiling",
    "cosas trainer (cache + device augmentation)",
    "DataLoader + albumentations (num_workers=2)",
)


def cpu_env(**extra) -> dict:
    """The environment of a benchmark run on the CPU. One intra-op thread: on a busy two-core
    machine OpenMP threads waiting for each other made a run 7× slower (127 s against 18 s at a
    load of 7)."""
    return {
        **os.environ,
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def run_tiny(script: Path, out: Path) -> subprocess.CompletedProcess:
    """A benchmark script at tiny size on the CPU, its JSON written to ``out``; it must succeed."""
    done = subprocess.run(
        [sys.executable, str(script), "--tiny", "--device", "cpu", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=cpu_env(),
        cwd=out.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_throughput_benchmark_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "bench.json"
    done = run_tiny(SCRIPT, out)
    result = json.loads(out.read_text())
    assert list(result["rows"]) == list(ROWS)
    assert all(rate > 0 for rate in result["rows"].values())
    assert list(result["rounds"]) == list(ROWS[:2])
    for name, rounds in result["rounds"].items():  # paths 1 and 2: the median round
        assert len(rounds) == result["settings"]["rounds"] == 2
        assert min(rounds) <= result["rows"][name] <= max(rounds)
    assert set(result["ratios"]) == {"2/1", "2/3"}
    assert result["ratios"]["2/1"] == result["rows"][ROWS[1]] / result["rows"][ROWS[0]]
    assert all(ratio > 0 for ratio in result["ratios"].values())
    assert result["predict"]["ms_mean"] > 0 and result["predict"]["tta"] is False
    assert result["cache"]["data_ms_per_batch"] > 0
    assert result["device"] == "cpu" and result["torch"] and result["date"]
    printed = done.stdout
    for row in ROWS:
        assert row in printed
    assert "ratio 2/1:" in printed and "ratio 2/3:" in printed
    assert "sliding-window prediction" in printed


def test_step_profile_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "profile.json"
    done = run_tiny(BENCHMARKS / "profile_step.py", out)
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert list(rows) == list(ROWS[:2])
    assert rows[ROWS[0]]["host_batch_ms"] is None  # the ceiling cuts no batches
    assert rows[ROWS[1]]["host_batch_ms"] > 0  # fit's batch label was seen by the profiler
    for row in rows.values():
        assert 0 < row["host_step_ms"] <= row["wall_ms"] * 1.05
    assert all(name in done.stdout for name in ROWS[:2])
    # the operators issued per step: the data path adds a few dozen to the model's thousands
    ceiling, trainer = result["operators_per_step"].values()
    assert ceiling < trainer < 1.1 * ceiling
    assert "aten operators issued per step" in done.stdout


def test_gpu_check_script_runs_in_its_cpu_smoke_mode(tmp_path):
    out = tmp_path / "out"
    env = cpu_env(
        GPU_CHECK_SMOKE="1", OUT=str(out), WORK=str(tmp_path / "work"), PYTHON=sys.executable
    )
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (out / "gpu_check.log").read_text()
    assert "gpu_check: all steps passed" in log and "ratio 2/1:" in log
    assert json.loads((out / "bench-eager.json").read_text())["device"] == "cpu"
    assert json.loads((out / "profile-eager.json").read_text())["device"] == "cpu"
    records = [json.loads(line) for line in (out / "train-records.jsonl").read_text().splitlines()]
    assert records and all(r["history"][-1]["amp"] == "fp32" for r in records)  # CPU: fp32
