"""Run records as JSON lines, and the score tables built from them.

One record per (task, strategy, fold, split) evaluation, DomainBed-style: the configuration, seed
and commit that produced it, the training history, per-domain summaries and per-image rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

BASELINES = ("all-tumour", "all-background")


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


def fmt(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


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


def score_table(
    records: Sequence[dict], task: str | None = None, metric: str = "score"
) -> pd.DataFrame:
    """Rows: task × strategy (baselines included); columns: in-domain CV, then each unseen
    domain and all unseen images; cells: mean ± std over images of ``metric``.

    Folds are pooled: the per-image rows of every fold are summarised together. With ``task``,
    only that task's records (and so only its domains as columns).
    """
    pooled: dict[tuple[str, str], dict[str, list[float]]] = {}
    for record in records:
        if task is not None and record["task"] != task:
            continue
        key = (record["task"], record["strategy"])
        column_of = (
            (lambda row: "in-domain (CV)")
            if record["split"] == "cv"
            else (lambda row: row["domain"])
        )
        cells = pooled.setdefault(key, {})
        for row in record["images"]:
            cells.setdefault(column_of(row), []).append(row[metric])
            if record["split"] == "test":
                cells.setdefault("unseen (all)", []).append(row[metric])
    columns = (
        ["in-domain (CV)"]
        + sorted(
            {c for cells in pooled.values() for c in cells} - {"in-domain (CV)", "unseen (all)"}
        )
        + ["unseen (all)"]
    )
    order = {name: i for i, name in enumerate(("standard", "union", "cross-task", *BASELINES))}
    rows = []
    for (task, strategy), cells in sorted(
        pooled.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
    ):
        row = {"task": task, "strategy": strategy}
        for column in columns:
            values = pd.Series(cells.get(column, []), dtype=float)
            row[column] = fmt(values.mean(), values.std(ddof=0)) if len(values) else "–"
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "strategy", *columns])


def mean_scores(records: Sequence[dict], split: str, metric: str = "score") -> pd.DataFrame:
    """Long table: task, strategy, domain, mean, std, n — for plots."""
    rows = []
    for record in records:
        if record["split"] != split:
            continue
        for row in record["images"]:
            rows.append(
                {
                    "task": record["task"],
                    "strategy": record["strategy"],
                    "domain": row["domain"],
                    "value": row[metric],
                }
            )
    frame = pd.DataFrame(rows, columns=["task", "strategy", "domain", "value"])
    return (
        frame.groupby(["task", "strategy", "domain"])["value"]
        .agg(mean="mean", std=lambda v: v.std(ddof=0), n="size")
        .reset_index()
    )


# Published figures, for tables that put ours beside them (never computed here).
# Galdran 2024 (arXiv 2410.07124): per-image Dice in %, mean ± std over images (None: not given).
PAPER_DICE = {
    "task1": {"cv": (82.82, 23.26), "test": (76.07, None)},
    "task2": {"cv": (86.11, 17.76), "test": (81.75, None)},  # test: the preliminary test phase
}
# The COSAS 2024 winner (nnU-Net): challenge score, (Dice + IoU) / 2 per image, on the test set.
CHALLENGE_WINNER = {"task1": 0.802, "task2": 0.853}


def _strategy_order(strategy: str) -> tuple[int, str]:
    """Book order: the three strategies, then the trivial baselines, then anything else."""
    known = ("standard", "union", "cross-task", *BASELINES)
    return (known.index(strategy) if strategy in known else len(known), strategy)


def _pooled(records: Sequence[dict], metric: str) -> dict[tuple[str, str, str], list[float]]:
    """{(task, strategy, split): per-image values of every fold}."""
    pooled: dict[tuple[str, str, str], list[float]] = {}
    for record in records:
        key = (record["task"], record["strategy"], record["split"])
        pooled.setdefault(key, []).extend(row[metric] for row in record["images"])
    return pooled


def overall_scores(records: Sequence[dict], metric: str = "score") -> pd.DataFrame:
    """One row per task × strategy × split ("cv" or "test"): mean, std and n over images, and
    ``margin``, the mean minus the better of the two trivial baselines on the same images.

    The margin is what a number means: a model that scores 0.6 where "all tumour" scores 0.55
    has learnt little.
    """
    pooled = _pooled(records, metric)
    rows = [
        {
            "task": task,
            "strategy": strategy,
            "split": split,
            "mean": float(pd.Series(values, dtype=float).mean()),
            "std": float(pd.Series(values, dtype=float).std(ddof=0)),
            "n": len(values),
        }
        for (task, strategy, split), values in pooled.items()
    ]
    frame = pd.DataFrame(rows, columns=["task", "strategy", "split", "mean", "std", "n"])
    trivial = (
        frame[frame["strategy"].isin(BASELINES)].groupby(["task", "split"])["mean"].max()
    ).rename("best_trivial")
    frame = frame.join(trivial, on=["task", "split"])
    frame["margin"] = frame["mean"] - frame["best_trivial"]
    frame["_order"] = frame["strategy"].map(_strategy_order)
    frame = frame.sort_values(["task", "split", "_order", "strategy"]).drop(columns="_order")
    return frame.reset_index(drop=True)


def image_means(
    records: Sequence[dict], metric: str = "score"
) -> dict[tuple[str, str, str, str, str], float]:
    """{(task, strategy, split, domain, id): ``metric`` averaged over the folds that scored the
    image}.

    A held-out image is scored once by every fold's model, a validation image by one fold only;
    averaging makes each image count once, as intervals and paired comparisons need.
    """
    values: dict[tuple[str, str, str, str, str], list[float]] = {}
    for record in records:
        for row in record["images"]:
            key = (record["task"], record["strategy"], record["split"], row["domain"], row["id"])
            values.setdefault(key, []).append(row[metric])
    return {key: sum(v) / len(v) for key, v in values.items()}


def paired_differences(
    records: Sequence[dict], strategy: str, reference: str, metric: str = "score"
) -> pd.DataFrame:
    """Per image: ``strategy`` minus ``reference`` on the same image (task, split, domain, id),
    each score averaged over the folds that scored the image (:func:`image_means`).

    Both strategies are scored on the same validation and held-out images (same folds, same
    seed), so the difference of each image is a paired comparison, free of the spread between
    images that the means carry.
    """
    means = image_means(records, metric)
    values: dict[str, dict[tuple, float]] = {strategy: {}, reference: {}}
    for (task, name, split, domain, image), value in means.items():
        if name in values:
            values[name][(task, split, domain, image)] = value
    common = sorted(values[strategy].keys() & values[reference].keys())
    frame = pd.DataFrame(
        [(*key, values[reference][key], values[strategy][key]) for key in common],
        columns=["task", "split", "domain", "id", reference, strategy],
    )
    frame["difference"] = frame[strategy] - frame[reference]
    return frame


def paired_summary(paired: pd.DataFrame) -> pd.DataFrame:
    """Per task × split of :func:`paired_differences`: the mean difference with its 95 %
    bootstrap interval (:func:`mean_interval`), and how many images got better, worse, in all.

    An interval that excludes 0 says these images tell the two strategies apart, even where
    the intervals of the two means overlap (each image's difficulty cancels in its difference).
    It does not measure training noise: one seed trains each strategy once.
    """
    rows = []
    for (task, split), group in paired.groupby(["task", "split"]):
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
            }
        )
    columns = ["task", "split", "mean", "ci_low", "ci_high", "better", "worse", "images"]
    return pd.DataFrame(rows, columns=columns).set_index(["task", "split"])


def paper_comparison(records: Sequence[dict]) -> pd.DataFrame:
    """Per task: the paper's published Dice and the challenge winner's score beside ours.

    Rows: the published figures (labelled so), then every strategy and trivial baseline in
    ``records``. Columns: per-image Dice in % (mean ± std) in cross-validation and on unseen
    images, and the COSAS score on unseen images. "–" where a number does not exist.
    """
    dice, score = _pooled(records, "dice"), _pooled(records, "score")

    def pct(values) -> str:
        values = pd.Series(values, dtype=float) * 100
        return f"{values.mean():.1f} ± {values.std(ddof=0):.1f}" if len(values) else "–"

    rows = []
    for task in sorted({r["task"] for r in records}):
        (cv_mean, cv_std), (test_mean, test_std) = PAPER_DICE[task]["cv"], PAPER_DICE[task]["test"]
        rows.append(
            {
                "task": task,
                "source": "Galdran 2024 (published)",
                "Dice % CV": f"{cv_mean:.2f} ± {cv_std:.2f}",
                "Dice % unseen": f"{test_mean:.2f}"
                + ("" if test_std is None else f" ± {test_std:.2f}"),
                "score unseen": "–",
            }
        )
        rows.append(
            {
                "task": task,
                "source": "challenge winner, nnU-Net (published)",
                "Dice % CV": "–",
                "Dice % unseen": "–",
                "score unseen": f"{CHALLENGE_WINNER[task]:.3f}",
            }
        )
        strategies = sorted({s for t, s, _ in dice if t == task}, key=_strategy_order)
        for strategy in strategies:
            test_scores = score.get((task, strategy, "test"), [])
            rows.append(
                {
                    "task": task,
                    "source": f"ours: {strategy}",
                    "Dice % CV": pct(dice.get((task, strategy, "cv"), [])),
                    "Dice % unseen": pct(dice.get((task, strategy, "test"), [])),
                    "score unseen": (
                        fmt(
                            pd.Series(test_scores).mean(),
                            pd.Series(test_scores).std(ddof=0),
                        )
                        if test_scores
                        else "–"
                    ),
                }
            )
    return pd.DataFrame(
        rows, columns=["task", "source", "Dice % CV", "Dice % unseen", "score unseen"]
    )
