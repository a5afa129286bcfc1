"""Figures of data: tile galleries, colour and stain statistics per domain, embeddings, the
shift grid and error overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ..data.cosas import discover, read_image, read_mask
from ..data.layout import TASKS

_DISPLAY_PX = 512  # tiles are shown downsampled to at most this many pixels a side


def thumbnail(array: np.ndarray) -> np.ndarray:
    """A copy at most ``_DISPLAY_PX`` a side (nearest neighbour, so masks stay binary)."""
    image = Image.fromarray(array)
    image.thumbnail((_DISPLAY_PX, _DISPLAY_PX), Image.Resampling.NEAREST)
    return np.asarray(image)


def outline(ax, mask: np.ndarray, colour: str = "#00e000") -> None:
    """Draw the tumour boundary of a binary mask."""
    if mask.any() and not mask.all():
        ax.contour(mask, levels=[0.5], colors=colour, linewidths=1.2)


def domain_colours(domains: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per domain, in the order given (matplotlib's tab10, then tab20)."""
    palette = plt.get_cmap("tab10" if len(domains) <= 10 else "tab20").colors
    return {domain: palette[i % len(palette)] for i, domain in enumerate(domains)}


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


def plot_domain_rows(tiles: Sequence, n_per_domain: int = 3) -> Figure:
    """One row per domain, ``n_per_domain`` tiles each, tumour mask outlined (``tiles``: the
    :class:`cosas_tutorial.analysis.Tile` list of :func:`cosas_tutorial.analysis.read_tiles`)."""
    rows: dict[str, list] = {}
    for tile in tiles:
        key = tile.sample.domain + (" (test)" if tile.sample.split == "test" else "")
        if len(rows.setdefault(key, [])) < n_per_domain:
            rows[key].append(tile)
    if not rows:
        raise ValueError("no tiles to show")
    fig, axes = plt.subplots(
        len(rows), n_per_domain, figsize=(2.3 * n_per_domain + 0.8, 2.2 * len(rows)), squeeze=False
    )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for row_axes, (name, chosen) in zip(axes, rows.items()):
        for ax, tile in zip(row_axes, chosen):
            ax.imshow(thumbnail(tile.image))
            outline(ax, thumbnail(tile.mask))
        row_axes[0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return fig


def plot_images(images: dict[str, np.ndarray], ncols: int | None = None) -> Figure:
    """A row (or grid) of images with their titles."""
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.4 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image) in zip(axes.ravel(), images.items()):
        ax.imshow(thumbnail(image))
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_channel_histograms(
    images_by_domain: dict[str, Sequence[np.ndarray]], space: str = "rgb", bins: int = 64
) -> Figure:
    """Pixel distributions per domain over tissue pixels: one panel per channel (R, G, B, or the
    haematoxylin, eosin and DAB densities of colour deconvolution), one line per domain."""
    from ..stain import hed_densities, tissue_mask

    if space not in ("rgb", "hed"):
        raise ValueError(f"space must be 'rgb' or 'hed', got {space!r}")
    pixels = {}
    for domain, images in images_by_domain.items():
        chunks = []
        for image in images:
            values = image.astype(np.float32) if space == "rgb" else hed_densities(image)
            chunks.append(values[tissue_mask(image)])
        pixels[domain] = np.concatenate(chunks) if chunks else np.zeros((0, 3), np.float32)
    names = (
        ("red", "green", "blue")
        if space == "rgb"
        else ("haematoxylin", "eosin", "DAB (residual on H&E)")
    )
    colours = domain_colours(list(images_by_domain))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.1))
    for channel, (ax, name) in enumerate(zip(axes, names)):
        if space == "rgb":
            low, high = 0.0, 255.0
        else:
            every = np.concatenate([p[:, channel] for p in pixels.values() if len(p)])
            low, high = np.percentile(every, [0.5, 99.5]) if len(every) else (0.0, 1.0)
        for domain, values in pixels.items():
            if len(values):
                ax.hist(
                    values[:, channel],
                    bins=bins,
                    range=(low, high),
                    density=True,
                    histtype="step",
                    linewidth=1.4,
                    color=colours[domain],
                    label=domain,
                )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("intensity (0–255)" if space == "rgb" else "stain density (OD)")
        ax.set_yticks([])
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def _chromaticity(vectors: np.ndarray) -> np.ndarray:
    """OD unit vectors (n×3) → (share of red, share of blue) of their absorbance."""
    vectors = np.atleast_2d(vectors)
    total = vectors.sum(axis=1, keepdims=True)
    return np.stack([vectors[:, 0], vectors[:, 2]], axis=1) / total


def plot_stain_vectors(vectors, references: dict[str, np.ndarray] | None = None) -> Figure:
    """Estimated haematoxylin (o) and eosin (^) optical-density directions of every tile, as
    the share of red and blue light they absorb, coloured by domain (``vectors``: a frame of
    :func:`cosas_tutorial.analysis.domain_stain_vectors`). ``references`` (name → 2×3 or 3×3
    matrix, rows H, E …) are drawn as black crosses."""
    domains = list(dict.fromkeys(vectors["domain"]))
    colours = domain_colours(domains)
    fig, ax = plt.subplots(figsize=(6.2, 4.6))
    for domain in domains:
        part = vectors[vectors["domain"] == domain]
        for stain, marker in (("H", "o"), ("E", "^")):
            xy = _chromaticity(part[[f"{stain}_R", f"{stain}_G", f"{stain}_B"]].to_numpy())
            ax.scatter(
                xy[:, 0],
                xy[:, 1],
                s=18,
                marker=marker,
                alpha=0.7,
                color=colours[domain],
                label=domain if stain == "H" else None,
            )
    for name, matrix in (references or {}).items():
        xy = _chromaticity(np.asarray(matrix)[:2])
        ax.scatter(xy[:, 0], xy[:, 1], marker="x", s=60, color="black")
        for (x, y), stain in zip(xy, "HE"):
            ax.annotate(
                f"{name} {stain}", (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points"
            )
    ax.set_xlabel("share of red absorbed")
    ax.set_ylabel("share of blue absorbed")
    ax.set_title("stain vectors per tile (o haematoxylin, ^ eosin)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_embeddings(panels: dict[str, tuple[np.ndarray, Sequence[str]]]) -> Figure:
    """One scatter per panel title: 2-D coordinates of tiles coloured by their domain label."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, (coords, labels)) in zip(axes[0], panels.items()):
        labels = np.asarray(labels)
        colours = domain_colours(list(dict.fromkeys(labels)))
        for label, colour in colours.items():
            chosen = labels == label
            ax.scatter(
                coords[chosen, 0], coords[chosen, 1], s=16, alpha=0.8, color=colour, label=label
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_shift_grid(
    task: str,
    domains: Sequence[str],
    shifts: Sequence[float],
    index: int = 0,
    size: int = 256,
    seed: int = 0,
) -> Figure:
    """The same synthetic tile (same ``index``) of each domain (rows) at each ``shift``
    (columns), tumour outlined. In task 2 only the scanner changes with the shift, in task 1
    the tissue itself."""
    from ..data.synthetic import synthesize

    fig, axes = plt.subplots(
        len(domains),
        len(shifts),
        figsize=(1.9 * len(shifts) + 0.6, 1.9 * len(domains)),
        squeeze=False,
    )
    for row, domain in zip(axes, domains):
        for ax, shift in zip(row, shifts):
            image, mask = synthesize(task, domain, index, size=size, shift=shift, seed=seed)
            ax.imshow(image)
            outline(ax, mask > 0)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(domain, fontsize=8)
    for ax, shift in zip(axes[0], shifts):
        ax.set_title(f"shift {shift:g}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_error_cases(cases: Sequence[dict]) -> Figure:
    """One row per case (dict with ``image``, ``mask``, ``probability``, ``threshold`` and
    ``title``): the tile with the true tumour outlined, the probability map, and the errors
    (true positives, false positives, false negatives) tinted."""
    from matplotlib.patches import Patch

    from ..analysis import ERROR_COLOURS, error_overlay

    fig, axes = plt.subplots(
        len(cases), 3, figsize=(8.4, 2.7 * len(cases) + 0.5), squeeze=False, layout="constrained"
    )
    for row, case in zip(axes, cases):
        prediction = case["probability"] > case["threshold"]
        row[0].imshow(case["image"])
        outline(row[0], case["mask"] > 0)
        row[0].set_title(case["title"], fontsize=8)
        shown = row[1].imshow(case["probability"], vmin=0, vmax=1, cmap="magma")
        row[1].set_title("tumour probability", fontsize=8)
        row[2].imshow(error_overlay(case["image"], prediction, case["mask"]))
        row[2].set_title(f"errors at threshold {case['threshold']:g}", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    # under their columns (constrained layout keeps the three columns the same size)
    fig.colorbar(shown, ax=axes[-1, 1], location="bottom", shrink=0.9, aspect=20)
    legend = [Patch(color=np.array(c) / 255, label=k.upper()) for k, c in ERROR_COLOURS.items()]
    axes[-1, 2].legend(
        handles=legend, fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.03)
    )
    return fig
