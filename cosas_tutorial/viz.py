"""Figures for the book and the CLI: data galleries and score plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from .data.cosas import discover, read_image, read_mask
from .data.layout import TASKS
from .results import BASELINES

_DISPLAY_PX = 512  # tiles are shown downsampled to at most this many pixels a side
STRATEGY_COLOURS = {
    "standard": "#4C72B0",
    "union": "#DD8452",
    "cross-task": "#55A868",
    "all-tumour": "#B0B0B0",
    "all-background": "#E0E0E0",
}


def thumbnail(array: np.ndarray) -> np.ndarray:
    """A copy at most ``_DISPLAY_PX`` a side (nearest neighbour, so masks stay binary)."""
    image = Image.fromarray(array)
    image.thumbnail((_DISPLAY_PX, _DISPLAY_PX), Image.Resampling.NEAREST)
    return np.asarray(image)


def outline(ax, mask: np.ndarray, colour: str = "#00e000") -> None:
    """Draw the tumour boundary of a binary mask."""
    if mask.any() and not mask.all():
        ax.contour(mask, levels=[0.5], colors=colour, linewidths=1.2)


def plot_domain_gallery(root: Path | str, task: str | None = None, n_per_domain: int = 1) -> Figure:
    """One row per task: ``n_per_domain`` tiles of every domain, tumour mask outlined.

    Training domains come first, held-out (COSAS24-TestSet) domains after them, marked "test".
    Works on any COSAS-layout tree (synthetic, open-tissue or the real data).
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    if n_per_domain < 1:
        raise ValueError(f"n_per_domain must be >= 1, got {n_per_domain}")
    samples = discover(root, tasks=None if task is None else (task,))
    rows = []
    for t in TASKS:
        panels, taken = [], {}
        for sample in samples:  # discover's order: train before test, domains sorted
            key = (sample.split, sample.domain)
            if sample.task == t and taken.get(key, 0) < n_per_domain:
                taken[key] = taken.get(key, 0) + 1
                panels.append(sample)
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
        for ax, sample in zip(row_axes, panels):
            ax.imshow(thumbnail(read_image(sample.image)))
            outline(ax, thumbnail(read_mask(sample.mask)))
            title = f"{t} · {sample.domain}" + (" (test)" if sample.split == "test" else "")
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_strategy_scores(records: Sequence[dict], metric: str = "score") -> Figure:
    """Bars of mean ± std per domain for each strategy, trivial baselines beside them.

    One panel per task; the first group is in-domain cross-validation, then each held-out domain.
    """
    tasks = sorted({record["task"] for record in records})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        groups = _score_groups(records, task, metric)
        strategies = [s for s in STRATEGY_COLOURS if any(s in g for g in groups.values())]
        width = 0.8 / max(1, len(strategies))
        for i, strategy in enumerate(strategies):
            xs, means, stds = [], [], []
            for x, values in enumerate(groups.values()):
                if strategy in values:
                    xs.append(x + (i - (len(strategies) - 1) / 2) * width)
                    means.append(np.mean(values[strategy]))
                    stds.append(np.std(values[strategy]))
            ax.bar(
                xs,
                means,
                width,
                yerr=stds,
                capsize=2,
                label=strategy,
                color=STRATEGY_COLOURS[strategy],
                hatch="//" if strategy in BASELINES else None,
                edgecolor="white",
            )
        ax.set_xticks(range(len(groups)), list(groups), rotation=20, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"COSAS {metric}" if metric == "score" else metric)
        ax.set_title(task)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def _score_groups(records, task, metric) -> dict[str, dict[str, list[float]]]:
    """{"in-domain (CV)" | held-out domain: {strategy: per-image values}} of one task."""
    groups: dict[str, dict[str, list[float]]] = {"in-domain (CV)": {}}
    for record in records:
        if record["task"] != task:
            continue
        for row in record["images"]:
            group = "in-domain (CV)" if record["split"] == "cv" else row["domain"]
            groups.setdefault(group, {}).setdefault(record["strategy"], []).append(row[metric])
    return {k: v for k, v in groups.items() if v}
