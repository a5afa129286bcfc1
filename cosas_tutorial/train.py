"""The fit loop: Adam, BCE-with-logits, cyclic cosine schedule, mixed precision, checkpoints."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .augment import augment_batch
from .config import RunConfig
from .data.tiles import FileTiles, sample_batch
from .env import autocast_dtype


def cyclic_cosine(total_steps: int, cycles: int = 1):
    """LR factor per step: ``cycles`` cosine half-waves, each annealed from 1 to 0."""
    cycle_length = max(1, math.ceil(total_steps / cycles))

    def factor(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * (step % cycle_length) / cycle_length))

    return factor


def epoch_generator(seed: int, stage: str, epoch: int, device: torch.device) -> torch.Generator:
    """The random stream of one epoch: a function of (seed, stage, epoch) alone, so a resumed
    run draws exactly the batches an uninterrupted one would."""
    stage_code = sum(ord(c) * 31**i for i, c in enumerate(stage)) % 100_003
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + stage_code * 1_009 + epoch)
    return g


def fit(
    model: nn.Module,
    tiles: FileTiles,
    config: RunConfig,
    device: torch.device,
    checkpoint: Path | None = None,
    stage: str = "train",
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` on ``tiles`` for ``config.epochs`` epochs; return per-epoch history.

    With ``checkpoint`` set, the state is saved after each epoch; with ``resume`` an existing
    checkpoint is loaded and training continues after its last finished epoch.
    """
    model.to(device)
    if device.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, cyclic_cosine(total_steps, config.lr_cycles)
    )
    amp_dtype = autocast_dtype(device) if config.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    loss_fn = nn.BCEWithLogitsLoss()
    step_fn = torch.compile(model) if config.compile and device.type == "cuda" else model

    history: list[dict] = []
    start_epoch = 0
    if resume and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, start_epoch = state["history"], state["epoch"]

    model.train()
    for epoch in range(start_epoch, config.epochs):
        g = epoch_generator(config.seed, stage, epoch, device)
        torch.manual_seed(config.seed * 7919 + epoch)  # stochastic depth inside the encoder
        losses, started = [], time.perf_counter()
        bar = tqdm(
            range(config.steps_per_epoch),
            disable=not progress,
            leave=False,
            desc=f"{stage} epoch {epoch + 1}/{config.epochs}",
        )
        for _ in bar:
            images, masks = sample_batch(tiles, config.batch_size, config.crop_size, g, device)
            if config.augment:
                images, masks = augment_batch(images, masks, g, config.stain_aug)
            if device.type == "cuda" and config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(step_fn(images).float(), masks)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        history.append(
            {
                "stage": stage,
                "epoch": epoch + 1,
                "loss": sum(losses) / len(losses),
                "lr_end": scheduler.get_last_lr()[0],
                "seconds": time.perf_counter() - started,
                "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32",
            }
        )
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": history,
                    "epoch": epoch + 1,
                },
                tmp,
            )
            tmp.replace(checkpoint)  # a crash mid-save never leaves a half-written checkpoint
    return history
