"""Stain handling × test-time augmentation × strategy, scored on unseen domains.

The top COSAS 2024 entries leaned on stain handling and test-time augmentation (TTA); the seed
paper used neither. :func:`run_ablation` measures them on any COSAS-layout tree:

- strategies: ``standard`` and ``cross-task`` (cross-task needs both tasks in the tree);
- stain handling: ``none``, ``hed`` (H&E stain jitter in training), ``macenko`` (every tile,
  in training and at test time, normalised to one training reference tile), ``hsv`` on request;
- TTA off / on (flips and 90° rotations, mean of probabilities): the same trained model is
  scored twice, so TTA costs no training.

Unseen domains come from one of two protocols, per task:

- ``held-out``: the tree's ``COSAS24-TestSet`` domains (synthetic tier, real COSAS);
- ``loso`` (leave one source out): for each training domain, train on the others and test on
  it. The open-tissue tier has no held-out split, so this is what it gets (``auto``).

Outputs in ``out``: ``runs/<unit>-<strategy>-<stain>/`` (ordinary run folders), ``trees/``
(symlinked sub-trees for leave-one-source-out), ``ablation.jsonl`` (one record per
model × TTA × unseen split, as :mod:`cosas_tutorial.results` records plus ``stain``, ``tta``,
``protocol`` and ``unit``) and ``ablation.md`` (the table of :func:`ablation_table`).
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import RunConfig
from .data.cosas import DataError, discover
from .data.layout import TASKS, Sample, pair_dirs
from .experiment import (
    _record,
    baseline_records,
    check_same_run,
    load_run,
    run_identity,
    score_samples,
    task_samples,
    train_run,
    trained_folds,
)
from .results import BASELINES, append_records, fmt, read_records
from .strategies import get_strategy, other_task

# What each stain-handling label sets in the run configuration.
STAIN_SETTINGS = {
    "none": {"stain_aug": "none", "stain_norm": "none"},
    "hed": {"stain_aug": "hed", "stain_norm": "none"},
    "hsv": {"stain_aug": "hsv", "stain_norm": "none"},
    "macenko": {"stain_aug": "none", "stain_norm": "macenko"},
}
DEFAULT_STRATEGIES = ("standard", "cross-task")
DEFAULT_STAINS = ("none", "hed", "macenko")
PROTOCOLS = ("auto", "held-out", "loso")
ABLATION_FILE, TABLE_FILE = "ablation.jsonl", "ablation.md"
RUN_RECORDS = "ablation.jsonl"  # inside each run folder: that run's unseen-domain records


def evenly_spaced(items: Sequence, limit: int | None) -> list:
    """``limit`` items spread evenly over ``items`` (all of them when ``limit`` is None)."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def link_tree(out: Path, placed: Sequence[tuple[Sample, str]], limit: int | None = None) -> Path:
    """A COSAS-layout tree at ``out`` of symbolic links (copies where links fail).

    ``placed`` lists (sample, split) pairs: each sample appears under ``split`` ("train" or
    "test"), with its own task and domain. ``limit`` keeps that many tiles per split × task ×
    domain, evenly spaced over the sorted ids. ``out`` is rebuilt from scratch.
    """
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for sample, split in placed:
        groups.setdefault((split, sample.task, sample.domain), []).append(sample)
    for (split, task, domain), samples in groups.items():
        image_dir, mask_dir = pair_dirs(out, split, task, domain)
        image_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for sample in evenly_spaced(sorted(samples, key=lambda s: s.id), limit):
            for source, folder in ((sample.image, image_dir), (sample.mask, mask_dir)):
                target = folder / Path(source).name
                try:
                    os.symlink(Path(source).resolve(), target)
                except OSError:
                    shutil.copy2(source, target)
    return out


def _units(data: Path, task: str, protocol: str, out: Path, limit: int | None, held_out=None):
    """(unit name, data tree, protocol) for every train/test arrangement of ``task``."""
    samples = discover(data)
    train = [s for s in samples if s.task == task and s.split == "train"]
    test = [s for s in samples if s.task == task and s.split == "test"]
    if protocol == "auto":
        protocol = "held-out" if test else "loso"
    if protocol == "held-out":
        if not test:
            raise DataError(f"{data}: no held-out (COSAS24-TestSet) domains for {task}")
        if limit is None:
            return [(task, data, protocol)]
        other = [s for s in samples if s.task == other_task(task) and s.split == "train"]
        placed = [(s, s.split) for s in train + test + other]
        return [(task, link_tree(out / "trees" / task, placed, limit), protocol)]
    domains = sorted({s.domain for s in train})
    if len(domains) < 2:
        raise DataError(f"{data}: leave-one-source-out needs 2+ {task} domains, got {domains}")
    if held_out is not None:
        unknown = sorted(set(held_out) - set(domains))
        if unknown:
            raise DataError(f"{data}: cannot hold out {unknown}; {task} has {domains}")
        domains = [d for d in domains if d in set(held_out)]
    units = []
    for held in domains:
        unit = f"{task}-loso-{held}"
        placed = [(s, "test" if s.domain == held else "train") for s in train]
        units.append((unit, link_tree(out / "trees" / unit, placed, limit), "loso"))
    return units


def evaluate_unseen(run_dir: Path, data: Path, device: torch.device | None = None) -> list[dict]:
    """Score every fold of a run on its task's unseen (test) tiles with TTA off, then on.

    What :func:`cosas_tutorial.experiment.evaluate_run` does for one TTA setting, with the model
    built and loaded once for both (and the fold's saved stain normaliser applied).
    """
    run_dir = Path(run_dir)
    manifest, config = load_run(run_dir)
    test = task_samples(discover(data), manifest["task"], "test")
    records = []
    for fold, model, normaliser in trained_folds(run_dir, config, device or torch.device("cpu")):
        for tta in (False, True):
            run_config = config.replace(tta=tta)
            rows = score_samples(model, test, run_config, normaliser, device)
            record = _record(run_config, manifest["task"], manifest["strategy"], fold, "test",
                             rows, data)  # fmt: skip
            records.append(record)
    return records


def _annotate(records: list[dict], stain: str, protocol: str, unit: str) -> list[dict]:
    """Add the ablation's labels to run records (TTA as the record's configuration says)."""
    for record in records:
        record.update(stain=stain, tta=record["config"]["tta"], protocol=protocol, unit=unit)
    return records


def run_ablation(
    data: Path,
    config: RunConfig,
    out: Path,
    tasks: Sequence[str] | None = None,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    stains: Sequence[str] = DEFAULT_STAINS,
    protocol: str = "auto",
    limit: int | None = None,
    device: torch.device | None = None,
    resume: bool = False,
    progress: bool = True,
    held_out: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[dict]:
    """Train every strategy × stain handling, score each model with TTA off and on.

    Returns the records (the unseen-domain scores, the in-domain cross-validation scores of
    each run, and both of the trivial predictors) and writes ``out/ablation.jsonl`` and
    ``out/ablation.md``. With ``resume`` a run folder whose records exist is reused as it is.
    ``limit`` keeps that many tiles per domain (evenly spaced), for quick runs; ``held_out``
    holds out only these domains in turn (leave-one-source-out; all by default); ``seeds``
    trains every cell once per seed (default: ``config.seed`` alone), so that the paired
    effects average over training noise too. Cross-task rows need both tasks in a data tree;
    where a tree has one task only (leave-one-source-out trees, the open-tissue tier) they are
    skipped with a message.
    """
    data, out = Path(data), Path(out)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    unknown = sorted(set(stains) - set(STAIN_SETTINGS))
    if unknown:
        raise ValueError(f"unknown stain handling {unknown}; choose from {list(STAIN_SETTINGS)}")
    for name in strategies:
        get_strategy(name)
    if limit is not None and limit < config.folds:
        raise ValueError(
            f"limit {limit} keeps fewer tiles per domain than the {config.folds} "
            "cross-validation folds need"
        )
    present = {s.task for s in discover(data) if s.split == "train"}
    tasks = [t for t in (tasks or TASKS) if t in present]
    if not tasks:
        raise DataError(f"{data}: no training images for {list(tasks or TASKS)}")
    table_file = out / ABLATION_FILE
    if table_file.exists() and not resume:
        raise FileExistsError(f"{table_file} exists; use --resume or another --out")
    out.mkdir(parents=True, exist_ok=True)
    seeded = [(seed, f"-seed{seed}") for seed in seeds] if seeds else [(config.seed, "")]

    records: list[dict] = []
    for task in tasks:
        for unit, tree, unit_protocol in _units(data, task, protocol, out, limit, held_out):
            tree_tasks = {s.task for s in discover(tree) if s.split == "train"}
            for strategy in strategies:
                if get_strategy(strategy).uses_other_task and other_task(task) not in tree_tasks:
                    print(f"skipping {strategy} on {unit}: the tree holds no {other_task(task)}")
                    continue
                for stain, (seed, suffix) in itertools.product(stains, seeded):
                    run_dir = out / "runs" / f"{unit}-{strategy}-{stain}{suffix}"
                    saved = run_dir / RUN_RECORDS
                    run_config = config.replace(seed=seed, tta=False, **STAIN_SETTINGS[stain])
                    if resume and saved.exists():
                        check_same_run(run_dir, run_identity(task, strategy, run_config, tree))
                        records += read_records(saved)
                        continue
                    if run_dir.exists():
                        shutil.rmtree(run_dir)  # an unfinished run of an earlier attempt
                    if progress:
                        print(f"{unit}: {strategy}, stain {stain}, seed {seed}")
                    cv = train_run(
                        tree, task, strategy, run_config, run_dir, device, False, progress
                    )
                    evaluated = cv + evaluate_unseen(run_dir, tree, device)
                    run_records = _annotate(evaluated, stain, unit_protocol, unit)
                    append_records(saved, run_records)
                    records += run_records
            records += _annotate(baseline_records(tree, task, config), "–", unit_protocol, unit)
    table_file.unlink(missing_ok=True)
    append_records(table_file, records)
    (out / TABLE_FILE).write_text(ablation_markdown(records))
    return records


CV_COLUMN, ALL_COLUMN = "in-domain (CV)", "unseen (all)"


def _row_key(record: dict) -> tuple[str, str, str, str]:
    baseline = record["strategy"] in BASELINES
    tta = "–" if baseline else ("on" if record["tta"] else "off")
    return record["task"], record["strategy"], record["stain"], tta


def _cells(records: Sequence[dict], metric: str) -> dict[tuple, dict[str, list[float]]]:
    """{row key: {column: per-image values}}. Unseen images go to their domain's column and to
    "unseen (all)"; the validation images of the cross-validation folds (scored without TTA)
    to "in-domain (CV)". Folds, seeds and leave-one-source-out units are pooled."""
    cells: dict[tuple, dict[str, list[float]]] = {}
    for record in records:
        row = cells.setdefault(_row_key(record), {})
        for image in record["images"]:
            columns = [CV_COLUMN] if record["split"] == "cv" else [image["domain"], ALL_COLUMN]
            for column in columns:
                row.setdefault(column, []).append(image[metric])
    return cells


def _columns(cells) -> list[str]:
    present = {column for row in cells.values() for column in row}
    domains = sorted(present - {CV_COLUMN, ALL_COLUMN})
    return [CV_COLUMN] * (CV_COLUMN in present) + domains + [ALL_COLUMN]


def _sorted_keys(cells) -> list[tuple]:
    order = {name: i for i, name in enumerate(("standard", "union", "cross-task", *BASELINES))}
    stain_order = {name: i for i, name in enumerate((*STAIN_SETTINGS, "–"))}

    def sort_key(key):
        task, strategy, stain, tta = key
        return task, order.get(strategy, 99), stain_order.get(stain, 99), tta != "off"

    return sorted(cells, key=sort_key)


def ablation_table(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """Rows: task × strategy × stain handling × TTA, then the trivial baselines; columns:
    in-domain cross-validation (without TTA), each unseen domain and all unseen images; cells:
    mean ± std over images of ``metric``.

    The in-domain column tells a run that did not learn at all (a score at the trivial
    predictors' level) from one that learnt but does not generalise. Folds, seeds and
    leave-one-source-out units are pooled: each image counts once per fold and seed.
    """
    cells = _cells(records, metric)
    columns = _columns(cells)
    rows = []
    for key in _sorted_keys(cells):
        task, strategy, stain, tta = key
        row = {"task": task, "strategy": strategy, "stain": stain, "TTA": tta}
        for column in columns:
            values = np.array(cells[key].get(column, []), dtype=float)
            row[column] = fmt(values.mean(), values.std()) if len(values) else "–"
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "strategy", "stain", "TTA", *columns])


def mean_table(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """The cells of :func:`ablation_table` as numbers, long: task, strategy, stain, TTA,
    column (a domain, "in-domain (CV)" or "unseen (all)"), mean, std, n."""
    cells = _cells(records, metric)
    rows = []
    for key in _sorted_keys(cells):
        for column in _columns(cells):
            values = np.array(cells[key].get(column, []), dtype=float)
            if len(values):
                mean, std = float(values.mean()), float(values.std())
                rows.append((*key, column, mean, std, len(values)))
    names = ["task", "strategy", "stain", "TTA", "domain", "mean", "std", "n"]
    return pd.DataFrame(rows, columns=names)


def runs_not_learnt(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """Model rows whose in-domain (CV) mean is not above the better trivial predictor's on the
    same task: such a run failed to train, and its unseen-domain scores say nothing about the
    setting it was trained with. Columns: task, strategy, stain, cv_mean, trivial."""
    means = mean_table(records, metric)
    cv = means[means["domain"] == CV_COLUMN]
    rows = []
    for task, part in cv.groupby("task", sort=False):
        trivial = part.loc[part["strategy"].isin(BASELINES), "mean"].max()
        for row in part[~part["strategy"].isin(BASELINES)].itertuples():
            if row.mean <= trivial:
                rows.append((task, row.strategy, row.stain, round(row.mean, 3), round(trivial, 3)))
    return pd.DataFrame(rows, columns=["task", "strategy", "stain", "cv_mean", "trivial"])


def ablation_effects(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """Paired per-image differences: how much one change moves the unseen-domain score.

    Comparisons: TTA on − off (same model), each stain handling − none (same strategy and TTA),
    cross-task − standard (same stain handling and TTA). Pairs are matched on unit, fold,
    seed, domain and image id. Rows: task × comparison; columns: mean difference over pairs,
    standard error, share of pairs where the change helps, hurts, and the number of pairs.
    The standard error treats pairs as independent; with one training seed it does not
    measure training noise (two runs that differ in one setting also differ in their random
    draws), which only several ``seeds`` show.
    """
    scores: dict[tuple, float] = {}
    for record in records:
        if record["split"] != "test" or record["strategy"] in BASELINES:
            continue
        for image in record["images"]:
            key = (
                record["task"],
                record["strategy"],
                record["stain"],
                bool(record["tta"]),
                record.get("unit", record["task"]),
                record["fold"],
                record["seed"],
                image["domain"],
                image["id"],
            )
            scores[key] = image[metric]
    comparisons = [("TTA on − off", 3, True, False)]
    stains = sorted({k[2] for k in scores} - {"none"}, key=list(STAIN_SETTINGS).index)
    comparisons += [(f"{s} − none", 2, s, "none") for s in stains]
    if {"standard", "cross-task"} <= {k[1] for k in scores}:
        comparisons.append(("cross-task − standard", 1, "cross-task", "standard"))
    rows = []
    for task in sorted({k[0] for k in scores}):
        for name, position, new, old in comparisons:
            diffs = []
            for key, value in scores.items():
                if key[0] != task or key[position] != new:
                    continue
                base = key[:position] + (old,) + key[position + 1 :]
                if base in scores:
                    diffs.append(value - scores[base])
            if not diffs:
                continue
            d = np.array(diffs)
            rows.append(
                {
                    "task": task,
                    "change": name,
                    "mean Δ": round(float(d.mean()), 4),
                    "s.e.": round(float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0, 4),
                    "helps": round(float((d > 1e-9).mean()), 2),
                    "hurts": round(float((d < -1e-9).mean()), 2),
                    "pairs": len(d),
                }
            )
    return pd.DataFrame(
        rows, columns=["task", "change", "mean Δ", "s.e.", "helps", "hurts", "pairs"]
    )


def ablation_markdown(records: Sequence[dict]) -> str:
    """``ablation.md``: the score table, the paired effects and the runs that did not learn."""
    protocols = sorted({r.get("protocol", "held-out") for r in records})
    seeds = sorted({r["seed"] for r in records})
    failed = runs_not_learnt(records)
    return (
        "# Stain handling × TTA × strategy on unseen domains\n\n"
        "COSAS score (Dice + IoU) / 2 per image, mean ± std over images: in-domain "
        "cross-validation (without TTA), then the unseen domains "
        f"(protocol: {', '.join(protocols)}; seeds: {', '.join(map(str, seeds))}).\n\n"
        + ablation_table(records).to_markdown(index=False)
        + "\n\n## Paired per-image differences on unseen images\n\n"
        + ablation_effects(records).to_markdown(index=False)
        + "\n\n## Runs not above the trivial predictors in-domain\n\n"
        + (failed.to_markdown(index=False) if len(failed) else "none")
        + "\n"
    )


def plot_ablation(records: Sequence[dict], metric: str = "score"):
    """Heat map per task: rows = strategy · stain · TTA (baselines last), columns = in-domain
    cross-validation, each unseen domain and all unseen images; cells = mean ``metric``."""
    import matplotlib.pyplot as plt

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
    :func:`ablation_effects`), one panel per name (e.g. per data tree), one bar per task."""
    import matplotlib.pyplot as plt

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
