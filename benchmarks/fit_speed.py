"""A short training run at a named profile's setting: its loss per epoch, its speed, and the time
the profile's whole protocol would take at that speed.

    python benchmarks/fit_speed.py [--profile paper] [--precision auto|bf16|fp16|fp32]
        [--epochs 3] [--steps 50] [--tiles 32] [--tile 1500] [--device cuda] [--compile]
        [--tiny] [--data DIR] [--json PATH]

FPN + the profile's encoder (random initialisation: nothing is downloaded) trains with
``cosas_tutorial.train.fit`` for ``--epochs`` epochs of ``--steps`` steps, at the profile's crop,
batch, augmentation and precision, on the synthetic tiles of ``train_throughput.py`` (the same
files when ``--data`` is the same) cached on the device at the profile's ``tile_scale``. The
first epoch is the warm-up; images per second are over the others. Every epoch's loss must be
finite and the last below the first.

The protocol's time: the profile's epochs × steps per epoch × folds, at the time per step
measured here, for one strategy that trains one stage per fold (standard, union; cross-task
trains two). It counts training alone: not building models, loading tiles, validation or
prediction of the held-out tiles. Target for the ``paper`` profile: ≤ 15 minutes on one
H100-class GPU.

``--precision fp16`` on a GPU with bf16 runs the path of a T4 (fp16 autocast and the gradient
scaler; see ``train_throughput.forced_precision``): the run's last checkpoint gives the
scaler's state. ``--tiny`` (mit_b0, 32² crops, batch 2, 4 tiles of 160², 2 epochs of 2 steps)
is the CPU smoke test; the protocol's time is then computed from a tiny step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import tempfile
from pathlib import Path

import torch
from train_throughput import (
    benchmark_parser,
    device_name,
    parse_benchmark_args,
    run_and_report,
    target,
    target_lines,
    write_tiles,
)

from cosas_tutorial.config import PROFILES, get_profile
from cosas_tutorial.data.tiles import TileCache
from cosas_tutorial.env import seed_everything
from cosas_tutorial.model import build_model
from cosas_tutorial.train import fit

PROTOCOL_TARGET_MINUTES = {"paper": 15.0}  # one strategy, all folds, one H100-class GPU
TINY = dict(encoder="mit_b0", crop_size=32, batch_size=2)


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="paper")
    parser.add_argument("--epochs", type=int, help="epochs, the first a warm-up (3; tiny 2)")
    parser.add_argument("--steps", type=int, help="steps per epoch (50; tiny 2)")
    parser.add_argument("--tiles", type=int, help="synthetic tiles (32; tiny 4)")
    parser.add_argument("--tile", type=int, help="their side before tile_scale (1500; tiny 160)")
    args, _ = parse_benchmark_args(parser, argv)
    defaults = dict(epochs=2, steps=2, tiles=4, tile=160) if args.tiny else {}
    defaults = {**dict(epochs=3, steps=50, tiles=32, tile=1500), **defaults}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first is the warm-up")
    return args


def protocol_time(profile: str, ms_per_step: float) -> dict:
    """Training time of the profile's protocol for one strategy (one stage per fold)."""
    full = PROFILES[profile]
    steps = full.epochs * full.steps_per_epoch * full.run_folds
    seconds = steps * ms_per_step / 1000
    return {
        "epochs": full.epochs,
        "steps_per_epoch": full.steps_per_epoch,
        "folds": full.run_folds,
        "batch": full.batch_size,
        "steps": steps,
        "seconds": seconds,
        "minutes": seconds / 60,
    }


def run(args: argparse.Namespace, folder: Path) -> dict:
    device = args.device
    config = get_profile(args.profile).replace(
        encoder_weights=None,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        compile=args.compile,
        **(TINY if args.tiny else {}),
    )
    seed_everything(config.seed)
    samples = write_tiles(folder, args.tiles, args.tile)
    cache = TileCache(samples, config.tile_scale, device=device, progress=False)
    model = build_model(config.encoder)
    with tempfile.TemporaryDirectory(prefix="cosas-fit-") as tmp:
        checkpoint = Path(tmp) / "fit.ckpt"
        history = fit(model, cache, config, device, checkpoint=checkpoint, progress=False)
        scaler = torch.load(checkpoint, map_location="cpu", weights_only=False)["scaler"]

    timed = history[1:]
    seconds = sum(h["seconds"] for h in timed)
    steps = len(timed) * config.steps_per_epoch
    ms_per_step = 1000 * seconds / steps
    protocol = protocol_time(args.profile, ms_per_step)
    losses = [h["loss"] for h in history]
    targets = [
        target("epochs with a finite loss", sum(map(math.isfinite, losses)), "≥", len(losses)),
        target("loss, last epoch ÷ first", losses[-1] / losses[0], "<", 1),
    ]
    if args.profile in PROTOCOL_TARGET_MINUTES:
        bound = PROTOCOL_TARGET_MINUTES[args.profile]
        name = f"{args.profile} protocol, one strategy, minutes"
        targets.append(target(name, protocol["minutes"], "≤", bound))
    return {
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": args.profile,
        "precision": history[-1]["amp"],
        "settings": {
            "encoder": config.encoder,
            "crop": config.crop_size,
            "batch": config.batch_size,
            "tile": args.tile,
            "tiles": args.tiles,
            "tile_scale": config.tile_scale,
            "stain_aug": config.stain_aug,
            "epochs": config.epochs,
            "steps": config.steps_per_epoch,
            "channels_last": device.type == "cuda" and config.channels_last,
            "compile": device.type == "cuda" and config.compile,
            "tiny": args.tiny,
        },
        "epochs": [{key: h[key] for key in ("epoch", "loss", "seconds")} for h in history],
        # GradScaler's state: empty when the scaler is off (bf16, fp32)
        "scaler": scaler or None,
        "timed_steps": steps,
        "images_per_second": steps * config.batch_size / seconds,
        "ms_per_step": ms_per_step,
        "protocol": protocol,
        "targets": targets,
    }


def report(result: dict) -> str:
    s, p = result["settings"], result["protocol"]
    side = round(s["tile"] * s["tile_scale"])
    scaler = result["scaler"]
    lines = [
        f"device: {result['device']} ({result['device_name']}), torch {result['torch']}, "
        f"{result['date']}",
        f"setting: {result['profile']} profile, FPN + {s['encoder']} (random initialisation), "
        f"{s['crop']}² crops, batch {s['batch']}, {s['tiles']} tiles of {s['tile']}² scaled to "
        f"{side}², stain jitter {s['stain_aug']}, {result['precision']}, channels_last "
        f"{'on' if s['channels_last'] else 'off'}, compile {'on' if s['compile'] else 'off'}",
        "gradient scaler: "
        + (f"on, scale {scaler['scale']:g} at the end" if scaler else "off (not fp16)"),
        "",
        f"{'epoch':>5}{'loss':>9}{'seconds':>9}",
    ]
    for i, epoch in enumerate(result["epochs"]):
        warm = "  (warm-up)" if i == 0 else ""
        lines.append(f"{epoch['epoch']:>5}{epoch['loss']:>9.4f}{epoch['seconds']:>9.2f}{warm}")
    lines += [
        f"timed: {result['timed_steps']} steps, {result['images_per_second']:.1f} images/s, "
        f"{result['ms_per_step']:.1f} ms per step",
        "",
        f"{result['profile']} protocol, one strategy (one training stage per fold; cross-task "
        "trains two):",
        f"  {p['epochs']} epochs × {p['steps_per_epoch']} steps × {p['folds']} fold(s) = "
        f"{p['steps']} steps of {p['batch']} images",
        f"  × {result['ms_per_step']:.1f} ms per step (measured above at batch {s['batch']}, "
        f"{s['crop']}² crops) = {p['seconds']:.0f} s = {p['minutes']:.1f} min of training",
        "  (not counted: building models, loading tiles, validation, held-out prediction)",
        "",
        *target_lines(result["targets"], result["device"]),
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    return run_and_report(parse_args(argv), run, report, "cosas-fit-")


if __name__ == "__main__":
    main()
