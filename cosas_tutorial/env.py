"""Where code runs: device choice, seeding, Colab detection, environment report."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` if given ("cpu", "cuda", "cuda:1", "mps"), else CUDA when available, else CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def in_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, fp16 on older GPUs (e.g. T4), None (fp32) on CPU."""
    if device.type != "cuda":
        return None
    # Native bf16 needs compute capability 8.0 (Ampere); torch's default check also answers
    # yes for a T4, where bf16 is only emulated and slower than fp16.
    native = torch.cuda.get_device_capability(device)[0] >= 8
    return torch.bfloat16 if native else torch.float16


def is_on(tensor: torch.Tensor, device) -> bool:
    """Whether ``tensor`` is on ``device``, where a plain "cuda" means the current GPU."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return tensor.device == device


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """Send a small host tensor to ``device`` without making the host wait for the GPU.

    On CUDA the tensor is first copied into pinned memory (torch's caching host allocator keeps
    that block alive until the copy is done), so the copy is truly asynchronous.
    """
    device = torch.device(device)
    if is_on(t, device):
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class OperatorCount(TorchDispatchMode):
    """Counts the aten operators dispatched while it is entered: the work the host issues, one
    by one, to the device (a private torch API, the standard hook for this; no public one counts
    operators without timing them)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def git_commit(repo: Path | None = None) -> str | None:
    """The commit of the checkout this package runs from, if it is one."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def describe() -> dict:
    """Versions and hardware, printed at the top of every notebook and stored with results."""
    import segmentation_models_pytorch as smp
    import timm

    from . import __version__

    info = {
        "cosas_tutorial": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "smp": smp.__version__,
        "timm": timm.__version__,
        "device": str(pick_device()),
        "cpu_threads": torch.get_num_threads(),
        "colab": in_colab(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
