"""What every notebook does in its second code cell: resolve the `parameters` cell.

The parameters cell holds literals only (PROFILE, DATA, SEED, WEIGHTS, OUT …); :func:`setup`
turns them into a configuration, a ready data tree, an output folder and a device, and prints
the environment so that every result in the book names the machine it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RunConfig, get_profile
from .env import describe, in_colab, pick_device, seed_everything

DATA_HOME_ENV = "COSAS_DATA_HOME"  # where generated and downloaded data trees are kept
DRIVE = Path("/content/drive")  # where Colab mounts Google Drive


def data_home() -> Path:
    return Path(os.environ.get(DATA_HOME_ENV, Path.home() / ".cache" / "cosas-tutorial"))


@dataclass(frozen=True)
class Setup:
    config: RunConfig
    data: Path
    out: Path
    device: torch.device


def resolve_profile(profile: str) -> str:
    """``"auto"`` means ``gpu`` when CUDA is available and ``cpu`` otherwise."""
    if profile == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return profile


def resolve_data(data: str, config: RunConfig, shift: float = 0.5) -> Path:
    """``"synthetic"`` (generated, cached), ``"open-tissue"`` (downloaded, checksummed, cached)
    or the path of a COSAS-layout tree (e.g. the real data on Google Drive)."""
    if data == "synthetic":
        from .data.synthetic import GENERATOR_VERSION, generate

        # the generator's version in the name: a cache made by an older generator is not reused
        size = f"{config.synthetic_tiles}x{config.synthetic_size}"
        name = f"synthetic-v{GENERATOR_VERSION}-{size}-shift{shift:g}"
        return generate(
            data_home() / name,
            tiles=config.synthetic_tiles,
            size=config.synthetic_size,
            shift=shift,
            seed=0,
        )
    if data == "open-tissue":
        from .data.open_tissue import prepare

        return prepare(data_home() / "open-tissue")
    path = Path(data).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"DATA={data!r}: no such folder (use 'synthetic', 'open-tissue' "
            "or the path of a COSAS-layout tree)"
        )
    return path


def mount_drive(*paths: str | Path) -> None:
    """In Colab, mount Google Drive when a path lies on it: unmounted, ``/content/drive/…``
    is a plain local folder, and runs written there are lost with the runtime."""
    on_drive = any(DRIVE in Path(p).expanduser().parents for p in paths)
    if on_drive and in_colab() and not (DRIVE / "MyDrive").is_dir():
        from google.colab import drive

        drive.mount(str(DRIVE))


def setup(
    profile: str = "auto",
    data: str = "synthetic",
    seed: int = 0,
    out: str = "runs",
    shift: float = 0.5,
    device: str | None = None,
    verbose: bool = True,
    weights: str | None = None,
    **overrides,
) -> Setup:
    """Resolve a notebook's parameters; print the environment and the choices made.

    ``weights`` is the WEIGHTS parameter of the chapters that train (see
    :func:`cosas_tutorial.model.resolve_weights`): ``"auto"`` goes on with random
    initialisation, and says so, when the model hub cannot be reached. It is settled first, so
    that ``"imagenet"`` fails before data are made. ``None`` (chapters that train nothing)
    leaves the profile's setting unchecked, so that no weights are downloaded for them.
    """
    from .model import resolve_weights  # here: smp takes seconds to import, data_home none

    config = get_profile(resolve_profile(profile), seed=seed, **overrides)
    if weights is not None:
        config = resolve_weights(config, weights)
    mount_drive(data, out)
    seed_everything(seed)
    resolved = Setup(config, resolve_data(data, config, shift), Path(out), pick_device(device))
    resolved.out.mkdir(parents=True, exist_ok=True)
    if verbose:
        for key, value in describe().items():
            print(f"{key:>15}: {value}")
        print(
            f"{'profile':>15}: {config.profile} ({config.encoder}, crop {config.crop_size}, "
            f"{config.epochs} epochs × {config.steps_per_epoch} steps)"
        )
        print(f"{'weights':>15}: {config.encoder_weights or 'random initialisation'}")
        print(f"{'data':>15}: {resolved.data}")
        print(f"{'out':>15}: {resolved.out}")
    return resolved


def save_figure(fig, out: Path, name: str) -> Path:
    """Save a figure as ``out/name.png`` (the notebook tests look for these files)."""
    path = Path(out) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
