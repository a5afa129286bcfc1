"""Figures for the book and the CLI: data galleries and score plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure
from PIL import Image

from .data.cosas import discover, read_image, read_mask
from .data.layout import TASKS
from .results import BASELINES, image_means, mean_interval

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
    """Bars of the mean per domain for each strategy, trivial baselines beside them; whiskers:
    the 95 % bootstrap interval of the mean over images (:func:`~.results.mean_interval`),
    each image averaged over the folds that scored it.

    One panel per task; the first group is in-domain cross-validation, then each held-out domain.
    The strategies are scored on the same images, so overlapping intervals do not make two of
    them equal: :func:`~.results.paired_summary` compares them image by image.
    """
    tasks = sorted({record["task"] for record in records})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        groups = _score_groups(records, task, metric)
        strategies = [s for s in STRATEGY_COLOURS if any(s in g for g in groups.values())]
        width = 0.8 / max(1, len(strategies))
        for i, strategy in enumerate(strategies):
            xs, means, below, above = [], [], [], []
            for x, values in enumerate(groups.values()):
                if strategy in values:
                    mean, low, high = mean_interval(values[strategy])
                    xs.append(x + (i - (len(strategies) - 1) / 2) * width)
                    means.append(mean)
                    below.append(mean - low)
                    above.append(high - mean)
            ax.bar(
                xs,
                means,
                width,
                yerr=[below, above],
                capsize=2,
                label=strategy,
                color=STRATEGY_COLOURS[strategy],
                hatch="//" if strategy in BASELINES else None,
                edgecolor="white",
            )
        ax.set_xticks(range(len(groups)), list(groups), rotation=20, ha="right")
        ax.set_ylim(0, 1.05)
        name = f"COSAS {metric}" if metric == "score" else metric
        ax.set_ylabel(f"{name} (mean, 95 % CI)")
        ax.set_title(task)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def _score_groups(records, task, metric) -> dict[str, dict[str, list[float]]]:
    """{"in-domain (CV)" | held-out domain: {strategy: per-image values}} of one task, each
    image's value averaged over the folds that scored it (:func:`~.results.image_means`)."""
    groups: dict[str, dict[str, list[float]]] = {"in-domain (CV)": {}}
    for (t, strategy, split, domain, _), value in image_means(records, metric).items():
        if t == task:
            group = "in-domain (CV)" if split == "cv" else domain
            groups.setdefault(group, {}).setdefault(strategy, []).append(value)
    return {k: v for k, v in groups.items() if v}


def plot_training_curves(records: Sequence[dict], lr: bool = True) -> Figure:
    """Training loss per epoch of every trained run: one panel per task, one line per strategy
    and fold, coloured as in :func:`plot_strategy_scores`.

    The stages of a run are drawn end to end (cross-task: pretraining, then fine-tuning) with a
    dotted line where a stage ends. With ``lr``, the learning rate of every step is drawn on a
    second axis (grey) for the run with the most epochs, from its configuration: the cyclic
    cosine schedule, which each stage starts afresh and anneals towards 0. Baselines and
    held-out evaluations have no history and are left out.
    """
    from matplotlib.ticker import MaxNLocator

    from .train import cyclic_cosine

    trained = [r for r in records if r.get("history")]
    if not trained:
        raise ValueError(
            "no training history in these records (baseline and held-out records have none)"
        )
    tasks = sorted({r["task"] for r in trained})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.6 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        labelled = set()
        task_records = [r for r in trained if r["task"] == task]
        longest = max(task_records, key=lambda r: len(r["history"]))
        for record in task_records:
            history, strategy = record["history"], record["strategy"]
            epochs = np.arange(1, len(history) + 1)
            colour = STRATEGY_COLOURS.get(strategy, "#333333")
            ax.plot(
                epochs,
                [h["loss"] for h in history],
                marker="o",
                markersize=3,
                color=colour,
                label=None if strategy in labelled else strategy,
            )
            labelled.add(strategy)
            for i in range(1, len(history)):
                if history[i]["stage"] != history[i - 1]["stage"]:
                    ax.axvline(i + 0.5, color=colour, linestyle=":", linewidth=1)
                    ax.annotate(
                        f"{history[i - 1]['stage']} | {history[i]['stage']}",
                        (i + 0.5, 1.0),
                        xycoords=("data", "axes fraction"),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color=colour,
                    )
            config = record.get("config") or {}
            if lr and record is longest and {"lr", "epochs", "steps_per_epoch"} <= config.keys():
                xs, ys = _lr_steps(history, config, cyclic_cosine)
                twin = ax.twinx()
                twin.plot(xs, ys, color="#999999", linewidth=1)
                twin.set_ylabel("learning rate", color="#999999", fontsize=8)
                twin.tick_params(axis="y", colors="#999999", labelsize=7)
                twin.set_ylim(0, config["lr"] * 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (stages end to end)")
        ax.set_ylabel("training loss (BCE)")
        ax.set_title(task, pad=14)
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def _lr_steps(history: Sequence[dict], config: dict, cyclic_cosine) -> tuple[list, list]:
    """The learning rate of every step of a run, against epochs (epoch k spans k ± 0.5)."""
    steps, epochs = config["steps_per_epoch"], config["epochs"]
    factor = cyclic_cosine(epochs * steps, config.get("lr_cycles", 1))
    xs, ys, offset = [], [], 0
    stages = [h["stage"] for h in history]
    for i, stage in enumerate(stages):
        if i and stage == stages[i - 1]:
            continue
        for step in range(epochs * steps):
            xs.append(offset + 0.5 + step / steps)
            ys.append(config["lr"] * factor(step))
        offset += epochs
    return xs, ys


# --- figures of the analysis chapters (domain shift, model anatomy, errors, shift dial) ----------


def domain_colours(domains: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per domain, in the order given (matplotlib's tab10, then tab20)."""
    palette = plt.get_cmap("tab10" if len(domains) <= 10 else "tab20").colors
    return {domain: palette[i % len(palette)] for i, domain in enumerate(domains)}


def plot_channel_histograms(
    images_by_domain: dict[str, Sequence[np.ndarray]], space: str = "rgb", bins: int = 64
) -> Figure:
    """Pixel distributions per domain over tissue pixels: one panel per channel (R, G, B, or the
    haematoxylin, eosin and DAB densities of colour deconvolution), one line per domain."""
    from .stain import hed_densities, tissue_mask

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
    from .data.synthetic import synthesize

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


def plot_error_cases(cases: Sequence[dict]) -> Figure:
    """One row per case (dict with ``image``, ``mask``, ``probability``, ``threshold`` and
    ``title``): the tile with the true tumour outlined, the probability map, and the errors
    (true positives, false positives, false negatives) tinted."""
    from matplotlib.patches import Patch

    from .analysis import ERROR_COLOURS, error_overlay

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


def plot_score_distributions(frame, metric: str = "score") -> Figure:
    """Per-image ``metric`` as boxes per group (in-domain CV, then each unseen domain) and
    strategy, trivial baselines (hatched) beside the models. ``frame``: the per-image rows of
    :func:`cosas_tutorial.analysis.image_frame` for one task."""
    frame = frame.assign(group=np.where(frame["split"] == "cv", "in-domain (CV)", frame["domain"]))
    groups = ["in-domain (CV)"] + sorted(set(frame["group"]) - {"in-domain (CV)"})
    groups = [g for g in groups if (frame["group"] == g).any()]
    present = set(frame["strategy"])
    strategies = [s for s in STRATEGY_COLOURS if s in present]
    strategies += sorted(present - set(strategies))
    width = 0.8 / max(1, len(strategies))
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(groups) * max(1, len(strategies)) / 2), 3.8))
    for i, strategy in enumerate(strategies):
        data, positions = [], []
        for x, group in enumerate(groups):
            values = frame[(frame["group"] == group) & (frame["strategy"] == strategy)][metric]
            if len(values):
                data.append(values.to_numpy())
                positions.append(x + (i - (len(strategies) - 1) / 2) * width)
        if not data:
            continue
        boxes = ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.9,
            patch_artist=True,
            showmeans=True,
            manage_ticks=False,
            meanprops=dict(
                marker="D", markerfacecolor="black", markersize=3, markeredgecolor="black"
            ),
            flierprops=dict(markersize=2),
            medianprops=dict(color="black"),
        )
        for box in boxes["boxes"]:
            box.set_facecolor(STRATEGY_COLOURS.get(strategy, "#999999"))
            box.set_hatch("//" if strategy in BASELINES else "")
        ax.plot([], [], "s", color=STRATEGY_COLOURS.get(strategy, "#999999"), label=strategy)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(f"per-image COSAS {metric}" if metric == "score" else metric)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_score_vs_fraction(frame, metric: str = "score") -> Figure:
    """Per-image ``metric`` against the tile's tumour fraction, coloured by domain, with the
    exact curves of the two trivial predictors: "all tumour" scores (2f/(1+f) + f)/2 on a tile
    with tumour fraction f, "all background" 1 on tumour-free tiles and 0 elsewhere."""
    from .analysis import all_tumour_score

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    f = np.linspace(0, 1, 201)
    ax.plot(f[1:], all_tumour_score(f[1:]), color="#777777", linestyle="--", label="all-tumour")
    ax.plot([0, 1], [0, 0], color="#BBBBBB", linestyle=":", label="all-background (f > 0)")
    ax.scatter([0], [1], color="#BBBBBB", marker="s", label="all-background (f = 0)")
    colours = domain_colours(list(dict.fromkeys(frame["domain"])))
    for domain, colour in colours.items():
        part = frame[frame["domain"] == domain]
        ax.scatter(
            part["tumour_fraction"], part[metric], s=22, alpha=0.8, color=colour, label=domain
        )
    ax.set_xlabel("tumour fraction of the tile")
    ax.set_ylabel(f"COSAS {metric}" if metric == "score" else metric)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_threshold_sweeps(
    sweeps: dict, marks: dict[str, float] | None = None, floors: dict[str, float] | None = None
) -> Figure:
    """Mean COSAS score against the probability threshold, one line per image set (name →
    frame of :func:`cosas_tutorial.analysis.threshold_sweep`); ``marks`` (label → threshold)
    become vertical lines; ``floors`` (image set → the better trivial predictor's mean score on
    it, which no threshold changes) become dotted horizontal lines in the set's colour."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colours = domain_colours(list(sweeps))
    for name, sweep in sweeps.items():
        ax.plot(sweep["threshold"], sweep["score"], marker=".", color=colours[name], label=name)
    for name, floor in (floors or {}).items():
        ax.axhline(floor, color=colours.get(name, "#777777"), linestyle=":", linewidth=1.2)
    if floors:
        ax.plot([], [], color="#777777", linestyle=":", label="best trivial predictor")
    for (label, threshold), style in zip((marks or {}).items(), ("-", "--", ":", "-.")):
        ax.axvline(threshold, color="black", linestyle=style, linewidth=1, label=label)
    ax.set_xlabel("probability threshold")
    ax.set_ylabel("mean COSAS score")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_reliability(tables: dict) -> Figure:
    """Reliability diagram: observed tumour share against mean predicted probability per bin,
    one line per image set (name → frame of :func:`cosas_tutorial.analysis.reliability`), the
    diagonal being perfect calibration; below, the share of pixels in each bin (log scale)."""
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.8, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    top.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="calibrated")
    colours = domain_colours(list(tables))
    for name, table in tables.items():
        used = table[table["count"] > 0]
        top.plot(
            used["confidence"],
            used["frequency"],
            marker="o",
            markersize=3,
            color=colours[name],
            label=name,
        )
        centres = (table["lower"] + table["upper"]) / 2
        bottom.plot(
            centres, table["share"].where(table["share"] > 0), marker=".", color=colours[name]
        )
    top.set_ylabel("observed tumour share")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    bottom.set_yscale("log")
    # ticks at 1 and 3 per decade, written as plain numbers (matplotlib's default labels the
    # minor ticks of a short log axis with powers of ten, which crowd this small panel)
    bottom.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 3.0)))
    bottom.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    bottom.yaxis.set_minor_formatter(ticker.NullFormatter())
    bottom.set_xlabel("predicted tumour probability")
    bottom.set_ylabel("share of pixels")
    fig.tight_layout()
    return fig


def plot_shift_dial(summary, metric: str = "score") -> Figure:
    """In-domain (CV) and unseen-domain mean ``metric`` against the synthetic ``shift``, one line
    per strategy, trivial baselines dashed; the third panel is the gap (in-domain − unseen).
    ``summary``: columns shift, strategy, split ("cv"/"test"), mean (and std)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    titles = {"cv": "in-domain (CV)", "test": "unseen domains"}
    present = set(summary["strategy"])
    strategies = [s for s in STRATEGY_COLOURS if s in present] + sorted(
        present - set(STRATEGY_COLOURS)
    )
    for ax, split in zip(axes[:2], ("cv", "test")):
        for strategy in strategies:
            part = summary[(summary["split"] == split) & (summary["strategy"] == strategy)]
            part = part.sort_values("shift")
            baseline = strategy in BASELINES
            ax.plot(
                part["shift"],
                part["mean"],
                marker="o",
                label=strategy,
                color=STRATEGY_COLOURS.get(strategy, "#999999") if not baseline else "#777777",
                linestyle=("--" if strategy == "all-tumour" else ":") if baseline else "-",
            )
        ax.set_title(titles[split], fontsize=10)
        ax.set_xlabel("shift")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(f"mean COSAS {metric}" if metric == "score" else metric)
    for strategy in strategies:
        if strategy in BASELINES:
            continue
        cv = summary[(summary["split"] == "cv") & (summary["strategy"] == strategy)]
        test = summary[(summary["split"] == "test") & (summary["strategy"] == strategy)]
        gap = cv.set_index("shift")["mean"] - test.set_index("shift")["mean"]
        gap = gap.dropna().sort_index()
        axes[2].plot(
            gap.index,
            gap.values,
            marker="o",
            label=strategy,
            color=STRATEGY_COLOURS.get(strategy, "#999999"),
        )
    axes[2].axhline(0, color="#999999", linewidth=1)
    axes[2].set_title("gap: in-domain − unseen", fontsize=10)
    axes[2].set_xlabel("shift")
    axes[1].legend(fontsize=8, loc="lower left")
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
