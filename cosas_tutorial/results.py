"""Run records as JSON lines, and the score tables built from them.

One record per (task, strategy, fold, split) evaluation, DomainBed-style: the configuration, seed
and commit that produced it, the training history, per-domain summaries and per-image rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

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
