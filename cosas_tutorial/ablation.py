"""Stain handling × test-time augmentation × strategy, scored on unseen domains.

The top COSAS 2024 entries leaned on stain handling and test-time augmentation (TTA); the seed
paper used neither. :func:`run_ablation` measures them on any COSAS-layout tree:

- strategies: ``standard`` and ``cross-task`` (cross-task needs both tasks in the tree);
- stain handling: ``none``, ``hed`` (H&E stain jitter in training), ``macenko`` (every tile,
  in training and at test time, normalised to one training reference tile), ``hsv`` on request;
- TTA off / on (flips and 90° rotations, mean of probabilities): the same trained model is
  scored twice, so TTA costs no training.

Each stain handling is one :func:`~cosas_tutorial.experiment.run_experiment` (the same runs,
protocols, seeds and trivial baselines as everywhere else) in ``out/<stain>/``; unseen domains
come from its protocol: ``cv`` scores the tree's ``COSAS24-TestSet`` domains, ``lodo`` holds out
each training domain in turn (the open-tissue tier has no TestSet, so ``auto`` gives it lodo).
Outputs: ``ablation.jsonl`` (the records, labelled with ``stain`` and ``tta``) and
``ablation.md`` (:func:`ablation_markdown`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import STAIN_HANDLING, RunConfig
from .data.cosas import DataError, discover
from .data.layout import TASKS, Sample, pair_dirs
from .experiment import evaluate_run, run_experiment
from .results import (
    ALL_COLUMN,
    CV_COLUMN,
    append_records,
    cell_table,
    describe_runs,
    image_table,
    ordered,
    read_records,
    score_cells,
)
from .runs import RECORDS_FILE
from .strategies import BASELINES, get_strategy

DEFAULT_STRATEGIES = ("standard", "cross-task")
DEFAULT_STAINS = ("none", "hed", "macenko")
ABLATION_FILE, TABLE_FILE = "ablation.jsonl", "ablation.md"
TTA_FILE = "tta.jsonl"  # inside each run folder: its unseen-domain records with TTA on
ROWS = ["task", "strategy", "stain", "TTA"]


def evenly_spaced(items: Sequence, limit: int | None) -> list:
    """``limit`` items spread evenly over ``items`` (all of them when ``limit`` is None)."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def link_tree(out: Path, samples: Sequence[Sample], limit: int | None = None) -> Path:
    """A COSAS-layout tree at ``out`` of symbolic links (copies where links fail) to
    ``samples``, each under its own split, task and domain; ``limit`` keeps that many tiles per
    split × task × domain, evenly spaced over the sorted ids. ``out`` is rebuilt from scratch."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.split, sample.task, sample.domain), []).append(sample)
    for (split, task, domain), group in groups.items():
        image_dir, mask_dir = pair_dirs(out, split, task, domain)
        image_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for sample in evenly_spaced(sorted(group, key=lambda s: s.id), limit):
            for source, folder in ((sample.image, image_dir), (sample.mask, mask_dir)):
                target = folder / Path(source).name
                try:
                    os.symlink(Path(source).resolve(), target)
                except OSError:
                    shutil.copy2(source, target)
    return out


def _protocol(samples: Sequence[Sample], task: str, protocol: str) -> str:
    """``auto``: cv where the tree has held-out (TestSet) domains for ``task``, else lodo."""
    if protocol != "auto":
        return protocol
    return "cv" if any(s.task == task and s.split == "test" for s in samples) else "lodo"


def _with_tta(run_dir: Path, tree: Path, lodo: bool, resume: bool, device) -> list[dict]:
    """The run's unseen-domain records with TTA on (its own are without): the same models
    scored again, saved in the run folder so that a resumed ablation reads them back."""
    saved = run_dir / TTA_FILE
    if resume and saved.exists():
        return read_records(saved)
    saved.unlink(missing_ok=True)
    records = evaluate_run(run_dir, tree, tta=True, device=device, held_out_domains=lodo)
    append_records(saved, records)
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
    seeds: int = 1,
) -> list[dict]:
    """Train every strategy × stain handling, score each model with TTA off and on.

    Returns the records (the unseen-domain scores with TTA off and on, the in-domain scores of
    each run under cv, and both trivial predictors) and writes ``out/ablation.jsonl`` and
    ``out/ablation.md``. ``protocol``: ``cv``, ``lodo`` or ``auto`` (per task: cv with a
    TestSet, else lodo). ``limit`` keeps that many tiles per domain (evenly spaced), for quick
    runs; ``held_out`` holds out only these domains under lodo; ``seeds`` trains every cell
    that many times. With ``resume`` finished runs are read back.
    """
    data, out = Path(data), Path(out)
    unknown = sorted(set(stains) - set(STAIN_HANDLING))
    if unknown:
        raise ValueError(f"unknown stain handling {unknown}; choose from {list(STAIN_HANDLING)}")
    for name in strategies:
        get_strategy(name)
    if limit is not None and limit < config.folds:
        raise ValueError(
            f"limit {limit} keeps fewer tiles per domain than the {config.folds} "
            "cross-validation folds need"
        )
    table_file = out / ABLATION_FILE
    if table_file.exists() and not resume:
        raise FileExistsError(f"{table_file} exists; use --resume or another --out")
    samples = discover(data)
    tree = data if limit is None else link_tree(out / "tree", samples, limit)
    present = {s.task for s in samples if s.split == "train"}
    tasks = [t for t in (tasks or TASKS) if t in present]
    if not tasks:
        raise DataError(f"{data}: no training images for {list(tasks or TASKS)}")

    records: list[dict] = []
    for stain in stains:
        stain_config = config.replace(tta=False, **STAIN_HANDLING[stain])
        for task in tasks:
            task_protocol = _protocol(samples, task, protocol)
            folder = out / stain / task
            if progress:
                print(f"{task}, stain {stain}, protocol {task_protocol}")
            grid = run_experiment(
                tree, stain_config, folder, strategies, [task], device, resume, progress,
                task_protocol, seeds, held_out,
            )  # fmt: skip
            for record in grid:
                baseline = record["strategy"] in BASELINES
                record.update(stain="–" if baseline else stain, tta=False)
            records += grid
            for run_dir in sorted(p.parent for p in folder.glob(f"*/{RECORDS_FILE}")):
                tta = _with_tta(run_dir, tree, task_protocol == "lodo", resume, device)
                records += [{**r, "stain": stain, "tta": True} for r in tta]
    records = _one_set_of_baselines(records)
    table_file.unlink(missing_ok=True)
    append_records(table_file, records)
    (out / TABLE_FILE).write_text(ablation_markdown(records))
    return records


def _one_set_of_baselines(records: list[dict]) -> list[dict]:
    """The trivial predictors once per task, seed and image, not once per stain handling."""
    seen, kept = set(), []
    for record in records:
        if record["strategy"] in BASELINES:
            key = (record["task"], record["strategy"], record["seed"], record["fold"],
                   record["split"], record.get("held_out"))  # fmt: skip
            if key in seen:
                continue
            seen.add(key)
        kept.append(record)
    return kept


def _ablation_frame(records: Sequence[dict]) -> pd.DataFrame:
    """The records' image table with the ablation's row labels (TTA "–" for baselines)."""
    frame = image_table(records)
    baseline = frame["strategy"].isin(BASELINES)
    frame["TTA"] = np.where(baseline, "–", np.where(frame["tta"], "on", "off"))
    return frame


def ablation_table(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """Rows: task × strategy × stain handling × TTA, then the trivial baselines; columns:
    in-domain cross-validation (without TTA), each unseen domain and all unseen images; cells:
    mean ± std over images of ``metric``.

    The in-domain column tells a run that did not learn at all (a score at the trivial
    predictors' level) from one that learnt but does not generalise. Folds, seeds and
    held-out domains are pooled: each image counts once per fold and seed.
    """
    return cell_table(_ablation_frame(records), ROWS, metric)


def mean_table(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """The cells of :func:`ablation_table` as numbers, long: task, strategy, stain, TTA,
    domain (a domain, "in-domain (CV)" or "unseen (all)"), mean, std, n."""
    cells = score_cells(_ablation_frame(records), ROWS, metric)
    return ordered(cells.rename(columns={"column": "domain"}), "task", "strategy", "stain", "TTA")


def runs_not_learnt(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """Model rows whose mean is not above the better trivial predictor's on the same images:
    in-domain (CV) where the protocol gives in-domain scores (such a run failed to train, and
    its unseen-domain scores say nothing about its setting), else on all unseen images (lodo:
    the run does not beat predicting one class everywhere). Columns: task, strategy, stain,
    images (which column was compared), mean, trivial."""
    means = mean_table(records, metric)
    rows = []
    for task, part in means.groupby("task", sort=False):
        column = CV_COLUMN if (part["domain"] == CV_COLUMN).any() else ALL_COLUMN
        part = part[(part["domain"] == column) & (part["TTA"] != "on")]
        trivial = part.loc[part["strategy"].isin(BASELINES), "mean"].max()
        for row in part[~part["strategy"].isin(BASELINES)].itertuples():
            if row.mean <= trivial:
                rows.append(
                    (task, row.strategy, row.stain, column, round(row.mean, 3), round(trivial, 3))
                )
    return pd.DataFrame(rows, columns=["task", "strategy", "stain", "images", "mean", "trivial"])


# Images are paired on everything but the one label a comparison changes.
PAIR_KEY = ["task", "strategy", "stain", "tta", "held_out", "fold", "seed", "domain", "id"]


def ablation_effects(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """Paired per-image differences: how much one change moves the unseen-domain score.

    Comparisons: TTA on − off (same model), each stain handling − none (same strategy and TTA),
    cross-task − standard (same stain handling and TTA). Pairs are matched on held-out domain,
    fold, seed, domain and image id. Rows: task × comparison; columns: mean difference over
    pairs, standard error, share of pairs where the change helps, hurts, and the number of
    pairs. The standard error treats pairs as independent; with one training seed it does not
    measure training noise (two runs that differ in one setting also differ in their random
    draws), which only several ``seeds`` show.
    """
    frame = image_table(records)
    frame = frame[(frame["split"] == "test") & ~frame["strategy"].isin(BASELINES)]
    frame = frame.assign(held_out=frame["held_out"].fillna("–"))
    scores = frame.set_index(PAIR_KEY)[metric]
    comparisons = [("TTA on − off", "tta", True, False)]
    stains = sorted(set(frame["stain"]) - {"none"}, key=list(STAIN_HANDLING).index)
    comparisons += [(f"{s} − none", "stain", s, "none") for s in stains]
    if {"standard", "cross-task"} <= set(frame["strategy"]):
        comparisons.append(("cross-task − standard", "strategy", "cross-task", "standard"))
    rows = []
    for task in sorted(frame["task"].unique()):
        part = scores[scores.index.get_level_values("task") == task]
        for name, label, new, old in comparisons:
            present = set(part.index.get_level_values(label))
            if not {new, old} <= present:
                continue
            changed, reference = part.xs(new, level=label), part.xs(old, level=label)
            pairs = pd.concat([changed, reference], axis=1, join="inner")
            if pairs.empty:
                continue
            d = (pairs.iloc[:, 0] - pairs.iloc[:, 1]).to_numpy()
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
    failed = runs_not_learnt(records)
    return (
        "# Stain handling × TTA × strategy on unseen domains\n\n"
        "COSAS score (Dice + IoU) / 2 per image, mean ± std over images: in-domain "
        "cross-validation (without TTA), then the unseen domains "
        f"({describe_runs(records)}).\n\n"
        + ablation_table(records).to_markdown(index=False)
        + "\n\n## Paired per-image differences on unseen images\n\n"
        + ablation_effects(records).to_markdown(index=False)
        + "\n\n## Runs not above the trivial predictors\n\n"
        + (failed.to_markdown(index=False) if len(failed) else "none")
        + "\n"
    )
