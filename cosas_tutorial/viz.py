"""Figures for the book: data galleries (more to come)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from cosas_tutorial.data.layout import IMAGE_SUFFIXES, TASKS, pair_dirs, split_dir

_DISPLAY_PX = 512  # tiles are shown downsampled to at most this many pixels a side


def _domains(root: Path, split: str, task: str) -> list[str]:
    base = root / split_dir(split) / task
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def _pairs(root: Path, split: str, task: str, domain: str, n: int) -> list[tuple[Path, Path]]:
    image_dir, mask_dir = pair_dirs(root, split, task, domain)
    pairs = []
    for image in sorted(image_dir.iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        masks = [mask_dir / (image.stem + suffix) for suffix in IMAGE_SUFFIXES]
        mask = next((m for m in masks if m.is_file()), None)
        if mask is not None:
            pairs.append((image, mask))
        if len(pairs) == n:
            break
    return pairs


def _load(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert(mode)
        image.thumbnail((_DISPLAY_PX, _DISPLAY_PX), Image.Resampling.NEAREST)
        return np.asarray(image)


def plot_domain_gallery(root: Path | str, task: str | None = None, n_per_domain: int = 1) -> Figure:
    """One row per task: ``n_per_domain`` tiles of every domain, tumour mask outlined.

    Training domains come first, held-out (COSAS24-TestSet) domains after them, marked "test".
    Works on any COSAS-layout tree (synthetic, open-tissue or the real data).
    """
    root = Path(root)
    tasks = TASKS if task is None else (task,)
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    if n_per_domain < 1:
        raise ValueError(f"n_per_domain must be >= 1, got {n_per_domain}")
    rows = []
    for t in tasks:
        panels = [
            (split, domain, pair)
            for split in ("train", "test")
            for domain in _domains(root, split, t)
            for pair in _pairs(root, split, t, domain, n_per_domain)
        ]
        if panels:
            rows.append((t, panels))
    if not rows:
        raise FileNotFoundError(f"no image/mask pairs in the COSAS layout under {root}")

    ncols = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(2.2 * ncols, 2.45 * len(rows)), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for (t, panels), row_axes in zip(rows, axes):
        for ax, (split, domain, (image_path, mask_path)) in zip(row_axes, panels):
            image = _load(image_path, "RGB")
            mask = _load(mask_path, "L") > 127
            ax.imshow(image)
            if mask.any() and not mask.all():
                ax.contour(mask, levels=[0.5], colors="#00e000", linewidths=1.2)
            title = f"{t} · {domain}" + (" (test)" if split == "test" else "")
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
