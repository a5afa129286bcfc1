"""The fit loop: Adam, BCE-with-logits, cyclic cosine schedule, mixed precision, checkpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.profiler import record_function
from tqdm.auto import tqdm

from .augment import augment_colours
from .config import RunConfig
from .data.tiles import FileTiles, sample_batch
from .env import autocast_dtype

BATCH_LABEL, STEP_LABEL = "cosas.batch", "cosas.step"
LOSS_EVERY = 10  # the progress bar shows the loss of every 10th step (reading it waits for the GPU)


def cyclic_cosine(total_steps: int, cycles: int = 1):
    """LR factor per step: ``cycles`` cosine half-waves, each annealed from 1 to 0."""
    cycle_length = max(1, math.ceil(total_steps / cycles))

    def factor(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * (step % cycle_length) / cycle_length))

    return factor


def epoch_generator(seed: int, stage: str, epoch: int) -> torch.Generator:
    """The random stream (a CPU generator) of one epoch: a function of (seed, stage, epoch)
    alone, so a resumed run draws exactly the batches an uninterrupted one would."""
    stage_code = sum(ord(c) * 31**i for i, c in enumerate(stage)) % 100_003
    return torch.Generator().manual_seed(seed * 1_000_003 + stage_code * 1_009 + epoch)


def cut_batch(tiles: FileTiles, config: RunConfig, g: torch.Generator, device: torch.device):
    """One training batch: crops cut from ``tiles`` and, with ``config.augment``, flipped,
    rotated and jittered in colour and stain."""
    # labelled for torch.profiler (benchmarks/profile_step.py); ≈ 8 µs otherwise
    with record_function(BATCH_LABEL):
        images, masks = sample_batch(
            tiles, config.batch_size, config.crop_size, g, device, flips=config.augment
        )
        if config.augment:
            images = augment_colours(images, g, config.stain_aug)
    return images, masks


class TrainStep:
    """One optimisation step (Adam, BCE with logits, cyclic cosine schedule, mixed precision).

    Shared by :func:`fit` and ``benchmarks/train_throughput.py``, so that the benchmark's
    model-only ceiling steps exactly the code the trainer steps. On CUDA: bf16 autocast, or
    fp16 with a gradient scaler where bf16 is missing (e.g. a T4); channels_last; optionally
    ``torch.compile``. On the CPU: fp32, no compilation. A step returns the loss as a tensor
    and never waits for the GPU: with fp16 the fused Adam skips an overflowed step on the device
    (``tests/test_train.py -k never_waits`` checks both precisions on a GPU).
    """

    def __init__(
        self,
        model: nn.Module,
        config: RunConfig,
        device: torch.device,
        total_steps: int,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        self.model, self.device = model, torch.device(device)
        cuda = self.device.type == "cuda"
        model.to(self.device)
        self.channels_last = cuda and config.channels_last
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        # fused: the whole update in a few kernels instead of several per parameter tensor (on
        # the CPU one step of mit_b0's Adam took 10 ms instead of 31); with fp16 it also reads
        # the gradient scaler's overflow flag where it lies, so skipping a step costs no sync
        fused = self.device.type in ("cpu", "cuda") or None
        self.optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser, cyclic_cosine(total_steps, config.lr_cycles)
        )
        self.last_lr = self.scheduler.get_last_lr()[0]
        self.amp_dtype = autocast_dtype(self.device) if config.amp else None
        fp16 = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        # the strategy's loss (cosas_tutorial.strategies.Strategy.loss); BCE on the logits
        self.loss_fn = loss or nn.BCEWithLogitsLoss()
        self.forward = torch.compile(model) if config.compile and cuda else model

    @property
    def precision(self) -> str:
        return str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "fp32"

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """One step on a batch; returns its loss (on the device)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        enabled = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=enabled):
            loss = self.loss_fn(self.forward(images).float(), masks)
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimiser)
        self.scaler.update()
        self.last_lr = self.scheduler.get_last_lr()[0]  # the rate this step used (a host float)
        self.scheduler.step()
        return loss.detach()

    def state_dict(self) -> dict:
        return {
            "optimiser": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimiser.load_state_dict(state["optimiser"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def fit(
    model: nn.Module,
    tiles: FileTiles,
    config: RunConfig,
    device: torch.device,
    checkpoint: Path | None = None,
    stage: str = "train",
    resume: bool = False,
    progress: bool = True,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[dict]:
    """Train ``model`` on ``tiles`` for ``config.epochs`` epochs of ``config.steps_per_epoch``
    steps, minimising ``loss`` (logits, masks → scalar; BCE unless given); return per-epoch
    history.

    With ``checkpoint`` set, the state is saved after each epoch; with ``resume`` an existing
    checkpoint is loaded and training continues after its last finished epoch.

    Batches are cut and augmented on ``device`` with random numbers from a CPU generator per
    epoch (the same stream on CPU and GPU). Losses stay on the device until the epoch ends; the
    progress bar reads one every ``LOSS_EVERY`` steps. So the host queues work ahead of the GPU
    and never waits for it inside an epoch. A batch is cut in turn, before its step: its few
    dozen operators (:func:`~cosas_tutorial.data.tiles.sample_batch`) are a small fraction of
    the thousands a step issues.
    """
    device = torch.device(device)
    step = TrainStep(model, config, device, config.steps_per_stage, loss)

    history: list[dict] = []
    start_epoch = 0
    if resume and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        step.load_state_dict(state)
        history, start_epoch = state["history"], state["epoch"]

    model.train()
    for epoch in range(start_epoch, config.epochs):
        g = epoch_generator(config.seed, stage, epoch)
        torch.manual_seed(config.seed * 7919 + epoch)  # stochastic depth inside the encoder
        losses, started = [], time.perf_counter()
        bar = tqdm(
            range(config.steps_per_epoch),
            disable=not progress,
            leave=False,
            desc=f"{stage} epoch {epoch + 1}/{config.epochs}",
        )
        for i in bar:
            images, masks = cut_batch(tiles, config, g, device)
            with record_function(STEP_LABEL):
                losses.append(step(images, masks))
            if progress and (i % LOSS_EVERY == 0 or i == config.steps_per_epoch - 1):
                bar.set_postfix(loss=f"{losses[-1].item():.3f}")
        mean_loss = torch.stack(losses).double().mean().item()  # waits for the epoch's steps
        history.append(
            {
                "stage": stage,
                "epoch": epoch + 1,
                "loss": mean_loss,
                "lr_end": step.last_lr,  # of the epoch's last step
                "seconds": time.perf_counter() - started,
                "amp": step.precision,
            }
        )
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    **step.state_dict(),
                    "history": history,
                    "epoch": epoch + 1,
                },
                tmp,
            )
            tmp.replace(checkpoint)  # a crash mid-save never leaves a half-written checkpoint
    return history
