"""The benchmarks at tiny size on the CPU: the GPU check's smoke mode runs every script of
benchmarks/ once (≈ 50 s), and the tests read what it wrote."""

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosas_tutorial import env, evaluate, train
from cosas_tutorial.config import PROFILES, get_profile
from cosas_tutorial.data.layout import TASKS
from cosas_tutorial.model import build_model
from cosas_tutorial.strategies import STRATEGIES
from cosas_tutorial.train import TrainStep

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ROWS = (
    "model-only ceiling",
    "cosas trainer (cache + device augmentation)",
    "DataLoader + albumentations (num_workers=2)",
)
SPEED_FILES = ("speed.log", "bench-eager.json", "fp16.json", "paper.json", "bench-compiled.json")
EXPERIMENT_FILES = ("experiment.log", "experiment-results.jsonl", "profile-eager.json")
CPU = torch.device("cpu")


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


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """The results folder of ``GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh speed
    experiment``, which must pass."""
    tmp = tmp_path_factory.mktemp("gpu-check")
    out = tmp / "out"
    env_vars = cpu_env(
        GPU_CHECK_SMOKE="1", OUT=str(out), WORK=str(tmp / "work"), PYTHON=sys.executable
    )
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "speed", "experiment"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env_vars,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def read_json(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def check_targets(result: dict, names: list[str]) -> None:
    """The targets are the expected ones, and each says met exactly when its value meets it."""
    assert [t["name"] for t in result["targets"]] == names
    for t in result["targets"]:
        compare, bound = t["bound"].split()
        value, bound = t["value"], float(bound)
        assert t["met"] is {"≥": value >= bound, "≤": value <= bound, "<": value < bound}[compare]


def test_gpu_check_runs_every_step_in_its_cpu_smoke_mode(smoke):
    # within what comes back from a GPU machine: at most 8 files, no subfolders
    assert sorted(p.name for p in smoke.iterdir()) == sorted(SPEED_FILES + EXPERIMENT_FILES)
    speed, experiment = ((smoke / f"{part}.log").read_text() for part in ("speed", "experiment"))
    for step in ("benchmark, eager", "fp16 with the gradient scaler", "paper profile's speed"):
        assert f"=== {step}" in speed
    assert "=== benchmark, compiled: exit 0" in speed and "ratio 2/1:" in speed
    assert "target: ratio 2/1 ≥ 0.95:" in speed
    assert "gpu_check: all steps passed" in experiment
    records = [json.loads(line) for line in (smoke / "experiment-results.jsonl").open()]
    trained = {(r["task"], r["strategy"]) for r in records if r["history"]}
    assert trained == {(task, name) for task in TASKS for name in STRATEGIES}
    assert all(h["amp"] == "fp32" for r in records for h in r["history"])  # CPU: fp32


def test_throughput_benchmark_reports_rows_ratios_and_targets(smoke):
    for name in ("bench-eager.json", "bench-compiled.json"):
        result = read_json(smoke, name)
        assert list(result["rows"]) == list(ROWS)
        assert all(rate > 0 for rate in result["rows"].values())
        assert list(result["rounds"]) == list(ROWS[:2])
        for row, rounds in result["rounds"].items():  # paths 1 and 2: the median round
            assert len(rounds) == result["settings"]["rounds"] == 2
            assert min(rounds) <= result["rows"][row] <= max(rounds)
        assert result["ratios"]["2/1"] == result["rows"][ROWS[1]] / result["rows"][ROWS[0]]
        assert result["ratios"]["2/3"] == result["rows"][ROWS[1]] / result["rows"][ROWS[2]]
        assert result["predict"]["ms_mean"] > 0 and result["predict"]["tta"] is False
        assert result["cache"]["data_ms_per_batch"] > 0
        assert result["device"] == "cpu" and result["torch"] and result["date"]
        assert result["precision"] == "bfloat16"  # --precision bf16, forced on the CPU
        # torch.compile runs on CUDA only, as in the trainer; the run says it was not used
        assert result["settings"]["compile"] is result["predict"]["compiled"] is False
        check_targets(result, ["ratio 2/1", "160×160 tile predicted, ms"])
        assert result["targets"][0]["value"] == result["ratios"]["2/1"]
        assert result["targets"][1]["value"] == result["predict"]["ms_mean"]


def test_fp16_run_trains_with_the_gradient_scaler(smoke):
    result = read_json(smoke, "fp16.json")
    assert result["profile"] == "gpu" and result["precision"] == "float16"
    assert result["scaler"]["scale"] > 0  # the checkpoint's scaler state: empty when off
    losses = [epoch["loss"] for epoch in result["epochs"]]
    assert len(losses) == result["settings"]["epochs"] == 2 and all(map(math.isfinite, losses))
    check_targets(result, ["epochs with a finite loss", "loss, last epoch ÷ first"])
    assert result["targets"][0]["met"]
    assert result["targets"][1]["value"] == losses[-1] / losses[0]
    timed = result["epochs"][1:]  # after the warm-up epoch
    assert result["timed_steps"] == len(timed) * result["settings"]["steps"]
    seconds = sum(epoch["seconds"] for epoch in timed)
    rate = result["timed_steps"] * result["settings"]["batch"] / seconds
    assert result["images_per_second"] == pytest.approx(rate)


def test_paper_run_computes_the_protocols_time(smoke):
    result = read_json(smoke, "paper.json")
    assert result["precision"] == "fp32" and result["scaler"] is None
    paper, protocol = PROFILES["paper"], result["protocol"]
    assert protocol["steps"] == paper.epochs * paper.steps_per_epoch * paper.run_folds == 5400
    assert protocol["minutes"] == pytest.approx(5400 * result["ms_per_step"] / 60_000)
    check_targets(
        result,
        [
            "epochs with a finite loss",
            "loss, last epoch ÷ first",
            "paper protocol, one strategy, minutes",
        ],
    )
    assert result["targets"][2]["bound"] == "≤ 15"
    speed = (smoke / "speed.log").read_text()
    assert "30 epochs × 36 steps × 5 fold(s) = 5400 steps of 4 images" in speed


def test_step_profile_reports_host_time_and_operators(smoke):
    result = read_json(smoke, "profile-eager.json")
    rows = result["rows"]
    assert list(rows) == list(ROWS[:2]) and result["settings"]["precision"] == "bfloat16"
    assert rows[ROWS[0]]["host_batch_ms"] is None  # the ceiling cuts no batches
    assert rows[ROWS[1]]["host_batch_ms"] > 0  # fit's batch label was seen by the profiler
    for row in rows.values():
        assert 0 < row["host_step_ms"] <= row["wall_ms"] * 1.05
    # the operators issued per step: the data path adds a few dozen to the model's thousands
    ceiling, trainer = result["operators_per_step"].values()
    assert ceiling < trainer < 1.1 * ceiling
    assert "aten operators issued per step" in (smoke / "experiment.log").read_text()


@pytest.mark.parametrize(
    "precision, dtype",
    [("auto", None), ("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)],
)
def test_forced_precision_sets_the_trainers_dtype_and_scaler(precision, dtype, monkeypatch):
    """``--precision`` of the benchmarks: the package's own step in the forced dtype, with the
    gradient scaler for fp16 only; on leaving, the device's own choice again."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("train_throughput")
    config = get_profile("ci", crop_size=32, batch_size=2)
    model = build_model(config.encoder)
    images, masks = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    with bench.forced_precision(precision):
        step = TrainStep(model, config, CPU, total_steps=1)
        loss = step(images, masks)
        assert evaluate.autocast_dtype(CPU) is dtype  # prediction follows as well
    assert step.amp_dtype is dtype and step.scaler.is_enabled() is (precision == "fp16")
    assert torch.isfinite(loss)
    assert train.autocast_dtype is evaluate.autocast_dtype is env.autocast_dtype
