"""Where a training step's time goes: the model-only step beside the trainer's, profiled.

    python benchmarks/profile_step.py [--device cuda] [--steps 20] [--compile]
        [--precision auto|bf16|fp16|fp32] [--tiny] [--data DIR] [--json PATH]

Runs paths 1 and 2 of ``train_throughput.py`` (same settings and defaults, same synthetic
tiles) under ``torch.profiler``, after a warm-up of each: ``--steps`` steps of the model-only
``TrainStep`` on a fixed batch on the device, then one ``fit`` epoch of ``--steps`` steps on the
tile cache. Per step it prints the wall time, the host time of the step and of the batch
(the ``cosas.step`` and ``cosas.batch`` labels of ``fit``) and, on CUDA, the GPU's busy time
(the sum of its kernel and copy times) and the number of kernels.

Reading it: a GPU busy for most of a step's wall time bounds the step; a GPU busy for far less
waits for the host (Python and operator dispatch issuing the kernels), and then each operator
the data path adds costs the trainer time that the ceiling does not pay. Times are under the
profiler, which adds a little host time to every operator.

It also counts, without timing, the aten operators the main thread issues per step: for the
ceiling and for the trainer, each over one epoch from a fresh optimiser, eager (the count
ignores ``--compile``). If the host bounds the step, the ceiling's count over the trainer's is
about the most the ratio 2/1 of ``train_throughput.py`` can reach.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function
from train_throughput import (
    CEILING,
    TRAINER,
    benchmark_config,
    benchmark_parser,
    parse_benchmark_args,
    random_batch,
    run_and_report,
    sync,
    write_tiles,
)

from cosas_tutorial.data.tiles import TileCache
from cosas_tutorial.env import OperatorCount
from cosas_tutorial.model import build_model
from cosas_tutorial.train import BATCH_LABEL, STEP_LABEL, TrainStep, fit


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--steps", type=int, help="profiled steps per path (default 20; tiny 2)")
    args, settings = parse_benchmark_args(parser, argv)
    args.settings = settings
    args.steps = args.steps or (2 if args.tiny else 20)
    return args


def summarise(prof, steps: int, seconds: float, cuda: bool) -> dict:
    """Per-step figures of one profiled loop (times in ms)."""
    events = prof.key_averages()
    host = {
        e.key: e.cpu_time_total / 1000 / steps for e in events if e.key in (BATCH_LABEL, STEP_LABEL)
    }
    row = {
        "wall_ms": 1000 * seconds / steps,
        "host_step_ms": host.get(STEP_LABEL),
        "host_batch_ms": host.get(BATCH_LABEL),
    }
    if cuda:
        on_gpu = [e for e in events if e.device_type == DeviceType.CUDA]
        row["gpu_busy_ms"] = sum(e.self_device_time_total for e in on_gpu) / 1000 / steps
        row["gpu_busy_share"] = row["gpu_busy_ms"] / row["wall_ms"]
        row["kernels"] = sum(e.count for e in on_gpu) / steps
    return row


OPERATOR_ROWS = ("model-only ceiling", "trainer")


def operators_per_step(model, cache, config, device) -> dict:
    """Aten operators issued per step: the ceiling (a fresh ``TrainStep`` on a fixed batch) and
    one ``fit`` epoch, eager."""
    config = config.replace(compile=False)
    steps = config.steps_per_epoch
    images, masks = random_batch(config, device)

    def ceiling():
        step = TrainStep(model, config, device, total_steps=steps)
        for _ in range(steps):
            step(images, masks)

    def trainer():
        fit(model, cache, config, device, progress=False)

    work = dict(zip(OPERATOR_ROWS, (ceiling, trainer)))
    counts = {}
    for name, run in work.items():
        with OperatorCount() as counter:
            run()
        sync(device)
        counts[name] = counter.count / steps
    return counts


def profiled(work, steps: int, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(device)
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        work()
        sync(device)
        seconds = time.perf_counter() - started
    return summarise(prof, steps, seconds, cuda)


def run(args: argparse.Namespace, folder: Path) -> dict:
    s, device, steps = args.settings, args.device, args.steps
    config = benchmark_config(s["encoder"], s["crop"], s["batch"], steps, args.compile)
    samples = write_tiles(folder, s["tiles"], s["tile"])
    model = build_model(s["encoder"])
    images, masks = random_batch(config, device)
    step = TrainStep(model, config, device, total_steps=2 * steps)
    model.train()

    def ceiling():
        for _ in range(steps):
            with record_function(STEP_LABEL):
                step(images, masks)

    cache = TileCache(samples, 1.0, device=device, progress=False)

    def trainer():
        fit(model, cache, config, device, progress=False)

    ceiling()  # warm-up of both paths
    trainer()
    rows = {CEILING: profiled(ceiling, steps, device), TRAINER: profiled(trainer, steps, device)}
    operators = operators_per_step(model, cache, config, device)
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "settings": {
            **{key: s[key] for key in ("encoder", "crop", "batch", "tile", "tiles")},
            "steps": steps,
            "precision": step.precision,
            "compile": device.type == "cuda" and args.compile,
        },
        "rows": rows,
        "operators_per_step": operators,
    }


def _cell(row: dict, key: str, width: int, fmt: str = "{:.1f}") -> str:
    value = row.get(key)
    return f"{'–' if value is None else fmt.format(value):>{width}}"


def report(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"device: {result['device']} ({result['device_name']}), torch {result['torch']}; "
        f"FPN + {s['encoder']}, {s['crop']}² crops, batch {s['batch']}, {s['steps']} profiled "
        f"steps per path, {s['precision']}, compile {'on' if s['compile'] else 'off'}",
        "",
        f"{'per step, under the profiler':<46}{'wall ms':>9}{'host: step':>12}{'batch':>8}"
        f"{'GPU busy ms':>13}{'busy':>7}{'kernels':>9}",
    ]
    for i, (name, row) in enumerate(result["rows"].items(), start=1):
        lines.append(
            f"{i} {name:<44}{_cell(row, 'wall_ms', 9)}{_cell(row, 'host_step_ms', 12)}"
            f"{_cell(row, 'host_batch_ms', 8)}{_cell(row, 'gpu_busy_ms', 13)}"
            f"{_cell(row, 'gpu_busy_share', 7, '{:.0%}')}{_cell(row, 'kernels', 9, '{:.0f}')}"
        )
    operators = result["operators_per_step"]
    ceiling = operators[OPERATOR_ROWS[0]]
    lines += [
        "",
        f"{'aten operators issued per step (eager)':<58}{'count':>8}{'ceiling ÷ count':>17}",
    ]
    for name, count in operators.items():
        lines.append(f"{name:<58}{count:>8.0f}{ceiling / count:>17.3f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    return run_and_report(parse_args(argv), run, report, "cosas-profile-")


if __name__ == "__main__":
    main()
