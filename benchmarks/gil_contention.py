"""When should a background thread cut the next batch? A model of a host-bound step, on the CPU.

    python benchmarks/gil_contention.py [--rounds 40] [--forward-ops 1800] [--batch-ops 400]
        [--op-size 16384] [--backward-side 700]

On a GPU an eager training step is mostly the host issuing operators. The forward pass issues
them from Python, which holds the GIL between operators (torch lets it go inside each one); the
backward pass runs in autograd's engine, in C++, without the GIL. A second thread that cuts
the next batch issues a few hundred operators of its own. This script times, on the CPU, a
model of that step: "forward" = ``--forward-ops`` small in-place additions issued from Python;
"backward" = one matrix product (one call without the GIL); "batch" = ``--batch-ops`` small
additions. It compares the step alone (the ceiling) with the batch cut in turn, cut in a
thread from the forward's start, and cut in a thread from the backward's start, in
alternating rounds, and prints each one's time and ceiling ÷ time (median over rounds).

It models only the GIL: no GPU, and the small operators stand for kernel launches. Run it on
an otherwise idle machine with at least two cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="alternating timed rounds")
    parser.add_argument("--forward-ops", type=int, default=1800, help="operators of the forward")
    parser.add_argument("--batch-ops", type=int, default=400, help="operators of a batch")
    parser.add_argument("--op-size", type=int, default=16384, help="elements per small operator")
    parser.add_argument("--backward-side", type=int, default=700, help="side of the matrices")
    return parser.parse_args(argv)


def seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)  # one core per thread: the threads compete for the GIL only
    step_x, batch_x = torch.zeros(args.op_size), torch.zeros(args.op_size)
    a, b = (torch.rand(args.backward_side, args.backward_side) for _ in range(2))

    def operators(n: int, x: torch.Tensor) -> None:
        for _ in range(n):
            x.add_(1.0)

    def forward():
        operators(args.forward_ops, step_x)

    def backward():
        torch.mm(a, b)

    def batch():
        operators(args.batch_ops, batch_x)

    pool = ThreadPoolExecutor(1)

    def ahead_from_forward():
        cutting = pool.submit(batch)
        forward()
        backward()
        cutting.result()

    def ahead_from_backward():
        forward()
        cutting = pool.submit(batch)
        backward()
        cutting.result()

    paths = {
        "step alone (ceiling)": lambda: (forward(), backward()),
        "batch cut in turn": lambda: (batch(), forward(), backward()),
        "batch cut in a thread from the forward's start": ahead_from_forward,
        "batch cut in a thread from the backward's start": ahead_from_backward,
    }
    for work in paths.values():  # warm-up
        work()
    times = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, work in paths.items():
            times[name].append(seconds(work))
    pool.shutdown()
    ceiling = times["step alone (ceiling)"]
    return {
        "alone_ms": {
            part: 1000 * statistics.median(seconds(work) for _ in range(args.rounds))
            for part, work in (("forward", forward), ("backward", backward), ("batch", batch))
        },
        "paths": {
            name: {
                "ms": 1000 * statistics.median(t),
                "ceiling_ratio": statistics.median(c / x for c, x in zip(ceiling, t)),
            }
            for name, t in times.items()
        },
    }


def report(result: dict, args: argparse.Namespace) -> str:
    alone = result["alone_ms"]
    lines = [
        f"torch {torch.__version__}; each part alone: forward {args.forward_ops} operators "
        f"{alone['forward']:.2f} ms, backward {alone['backward']:.2f} ms, batch "
        f"{args.batch_ops} operators {alone['batch']:.2f} ms (medians of {args.rounds})",
        "",
        f"{'path':<50}{'ms':>8}{'ceiling ÷ path':>16}",
    ]
    for name, row in result["paths"].items():
        lines.append(f"{name:<50}{row['ms']:>8.2f}{row['ceiling_ratio']:>16.3f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(report(result, args), flush=True)
    return result


if __name__ == "__main__":
    main()
