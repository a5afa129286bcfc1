"""Training throughput: the model-only ceiling, the cosas trainer, a DataLoader baseline.

    python benchmarks/train_throughput.py [--device cuda] [--encoder mit_b2] [--crop 512]
        [--batch 16] [--tile 1500] [--tiles 32] [--steps N] [--rounds N] [--warmup N]
        [--baseline-steps N] [--runs N] [--workers 2] [--compile]
        [--precision auto|bf16|fp16|fp32] [--tiny] [--data DIR] [--json PATH]

Measures in one run, on one device, images per second of:

1. the model-only ceiling: the trainer's own step (model, Adam, BCE, autocast, channels_last)
   on random tensors already on the device;
2. the cosas trainer end to end: synthetic tiles of COSAS size as PNG files on disk → uint8
   tensor cache on the device → crops and augmentation on the device → the same step
   (``cosas_tutorial.train.fit``, one epoch per round after a warm-up epoch);
3. a conventional baseline: a torch DataLoader (``--workers``, 2 by default, like Colab's two
   cores) whose workers decode each PNG with OpenCV and augment it with albumentations on the
   CPU, uint8 batches sent to the device, then the same step;

Paths 1 and 2 are timed in alternating rounds and reported as the median round (each round is
printed too). It prints the ratios 2/1 (how close the trainer gets to the model's own speed)
and 2/3 (its speed-up over the baseline). It also times sliding-window prediction of one
tile (``cosas_tutorial.evaluate.predict_tile``, window = crop, no TTA, autocast on a GPU): the
mean of ``--runs`` runs after a warm-up (the whole tile on a GPU, one window on the CPU), each
ending with the probability map on the host; with ``--compile`` the model it predicts with is
compiled too. On CUDA it also counts host-device synchronisations of one batch and of one
training step (torch's sync debug mode).

Two targets, set for an H100-class GPU at the CUDA defaults, are printed as met or not met (and
kept in the JSON): ratio 2/1 ≥ 0.95 and the 1500² tile predicted in ≤ 20 ms.

``--precision`` forces the autocast dtype that ``cosas_tutorial.env.autocast_dtype`` would
choose for the device (``auto``: bf16 on Ampere and newer, fp16 on older GPUs, fp32 on the
CPU); ``fp16`` runs a T4's path, gradient scaler included, on any device.

Both augmentation paths do the same things: a random square crop of ``crop / s`` pixels
(s in 0.8–1.25) resized to ``crop``, a random flip/90° rotation, brightness/contrast/saturation/
hue jitter and H&E stain jitter.

Synthetic tiles: ``synthesize`` at a quarter of ``--tile`` (it takes seconds per tile at 1500²),
upscaled (bicubic) with ±4 grey levels of pixel noise, so that decoding costs what a textured
tile costs rather than a smooth one (≈3.8 MB per 1500² PNG). ``--data`` keeps them for reuse.

Defaults depend on the device: on CUDA the target setting (mit_b2, 512² crops, batch 16, 32
tiles of 1500², 3 rounds of 60 timed steps, 20 for the baseline); on the CPU mit_b0, 128²
crops, batch 8, 8 tiles of 1500², 2 rounds of 8 steps; ``--tiny`` (mit_b0, 64² crops,
batch 4, 4 tiles of 160²) is the smoke test of ``make test``. Nothing here needs the internet,
papermill or a notebook.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import operator  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cosas_tutorial import evaluate, train  # noqa: E402
from cosas_tutorial.config import RunConfig, get_profile  # noqa: E402
from cosas_tutorial.data.cosas import read_image  # noqa: E402
from cosas_tutorial.data.layout import Sample  # noqa: E402
from cosas_tutorial.data.synthetic import synthesize  # noqa: E402
from cosas_tutorial.data.tiles import TileCache  # noqa: E402
from cosas_tutorial.env import pick_device  # noqa: E402
from cosas_tutorial.evaluate import predict_tile, window_grid  # noqa: E402
from cosas_tutorial.model import build_model  # noqa: E402
from cosas_tutorial.train import TrainStep, cut_batch, fit  # noqa: E402

CEILING = "model-only ceiling"
TRAINER = "cosas trainer (cache + device augmentation)"
SYNC_WARNING = "called a synchronizing CUDA operation"
SCALE_RANGE = (0.8, 1.25)  # as cosas_tutorial.data.tiles.sample_batch
RATIO_TARGET = 0.95  # trainer ÷ model-only ceiling
PREDICT_TARGET_MS = 20.0  # one 1500² tile, mit_b2, 512² windows
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
COMPARE = {"≥": operator.ge, "≤": operator.le, "<": operator.lt}  # of a target

# device type -> settings; --tiny overrides both. The model's size comes from a profile of
# cosas_tutorial.config (encoder, crop, batch; "crop" here overrides the profile's); the rest is
# how long to time. On a GPU one 30-step window (≈ 2 s) moved by ±10 % between runs, so the
# ceiling and the trainer are timed in alternating rounds of 60 steps.
DEFAULTS = {
    "cuda": dict(
        profile="gpu",
        tile=1500,
        tiles=32,
        steps=60,
        rounds=3,
        warmup=10,
        baseline_steps=20,
        runs=10,
    ),
    "cpu": dict(
        profile="cpu",
        crop=128,
        tile=1500,
        tiles=8,
        steps=8,
        rounds=2,
        warmup=2,
        baseline_steps=8,
        runs=2,
    ),
    "tiny": dict(
        profile="ci",
        tile=160,
        tiles=4,
        steps=2,
        rounds=2,
        warmup=1,
        baseline_steps=2,
        runs=2,
    ),
}


def baseline_label(workers: int) -> str:
    return f"DataLoader + albumentations (num_workers={workers})"


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the options every script of benchmarks/ has; ``doc``'s first line
    describes it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (CUDA only)")
    parser.add_argument(
        "--precision",
        choices=("auto", *PRECISIONS),
        default="auto",
        help="autocast dtype (auto: what the device supports; fp16 adds the gradient scaler)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the CPU smoke test")
    parser.add_argument("--data", type=Path, help="folder for the tiles (default: temporary)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    return parser


def parse_benchmark_args(parser: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, dict]:
    """The parsed arguments, with the device resolved, and the default settings they select."""
    args = parser.parse_args(argv)
    args.device = pick_device(args.device)
    chosen = DEFAULTS["tiny" if args.tiny else args.device.type]
    profile = get_profile(chosen["profile"])
    sizes = {"encoder": profile.encoder, "crop": profile.crop_size, "batch": profile.batch_size}
    return args, {**sizes, **{k: v for k, v in chosen.items() if k != "profile"}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--encoder", help="mit_b0 … mit_b5")
    parser.add_argument("--crop", type=int, help="training crop and prediction window")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--tile", type=int, help="synthetic tile side (COSAS: 1500)")
    parser.add_argument("--tiles", type=int, help="number of synthetic tiles")
    parser.add_argument("--steps", type=int, help="timed steps per round (paths 1 and 2)")
    parser.add_argument("--rounds", type=int, help="alternating timed rounds of paths 1 and 2")
    parser.add_argument("--warmup", type=int, help="untimed steps before each path's timing")
    parser.add_argument("--baseline-steps", type=int, help="timed steps of path 3 (slow)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (baseline)")
    parser.add_argument("--runs", type=int, help="timed sliding-window predictions")
    args, defaults = parse_benchmark_args(parser, argv)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def forced_precision(precision: str):
    """Train and predict in ``precision`` ("auto": whatever the device supports).

    The package takes its one choice of dtype from ``autocast_dtype``; answering it differently
    runs exactly the code a card of that kind runs (``TrainStep`` adds the gradient scaler for
    fp16, as on a T4). ``tests/test_train.py`` forces fp16 the same way.
    """
    if precision == "auto":
        yield
        return
    dtype = PRECISIONS[precision]
    with (
        mock.patch.object(train, "autocast_dtype", lambda device: dtype),
        mock.patch.object(evaluate, "autocast_dtype", lambda device: dtype),
    ):
        yield


def target(name: str, value: float, compare: str, bound: float) -> dict:
    """A target as the JSON keeps it: whether ``value compare bound`` (NaN meets none)."""
    met = bool(COMPARE[compare](value, bound))
    return {"name": name, "value": value, "bound": f"{compare} {bound:g}", "met": met}


def target_lines(targets: list[dict], device: str) -> list[str]:
    lines = [
        f"target: {t['name']} {t['bound']}: {t['value']:.4g} → {'met' if t['met'] else 'NOT MET'}"
        for t in targets
    ]
    if device != "cuda":
        lines.append("(the targets are set for an H100-class GPU; here they say nothing)")
    return lines


def benchmark_config(encoder: str, crop: int, batch: int, steps: int, compile: bool):
    """The run configuration the benchmarks time: the gpu profile at the given size, random
    initialisation, epochs of ``steps`` steps, HED stain jitter."""
    return get_profile("gpu").replace(
        encoder=encoder,
        encoder_weights=None,
        crop_size=crop,
        batch_size=batch,
        epochs=1,
        steps_per_epoch=steps,
        stain_aug="hed",
        compile=compile,
    )


def random_batch(config: RunConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of random images and {0, 1} masks on ``device``: the ceiling's input."""
    shape = (config.batch_size, 3, config.crop_size, config.crop_size)
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(shape, generator=g, device=device)
    masks = (torch.rand(shape[0], 1, *shape[2:], generator=g, device=device) > 0.5).float()
    return images, masks


# --------------------------------------------------------------------------------------------
# Synthetic tiles on disk


def write_tiles(folder: Path, count: int, side: int) -> list[Sample]:
    """``count`` synthetic COSAS-like tiles of side×side pixels as PNG pairs in ``folder``."""
    domains = ("colorectum", "pancreas", "stomach")
    base = side if side <= 384 else max(64, round(side / 4))
    rng = np.random.default_rng(0)
    samples = []
    for index in range(count):
        domain = domains[index % len(domains)]
        image_path = folder / domain / "image" / f"{index:04d}.png"
        mask_path = folder / domain / "mask" / f"{index:04d}.png"
        if not (image_path.exists() and mask_path.exists()):
            image, mask = synthesize("task1", domain, index, size=base)
            if base != side:
                image = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
                noise = rng.integers(-4, 5, image.shape, dtype=np.int16)
                image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
                mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_NEAREST)
            image_path.parent.mkdir(parents=True, exist_ok=True)
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image_path), image[..., ::-1])  # OpenCV writes BGR
            cv2.imwrite(str(mask_path), mask)
        samples.append(Sample(image_path, mask_path, "task1", domain, "train"))
    return samples


# --------------------------------------------------------------------------------------------
# The three paths


def run_paths(model, samples, config, device, rounds: int, warmup: int) -> dict:
    """Paths 1 and 2, each warmed up, then timed in ``rounds`` alternating rounds of
    ``config.steps_per_epoch`` steps (so a drift of the machine hits both alike).

    Path 1 steps one ``TrainStep`` on a fixed random batch already on the device; path 2 is one
    epoch of ``fit`` per round (its own timer stops after the epoch's losses reach the host).
    """
    images, masks = random_batch(config, device)
    steps = config.steps_per_epoch
    ceiling_step = TrainStep(model, config, device, total_steps=warmup + rounds * steps)
    model.train()
    for _ in range(warmup):
        ceiling_step(images, masks)

    started = time.perf_counter()
    cache = TileCache(samples, 1.0, device=device, progress=False)
    cache_info = {
        "tiles": len(cache),
        "mib": cache.nbytes / 2**20,
        "where": "pinned host memory" if cache.pinned else str(cache.device),
        "fill_seconds": time.perf_counter() - started,
    }
    warmup_config = config.replace(epochs=1, steps_per_epoch=warmup)
    fit(model, cache, warmup_config, device, progress=False)

    rates = {CEILING: [], TRAINER: []}
    for number in range(1, rounds + 1):
        sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            ceiling_step(images, masks)
        sync(device)
        rates[CEILING].append(steps * config.batch_size / (time.perf_counter() - started))
        epoch = fit(model, cache, config, device, progress=False)[-1]
        rates[TRAINER].append(steps * config.batch_size / epoch["seconds"])
        # as it goes: a run stopped by a time limit still leaves its rounds in the log
        print(
            f"round {number}/{rounds}, images/s: ceiling {rates[CEILING][-1]:.1f}, "
            f"trainer {rates[TRAINER][-1]:.1f}",
            flush=True,
        )

    cache_info["data_ms_per_batch"] = time_data_path(cache, config, device)
    if device.type == "cuda":
        cache_info["syncs_per_step"] = count_syncs(model, cache, config, device)
    return {"rounds": rates, "cache": cache_info, "precision": ceiling_step.precision}


def time_data_path(cache, config, device, batches: int = 5) -> float:
    """Milliseconds to cut and augment one batch from the cache, without the model."""
    g = torch.Generator().manual_seed(2)
    cut_batch(cache, config, g, device)
    sync(device)
    started = time.perf_counter()
    for _ in range(batches):
        cut_batch(cache, config, g, device)
    sync(device)
    return 1000 * (time.perf_counter() - started) / batches


def count_syncs(model, cache, config, device) -> dict:
    """Host-device synchronisations of one batch (cut + augmented) and of one training step,
    as torch's sync debug mode reports them (CUDA only)."""
    step = TrainStep(model, config, device, total_steps=4)
    batch = partial(cut_batch, cache, config, torch.Generator().manual_seed(1), device)
    step(*batch())  # first-call allocations
    torch.cuda.synchronize(device)
    counts = {}
    for name, work in (("data", batch), ("data + step", lambda: step(*batch()))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                work()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        # torch's message for a sync; its once-only "prototype feature" notice must not count
        counts[name] = sum(SYNC_WARNING in str(w.message) for w in caught)
    torch.cuda.synchronize(device)
    return counts


class AlbumentationsTiles(torch.utils.data.Dataset):
    """The conventional path: decode a PNG pair, augment it on the CPU, return uint8 tensors."""

    def __init__(self, samples, crop: int, side: int):
        import albumentations as A

        self.samples = samples
        smallest, largest = crop / SCALE_RANGE[1], crop / SCALE_RANGE[0]
        area = max(side, round(largest)) ** 2
        self.transform = A.Compose(
            [
                A.PadIfNeeded(
                    round(largest), round(largest), border_mode=cv2.BORDER_CONSTANT, fill=255
                ),
                A.RandomResizedCrop(
                    (crop, crop), scale=(smallest**2 / area, largest**2 / area), ratio=(1, 1)
                ),
                A.D4(p=1.0),
                A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.05, p=1.0),
                A.HEStain(
                    method="preset",
                    preset="ruifrok",
                    intensity_scale_range=(0.95, 1.05),
                    intensity_shift_range=(-0.05, 0.05),
                    p=1.0,
                ),
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = cv2.cvtColor(cv2.imread(str(sample.image), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        out = self.transform(image=image, mask=mask)
        return torch.from_numpy(out["image"]), torch.from_numpy(out["mask"])[None]


def run_baseline(model, samples, config, device, steps, warmup, workers, side) -> float:
    dataset = AlbumentationsTiles(samples, config.crop_size, side)
    sampler = torch.utils.data.RandomSampler(
        dataset,
        replacement=True,
        num_samples=(steps + warmup) * config.batch_size,
        generator=torch.Generator().manual_seed(0),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    step = TrainStep(model, config, device, total_steps=steps + warmup)
    model.train()
    started = None
    for i, (images, masks) in enumerate(loader):
        if i == warmup:
            sync(device)
            started = time.perf_counter()
        images = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        step(images, masks.to(device, non_blocking=True).float())
    sync(device)
    return steps * config.batch_size / (time.perf_counter() - started)


def time_prediction(model, image: np.ndarray, window: int, device, runs: int) -> dict:
    """Milliseconds to predict ``image``; ``model`` may be compiled (its first call compiles)."""
    # warm-up: the whole tile on a GPU (kernel choice, allocator); a window's worth on the CPU
    warm = image if device.type == "cuda" else image[:window, :window]
    predict_tile(model, warm, window, device=device)
    times = []
    for _ in range(runs):
        sync(device)
        started = time.perf_counter()
        predict_tile(model, image, window, device=device)  # returns on the host: synchronised
        times.append(time.perf_counter() - started)
    rows = window_grid(image.shape[0], window, 0.25)[0]
    cols = window_grid(image.shape[1], window, 0.25)[0]
    return {
        "tile": list(image.shape[:2]),
        "window": window,
        "windows": rows * cols,
        "tta": False,
        "runs": runs,
        "ms_mean": 1000 * float(np.mean(times)),
        "ms_min": 1000 * float(np.min(times)),
    }


# --------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def report(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"device: {result['device']} ({result['device_name']}), torch {result['torch']}, "
        f"{result['date']}",
        f"setting: FPN + {s['encoder']}, {s['crop']}² crops, batch {s['batch']}, "
        f"{s['tiles']} tiles of {s['tile']}² (PNG), {s['rounds']} rounds of {s['steps']} timed "
        f"steps (paths 1, 2), {s['baseline_steps']} (path 3), "
        f"{result['precision']}, channels_last {'on' if s['channels_last'] else 'off'}, "
        f"compile {'on' if s['compile'] else 'off'}",
        f"tile cache: {result['cache']['mib']:.0f} MiB in {result['cache']['where']}, "
        f"filled in {result['cache']['fill_seconds']:.1f} s; cutting and augmenting a batch "
        f"from it takes {result['cache']['data_ms_per_batch']:.1f} ms",
    ]
    if "syncs_per_step" in result["cache"]:
        syncs = result["cache"]["syncs_per_step"]
        lines.append(
            f"host-device synchronisations: {syncs['data']} per batch cut + augmented, "
            f"{syncs['data + step']} per batch + training step"
        )
    lines += [
        "",
        f"{'path':<52}{'images/s':>10}  rounds (median above)",
    ]
    for number, (name, row_rate) in enumerate(result["rows"].items(), start=1):
        rounds = " ".join(f"{r:.1f}" for r in result["rounds"].get(name, []))
        lines.append(f"{number} {name:<50}{row_rate:>10.1f}  {rounds}".rstrip())
    lines += [
        "",
        f"ratio 2/1: {result['ratios']['2/1']:.2f}",
        f"ratio 2/3: {result['ratios']['2/3']:.2f}",
    ]
    p = result["predict"]
    lines.append(
        f"sliding-window prediction of a {p['tile'][0]}×{p['tile'][1]} tile (window {p['window']}, "
        f"{p['windows']} windows, no TTA, {result['precision']}, "
        f"{'compiled' if p['compiled'] else 'eager'}): {p['ms_mean']:.1f} ms "
        f"(mean of {p['runs']} after a warm-up; best {p['ms_min']:.1f} ms)"
    )
    lines += ["", *target_lines(result["targets"], result["device"])]
    if result["device"] == "cpu":
        lines.append(
            f"{result['cpu_threads']} torch thread(s); load average at start/end: "
            f"{result['load'][0]:.2f}/{result['load'][1]:.2f} "
            "(CPU figures are noisy when other work runs)"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, folder: Path) -> dict:
    device = args.device
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]
    config = benchmark_config(args.encoder, args.crop, args.batch, args.steps, args.compile)
    compiled = device.type == "cuda" and config.compile  # as TrainStep: CUDA only
    samples = write_tiles(folder, args.tiles, args.tile)
    model = build_model(args.encoder)
    paths = run_paths(model, samples, config, device, args.rounds, args.warmup)
    ceiling, trainer = (statistics.median(rates) for rates in paths["rounds"].values())
    baseline = run_baseline(
        model, samples, config, device, args.baseline_steps, args.warmup, args.workers, args.tile
    )
    predictor = torch.compile(model) if compiled else model
    tile = read_image(samples[0].image)
    predict = time_prediction(predictor, tile, args.crop, device, args.runs)
    predict["compiled"] = compiled
    return {
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_threads": torch.get_num_threads(),
        "load": [load_start, os.getloadavg()[0]],
        "precision": paths["precision"],
        "settings": {
            "encoder": args.encoder,
            "crop": args.crop,
            "batch": args.batch,
            "tile": args.tile,
            "tiles": args.tiles,
            "steps": args.steps,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "baseline_steps": args.baseline_steps,
            "workers": args.workers,
            "channels_last": device.type == "cuda" and config.channels_last,
            "compile": compiled,
            "tiny": args.tiny,
        },
        "rows": {
            CEILING: ceiling,
            TRAINER: trainer,
            baseline_label(args.workers): baseline,
        },
        "rounds": paths["rounds"],
        "ratios": {"2/1": trainer / ceiling, "2/3": trainer / baseline},
        "cache": paths["cache"],
        "predict": predict,
        "targets": [
            target("ratio 2/1", trainer / ceiling, "≥", RATIO_TARGET),
            target(
                "{}×{} tile predicted, ms".format(*predict["tile"]),
                predict["ms_mean"],
                "≤",
                PREDICT_TARGET_MS,
            ),
        ],
    }


def run_and_report(args: argparse.Namespace, run, report, prefix: str) -> dict:
    """``run(args, folder)`` in ``args.precision``, with the tiles in ``args.data`` (or a
    temporary folder), then print ``report(result)`` and write the result to ``args.json`` if
    given (shared by the scripts of benchmarks/)."""
    with forced_precision(args.precision):
        if args.data is not None:
            args.data.mkdir(parents=True, exist_ok=True)
            result = run(args, args.data)
        else:
            with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
                result = run(args, Path(tmp))
    print(report(result), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result, indent=2, ensure_ascii=False)
        args.json.write_text(text + "\n", encoding="utf-8")
    return result


def main(argv=None) -> dict:
    return run_and_report(parse_args(argv), run, report, "cosas-bench-")


if __name__ == "__main__":
    main()
