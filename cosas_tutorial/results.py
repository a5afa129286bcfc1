"""Run records as JSON lines, and the score tables built from them.

One record per (task, strategy, fold, split) evaluation, DomainBed-style: the configuration, seed
and commit that produced it, the training history and per-image rows. :func:`image_table` turns
records into one tidy table; every score table here is a group-by on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .config import STAIN_HANDLING
from .data.layout import TASK_TITLES
from .strategies import BASELINES, display_order


def append_records(path: Path, records: Iterable[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record, default=_jsonable) + "\n")


def read_records(path: Path) -> list[dict]:
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON record ({err.msg})") from err
    return records


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a run record")


def fmt(mean: float, std: float, digits: int = 3) -> str:
    return "–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_interval(
    values: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` and a percentile-bootstrap confidence interval of it: (mean, low, high).

    How well the images measure the mean, unlike the std, which is how far images spread (and for
    scores bounded by [0, 1] often reaches past them). Seeded, so a figure redraws the same; one
    value has no interval and gives (value, value, value).
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = float(values.mean())
    if values.size == 1:
        return mean, mean, mean
    result = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        method="percentile",
        n_resamples=2000,
        rng=np.random.default_rng(seed),
    )
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


# The columns of :func:`image_table`: what identifies a score, then the score.
LABELS = ("task", "strategy", "protocol", "fold", "seed", "split", "held_out", "stain", "tta")
IMAGE_COLUMNS = (*LABELS, "domain", "id", "tumour_fraction", "dice", "iou", "score")
CV_COLUMN, ALL_COLUMN = "in-domain (CV)", "unseen (all)"


def _stain(record: dict) -> str:
    """How a record's model handled stain: the ablation's label, else its configuration's."""
    if "stain" in record:
        return record["stain"]
    config = record.get("config") or {}
    if record["strategy"] in BASELINES:
        return "–"
    if config.get("stain_norm", "none") != "none":
        return config["stain_norm"]
    return config.get("stain_aug", "none")


def image_table(records: Sequence[dict]) -> pd.DataFrame:
    """Every image of every record as one tidy table, one row per image and evaluation:
    the record's labels (task, strategy, protocol, fold, seed, split, held-out domain, stain
    handling, TTA), the image (domain, id, tumour fraction) and its dice, iou and score.

    Every table and figure of scores is a group-by on this table, so that they all pool, order
    and count images the same way.
    """
    rows = []
    for record in records:
        config = record.get("config") or {}
        labels = (
            record["task"],
            record["strategy"],
            record.get("protocol", "cv"),
            record["fold"],
            record.get("seed", config.get("seed", 0)),
            record["split"],
            record.get("held_out"),
            _stain(record),
            bool(record.get("tta", config.get("tta", False))),
        )
        for image in record["images"]:
            rows.append(
                (
                    *labels,
                    image["domain"],
                    image["id"],
                    image.get("tumour_fraction", np.nan),
                    image["dice"],
                    image["iou"],
                    image["score"],
                )
            )
    return pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))


# Display order of the labels that are not alphabetical: strategies as registered, then the
# baselines; stain handling as the configuration lists it; TTA off before on.
SORT_KEYS = {
    "strategy": display_order,
    "stain": lambda s: (list(STAIN_HANDLING) + ["–"]).index(s) if s in STAIN_HANDLING else 99,
    "TTA": {"off": 0, "on": 1, "–": 2}.get,
}


def ordered(frame: pd.DataFrame, *keys: str) -> pd.DataFrame:
    """``frame`` sorted by ``keys`` in display order (:data:`SORT_KEYS`, else as they sort)."""
    sort = {key: frame[key].map(SORT_KEYS[key]) if key in SORT_KEYS else frame[key] for key in keys}
    order = pd.DataFrame(sort).sort_values(list(keys), kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def score_columns(frame: pd.DataFrame) -> pd.Series:
    """The table column of each image row: "in-domain (CV)" for validation images, the
    domain's name for unseen ones."""
    return frame["domain"].where(frame["split"] != "cv", CV_COLUMN)


def score_cells(frame: pd.DataFrame, rows: Sequence[str], metric: str) -> pd.DataFrame:
    """Long table of mean, std and n of ``metric`` per ``rows`` × column: in-domain (CV),
    each unseen domain and all unseen images together ("unseen (all)")."""
    frame = frame.assign(column=score_columns(frame))
    unseen = frame[frame["split"] != "cv"].assign(column=ALL_COLUMN)
    cells = (
        pd.concat([frame, unseen])
        .groupby([*rows, "column"], sort=False)[metric]
        .agg(mean="mean", std=lambda v: v.std(ddof=0), n="size")
        .reset_index()
    )
    return cells


def cell_table(frame: pd.DataFrame, rows: Sequence[str], metric: str) -> pd.DataFrame:
    """Rows × columns (in-domain CV, each unseen domain, all unseen), cells "mean ± std"."""
    cells = score_cells(frame, rows, metric)
    present = set(cells["column"])
    columns = [CV_COLUMN] * (CV_COLUMN in present)
    columns += sorted(present - {CV_COLUMN, ALL_COLUMN}) + [ALL_COLUMN] * (ALL_COLUMN in present)
    cells["cell"] = [fmt(m, s) for m, s in zip(cells["mean"], cells["std"])]
    table = cells.pivot(index=list(rows), columns="column", values="cell").reset_index()
    table = ordered(table, *rows).reindex(columns=[*rows, *columns]).fillna("–")
    table.columns.name = None
    return table


def describe_runs(records: Sequence[dict]) -> str:
    """What made ``records``, for the titles of tables and figures: protocol, budget rule,
    seeds and profile."""

    def values(get) -> str:
        return ", ".join(sorted({str(get(r)) for r in records}))

    return (
        f"protocol {values(lambda r: r.get('protocol', 'cv'))} · "
        f"budget {values(lambda r: (r.get('config') or {}).get('budget', 'equal-steps'))} · "
        f"seeds {values(lambda r: r.get('seed', (r.get('config') or {}).get('seed', 0)))} · "
        f"profile {values(lambda r: r.get('profile', (r.get('config') or {}).get('profile')))}"
    )


def score_table(
    records: Sequence[dict], task: str | None = None, metric: str = "score"
) -> pd.DataFrame:
    """Rows: task × strategy (baselines included); columns: in-domain CV, then each unseen
    domain and all unseen images; cells: mean ± std over images of ``metric``.

    Folds and seeds are pooled: the per-image rows of every fold and seed are summarised
    together. With ``task``, only that task's records (and so only its domains as columns).
    """
    frame = image_table(records)
    if task is not None:
        frame = frame[frame["task"] == task]
    return cell_table(frame, ["task", "strategy"], metric)


# Published figures, for tables that put ours beside them (never computed here).
# Galdran 2024 (arXiv 2410.07124): per-image Dice in %, mean ± std over images (None: not given).
PAPER_DICE = {
    "task1": {"cv": (82.82, 23.26), "test": (76.07, None)},
    "task2": {"cv": (86.11, 17.76), "test": (81.75, None)},  # test: the preliminary test phase
}
# The COSAS 2024 winner (nnU-Net): challenge score, (Dice + IoU) / 2 per image, on the test set.
CHALLENGE_WINNER = {"task1": 0.802, "task2": 0.853}


def overall_scores(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """One row per task × strategy × split ("cv" or "test"): mean, std and n over images, and
    ``margin``, the mean minus the better of the two trivial baselines on the same images.

    The margin is what a number means: a model that scores 0.6 where "all tumour" scores 0.55
    has learnt little.
    """
    frame = (
        image_table(records)
        .groupby(["task", "strategy", "split"], sort=False)[metric]
        .agg(mean="mean", std=lambda v: v.std(ddof=0), n="size")
        .reset_index()
    )
    trivial = (
        frame[frame["strategy"].isin(BASELINES)].groupby(["task", "split"])["mean"].max()
    ).rename("best_trivial")
    frame = frame.join(trivial, on=["task", "split"])
    frame["margin"] = frame["mean"] - frame["best_trivial"]
    return ordered(frame, "task", "split", "strategy")


IMAGE_KEY = ["task", "strategy", "protocol", "split", "domain", "id"]


def image_means(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """``metric`` of each image (task, strategy, protocol, split, domain, id) and seed,
    averaged over the folds (or held-out domains) that scored it; column ``value``.

    A held-out image is scored once by every fold's model, a validation image by one fold only;
    averaging makes each image count once per seed, as intervals and paired comparisons need.
    """
    frame = image_table(records)
    means = frame.groupby([*IMAGE_KEY, "seed"], sort=False)[metric].mean()
    return means.rename("value").reset_index()


def paired_differences(
    records: Sequence[dict], strategy: str, reference: str, metric: str = "score"
) -> pd.DataFrame:
    """Per image and seed: ``strategy`` minus ``reference`` on the same image (task, protocol,
    split, domain, id), each trained with the same seed, each score averaged over the folds that
    scored the image (:func:`image_means`).

    Both strategies are scored on the same validation and held-out images (same folds, same
    seeds), so the difference of each image is a paired comparison, free of the spread between
    images that the means carry. :func:`paired_summary` takes the images, not the image × seed
    rows, as the units it resamples.
    """
    means = image_means(records, metric)
    key = [k for k in IMAGE_KEY if k != "strategy"] + ["seed"]
    pair = [
        means[means["strategy"] == name].drop(columns="strategy").set_index(key)["value"]
        for name in (reference, strategy)
    ]
    frame = pd.concat(pair, axis=1, keys=[reference, strategy], join="inner").reset_index()
    frame["difference"] = frame[strategy] - frame[reference]
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


def paired_summary(paired: pd.DataFrame) -> pd.DataFrame:
    """Per task × split of :func:`paired_differences`: the mean difference with its 95 %
    bootstrap interval (:func:`mean_interval`), and how many images got better, worse, in all,
    over how many seeds.

    The bootstrap resamples images: an image's difference is first averaged over the seeds
    (an image scored under three seeds is one image, not three). An interval that excludes 0
    says these images tell the two strategies apart, even where the intervals of the two means
    overlap (each image's difficulty cancels in its difference). Training noise enters only
    through the seeds averaged: with one seed, one training run of each strategy decides.
    """
    by_image = (
        paired.groupby(["task", "split", "domain", "id"], sort=False)
        .agg(difference=("difference", "mean"), seeds=("seed", "nunique"))
        .reset_index()
    )
    rows = []
    for (task, split), group in by_image.groupby(["task", "split"]):
        differences = group["difference"]
        mean, low, high = mean_interval(differences)
        rows.append(
            {
                "task": task,
                "split": split,
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "better": int((differences > 0).sum()),
                "worse": int((differences < 0).sum()),
                "images": len(differences),
                "seeds": int(group["seeds"].max()),
            }
        )
    columns = ["task", "split", "mean", "ci_low", "ci_high", "better", "worse", "images", "seeds"]
    return pd.DataFrame(rows, columns=columns).set_index(["task", "split"])


def paired_verdicts(
    records: Sequence[dict], strategy: str, reference: str, metric: str = "score"
) -> list[str]:
    """One sentence per task × split of :func:`paired_summary`: ``strategy`` minus
    ``reference``, the mean over images with its 95 % interval, how many images and seeds, and
    the verdict: "<strategy> better" or "<reference> better" where the interval excludes 0, else
    "no clear difference", e.g. ``task1 (cross-organ), unseen domains: cross-task − standard:
    +0.021 [-0.010, +0.050] over 72 images, 3 seeds: no clear difference``."""
    summary = paired_summary(paired_differences(records, strategy, reference, metric))
    lines = []
    for (task, split), row in summary.iterrows():
        if row["ci_low"] > 0:
            verdict = f"{strategy} better"
        elif row["ci_high"] < 0:
            verdict = f"{reference} better"
        else:
            verdict = "no clear difference"
        where = "in-domain (CV)" if split == "cv" else "unseen domains"
        images, seeds = int(row["images"]), int(row["seeds"])  # iterrows gives floats
        interval = f"{row['mean']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
        lines.append(
            f"{task} ({TASK_TITLES.get(task, task)}), {where}: {strategy} − {reference}: "
            f"{interval} over {images} images, {seeds} seed{'s' * (seeds != 1)}: {verdict}"
        )
    return lines


def paper_comparison(records: Sequence[dict]) -> pd.DataFrame:
    """Per task: the paper's published Dice and the challenge winner's score beside ours.

    Rows: the published figures (labelled so), then every strategy and trivial baseline in
    ``records``. Columns: per-image Dice in % (mean ± std) in cross-validation and on unseen
    images, and the COSAS score on unseen images. "–" where a number does not exist.
    """
    frame = image_table(records)
    cells = frame.groupby(["task", "strategy", "split"], sort=False).agg(
        dice=("dice", lambda v: fmt(100 * v.mean(), 100 * v.std(ddof=0), digits=1)),
        score=("score", lambda v: fmt(v.mean(), v.std(ddof=0))),
    )

    def cell(task, strategy, split, column) -> str:
        key = (task, strategy, split)
        return cells.loc[key, column] if key in cells.index else "–"

    rows = []
    for task in sorted(frame["task"].unique()):
        (cv_mean, cv_std), (test_mean, test_std) = PAPER_DICE[task]["cv"], PAPER_DICE[task]["test"]
        test = f"{test_mean:.2f}" + ("" if test_std is None else f" ± {test_std:.2f}")
        rows.append((task, "Galdran 2024 (published)", f"{cv_mean:.2f} ± {cv_std:.2f}", test, "–"))
        winner = f"{CHALLENGE_WINNER[task]:.3f}"
        rows.append((task, "challenge winner, nnU-Net (published)", "–", "–", winner))
        strategies = frame.loc[frame["task"] == task, "strategy"].unique()
        for strategy in sorted(strategies, key=display_order):
            rows.append(
                (
                    task,
                    f"ours: {strategy}",
                    cell(task, strategy, "cv", "dice"),
                    cell(task, strategy, "test", "dice"),
                    cell(task, strategy, "test", "score"),
                )
            )
    return pd.DataFrame(
        rows, columns=["task", "source", "Dice % CV", "Dice % unseen", "score unseen"]
    )
