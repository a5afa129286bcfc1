"""Figures of run records: scores per strategy and domain, training curves, score
distributions, threshold sweeps, calibration, the shift dial and the stain ablation."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from ..results import CV_COLUMN, image_means, mean_interval
from ..strategies import BASELINES, display_order, strategy_colour
from .data import domain_colours

BASELINE_COLOURS = {"all-tumour": "#B0B0B0", "all-background": "#E0E0E0"}


def colour(name: str) -> str:
    """The colour of a strategy (its own, :func:`~cosas_tutorial.strategies.strategy_colour`) or
    of a trivial baseline (greys, drawn hatched)."""
    return BASELINE_COLOURS.get(name) or strategy_colour(name)


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
        present = {s for g in groups.values() for s in g}
        strategies = sorted(present, key=display_order)
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
                color=colour(strategy),
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
    image's value averaged over the folds and seeds that scored it
    (:func:`~cosas_tutorial.results.image_means`)."""
    means = image_means(records, metric)
    means = means[means["task"] == task]
    means = means.assign(group=means["domain"].where(means["split"] != "cv", CV_COLUMN))
    per_image = means.groupby(["group", "strategy", "split", "domain", "id"], sort=False)["value"]
    values = per_image.mean().reset_index()
    order = [CV_COLUMN] + [g for g in dict.fromkeys(values["group"]) if g != CV_COLUMN]
    return {
        group: {s: list(part["value"]) for s, part in values[values["group"] == group].groupby(
            "strategy", sort=False)}
        for group in order
        if (values["group"] == group).any()
    }  # fmt: skip


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

    from ..train import cyclic_cosine

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
            line = colour(strategy)
            ax.plot(
                epochs,
                [h["loss"] for h in history],
                marker="o",
                markersize=3,
                color=line,
                label=None if strategy in labelled else strategy,
            )
            labelled.add(strategy)
            for i in range(1, len(history)):
                if history[i]["stage"] != history[i - 1]["stage"]:
                    ax.axvline(i + 0.5, color=line, linestyle=":", linewidth=1)
                    ax.annotate(
                        f"{history[i - 1]['stage']} | {history[i]['stage']}",
                        (i + 0.5, 1.0),
                        xycoords=("data", "axes fraction"),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color=line,
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


def plot_score_distributions(frame, metric: str = "score") -> Figure:
    """Per-image ``metric`` as boxes per group (in-domain CV, then each unseen domain) and
    strategy, trivial baselines (hatched) beside the models. ``frame``: the per-image rows of
    :func:`cosas_tutorial.results.image_table` for one task."""
    frame = frame.assign(group=np.where(frame["split"] == "cv", "in-domain (CV)", frame["domain"]))
    groups = ["in-domain (CV)"] + sorted(set(frame["group"]) - {"in-domain (CV)"})
    groups = [g for g in groups if (frame["group"] == g).any()]
    present = set(frame["strategy"])
    strategies = sorted(present, key=display_order)
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
            box.set_facecolor(colour(strategy))
            box.set_hatch("//" if strategy in BASELINES else "")
        ax.plot([], [], "s", color=colour(strategy), label=strategy)
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
    from ..analysis import all_tumour_score

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
    strategies = sorted(present, key=display_order)
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
                color=colour(strategy) if not baseline else "#777777",
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
            color=colour(strategy),
        )
    axes[2].axhline(0, color="#999999", linewidth=1)
    axes[2].set_title("gap: in-domain − unseen", fontsize=10)
    axes[2].set_xlabel("shift")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def plot_ablation(records: Sequence[dict], metric: str = "score"):
    """Heat map per task: rows = strategy · stain · TTA (baselines last), columns = in-domain
    cross-validation, each unseen domain and all unseen images; cells = mean ``metric``."""
    from ..ablation import ablation_table, mean_table

    means = mean_table(records, metric)
    label = (
        means["strategy"]
        + np.where(means["stain"] == "–", "", " · " + means["stain"])
        + np.where(means["TTA"] == "–", "", " · TTA " + means["TTA"])
    )
    means = means.assign(row=label)
    panels = []
    for task in dict.fromkeys(means["task"]):
        part = means[means["task"] == task]
        columns = list(ablation_table([r for r in records if r["task"] == task]).columns[4:])
        grid = part.pivot(index="row", columns="domain", values="mean")
        panels.append((task, grid.reindex(index=list(dict.fromkeys(part["row"])), columns=columns)))
    heights = [len(grid) for _, grid in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(1.3 * max(g.shape[1] for _, g in panels) + 3.5, 0.32 * sum(heights) + 1.2),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (task, grid) in zip(axes[:, 0], panels):
        values = grid.to_numpy(dtype=float)
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                colour = "black" if value > 0.6 else "white"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
        if grid.columns[0] == CV_COLUMN:
            ax.axvline(0.5, color="white", linewidth=3)
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=20, ha="right", fontsize=8)
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
        ax.set_title(f"{task}: mean COSAS {metric}, in-domain (CV) and unseen domains", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def plot_effects(effects: dict[str, pd.DataFrame]):
    """Mean paired difference ± 2 standard errors of each change (frames of
    :func:`~cosas_tutorial.ablation.ablation_effects`), one panel per name (e.g. per data
    tree), one bar per task."""
    fig, axes = plt.subplots(
        1, len(effects), figsize=(4.6 * len(effects), 3.2), squeeze=False, sharex=True
    )
    for ax, (name, frame) in zip(axes[0], effects.items()):
        changes = list(dict.fromkeys(frame["change"]))
        tasks = list(dict.fromkeys(frame["task"]))
        height = 0.8 / max(1, len(tasks))
        for i, task in enumerate(tasks):
            part = frame[frame["task"] == task].set_index("change").reindex(changes)
            ys = np.arange(len(changes)) + (i - (len(tasks) - 1) / 2) * height
            ax.barh(ys, part["mean Δ"], height, xerr=2 * part["s.e."], capsize=2, label=task)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(changes)), changes, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("Δ COSAS score on unseen images (± 2 s.e.)", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
