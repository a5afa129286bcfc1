"""Runs: train a strategy on a task over cross-validation folds, evaluate it, run the grid.

A run folder holds ``run.json`` (what was run: task, strategy, configuration, the data's
:func:`~cosas_tutorial.data.cosas.fingerprint` and, for information, its path),
``fold<k>/<stage>.ckpt`` (resumable checkpoints), ``fold<k>/model.pt`` (final weights),
``fold<k>/stain_norm.json`` (the stain normaliser's reference, with ``stain_norm="macenko"``)
and ``records.jsonl`` (scores). A run folder moved or copied together with its data is resumed
and read back wherever it lies: the data are known by their content, not their path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from .config import RunConfig
from .data.cosas import DataError, Fingerprint, discover, fingerprint
from .data.layout import TASKS, Sample
from .data.splits import kfold_by_domain
from .data.tiles import TileCache
from .env import git_commit, pick_device, seed_everything
from .evaluate import baseline_rows, evaluate_samples, per_domain
from .model import build_model
from .results import BASELINES, append_records, read_records
from .stain import load_normaliser, normaliser_for
from .strategies import STRATEGIES, get_strategy, other_task

RUN_FILE, RECORDS_FILE = "run.json", "records.jsonl"
FINGERPRINT = "data_fingerprint"  # the key of run.json that identifies the data


def task_samples(samples: Sequence[Sample], task: str, split: str) -> list[Sample]:
    return [s for s in samples if s.task == task and s.split == split]


def _record(
    config: RunConfig,
    task: str,
    strategy: str,
    fold: int,
    split: str,
    rows: list[dict],
    data: Path,
    history=None,
) -> dict:
    return {
        "task": task,
        "strategy": strategy,
        "fold": fold,
        "split": split,
        "profile": config.profile,
        "seed": config.seed,
        "commit": git_commit(),
        "data": str(data),
        "config": config.to_dict(),
        "history": history or [],
        "domains": per_domain(rows),
        "images": rows,
    }


def run_identity(task: str, strategy: str, config: RunConfig, data: Path) -> dict:
    """What makes a run folder this run, as ``run.json`` records it: task, strategy,
    configuration and the data's fingerprint; the data's path is there for information only."""
    return {
        "task": task,
        "strategy": strategy,
        "config": config.to_dict(),
        "data": str(Path(data).resolve()),
        FINGERPRINT: dataclasses.asdict(fingerprint(data)),
    }


def check_same_run(run_dir: Path, identity: dict) -> None:
    """Refuse to continue or read back the run in ``run_dir`` for another :func:`run_identity`:
    its models and scores would be taken for this one's. The error names what differs.

    The data are compared by fingerprint, not by path, so that a run folder and its data can be
    moved or copied together. A ``run.json`` of an older version records the path alone: it is
    accepted at that path, as that version accepted it, and refused elsewhere, where nothing
    tells whether the data are the same (retraining is safer than mixing runs).
    """
    previous = json.loads((run_dir / RUN_FILE).read_text())
    differences = [key for key in ("task", "strategy") if previous.get(key) != identity[key]]
    old_config, new_config = previous.get("config") or {}, identity["config"]
    differences += [
        f"config.{key}"
        for key in sorted(old_config.keys() | new_config.keys())
        if old_config.get(key) != new_config.get(key)
    ]
    data = _data_difference(previous, identity)
    if data:
        differences.append("data")
    if differences:
        raise FileExistsError(
            f"{run_dir} holds a run made with another configuration or data "
            f"({', '.join(differences)} differ from these settings); it cannot be resumed or "
            f"reused with them: choose another output folder{data}"
        )


def _data_difference(previous: dict, identity: dict) -> str:
    """Nothing when the run in ``previous`` (its ``run.json``) was made on the data of
    ``identity``; else one line for each side, saying what it holds."""
    here = f"\n  data here: {Fingerprint(**identity[FINGERPRINT])} ({identity['data']})"
    if FINGERPRINT not in previous:
        if previous.get("data") == identity["data"]:
            return ""
        return (
            f"{here}\n  data in {RUN_FILE}: {previous.get('data')}, recorded by an older version"
            " of cosas_tutorial as a path alone, so the data cannot be checked at another path"
        )
    if previous[FINGERPRINT] == identity[FINGERPRINT]:
        return ""
    then = Fingerprint(**previous[FINGERPRINT])
    return f"{here}\n  data in {RUN_FILE}: {then} ({previous.get('data')})"


def _prepare_run_dir(run_dir: Path, identity: dict, resume: bool) -> None:
    """Create the run folder; refuse to mix a different run into an existing one."""
    if (run_dir / RUN_FILE).exists():
        if not resume:
            raise FileExistsError(
                f"{run_dir} already holds a run; use --resume to continue it "
                "or choose another --out"
            )
        check_same_run(run_dir, identity)
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} is not empty and holds no run; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    manifest = {**identity, "commit": git_commit(), "created": created}
    (run_dir / RUN_FILE).write_text(json.dumps(manifest, indent=2))


def train_run(
    data: Path,
    task: str,
    strategy: str,
    config: RunConfig,
    run_dir: Path,
    device: torch.device | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train ``strategy`` for ``task`` on ``config.run_folds`` folds; return CV records."""
    data, run_dir = Path(data), Path(run_dir)
    device = device or pick_device()
    chosen = get_strategy(strategy)
    samples = discover(data)
    train = task_samples(samples, task, "train")
    if not train:
        raise DataError(f"{data}: no training images for {task}")
    other = task_samples(samples, other_task(task), "train") if chosen.uses_other_task else []
    if chosen.uses_other_task and not other:
        raise DataError(
            f"{data}: strategy {strategy!r} needs {other_task(task)} as well, "
            "but the tree holds no training images for it"
        )
    _prepare_run_dir(run_dir, run_identity(task, strategy, config, data), resume)

    records = []
    folds = kfold_by_domain(train, config.folds, config.seed)[: config.run_folds]
    for fold, (train_idx, val_idx) in enumerate(folds):
        fold_dir = run_dir / f"fold{fold}"
        seed_everything(config.seed + fold)
        model = build_model(config.encoder, config.encoder_weights)
        history = []
        fold_train = [train[i] for i in train_idx]
        normaliser = fold_normaliser(config, fold_train, fold_dir)
        for stage in chosen.stages(fold_train, other):
            tiles = TileCache(stage.samples, config.tile_scale, transform=normaliser, device=device)
            history += fit_stage(
                model, tiles, config, device, fold_dir, stage.name, resume, progress
            )
            del tiles  # free this stage's cache before the next stage fills its own
        torch.save(model.state_dict(), fold_dir / "model.pt")
        val = [train[i] for i in val_idx]
        rows = score_samples(model, val, config, normaliser, device)
        records.append(_record(config, task, strategy, fold, "cv", rows, data, history))
    append_records(run_dir / RECORDS_FILE, records)
    return records


def fold_normaliser(config: RunConfig, fold_train: Sequence[Sample], fold_dir: Path):
    """The fold's stain normaliser (``config.stain_norm``), saved in ``fold_dir`` so that
    :func:`evaluate_run` applies the same one; ``None`` without stain normalisation.

    The reference tile is chosen among this task's training tiles of the fold (the same for
    every strategy), see :func:`cosas_tutorial.stain.normaliser_for`.
    """
    if config.stain_norm == "none":
        return None
    saved = load_normaliser(fold_dir)  # a resumed run keeps its reference
    if saved is not None:
        return saved
    normaliser = normaliser_for(config, fold_train)
    if normaliser is not None:
        normaliser.save(fold_dir)
    return normaliser


def fit_stage(model, tiles, config, device, fold_dir, stage, resume, progress):
    from .train import fit  # imported here to keep `cosas data …` start-up light

    return fit(
        model,
        tiles,
        config,
        device,
        checkpoint=fold_dir / f"{stage}.ckpt",
        stage=stage,
        resume=resume,
        progress=progress,
    )


def load_run(run_dir: Path) -> tuple[dict, RunConfig]:
    run_file = Path(run_dir) / RUN_FILE
    if not run_file.exists():
        raise FileNotFoundError(
            f"{run_dir}: no {RUN_FILE}; is this a run folder made by `cosas train`?"
        )
    manifest = json.loads(run_file.read_text())
    return manifest, RunConfig(**manifest["config"])


def score_samples(model, samples, config: RunConfig, normaliser, device) -> list[dict]:
    """Per-image scores of ``model`` on ``samples`` with the run's prediction settings (crop,
    tile scale, threshold, TTA) and the fold's stain normaliser (or ``None``)."""
    return evaluate_samples(
        model,
        samples,
        config.crop_size,
        config.tile_scale,
        config.threshold,
        config.tta,
        transform=normaliser,
        device=device,
    )


def trained_folds(run_dir: Path, config: RunConfig, device: torch.device):
    """Yield ``(fold, model, normaliser)`` for every ``fold*/model.pt`` of a run, the model on
    ``device`` and the fold's saved stain normaliser (``None`` without stain normalisation)."""
    for model_file in sorted(Path(run_dir).glob("fold*/model.pt")):
        model = build_model(config.encoder, None)
        model.load_state_dict(torch.load(model_file, map_location="cpu"))
        model.to(device)
        normaliser = load_normaliser(model_file.parent)
        if config.stain_norm != "none" and normaliser is None:
            warnings.warn(
                f"{model_file.parent}: run trained with stain_norm={config.stain_norm!r} but "
                "no stain normaliser saved (no tile with tissue?); evaluating without it",
                stacklevel=3,
            )
        yield int(model_file.parent.name.removeprefix("fold")), model, normaliser


def evaluate_run(
    run_dir: Path, data: Path, tta: bool | None = None, device: torch.device | None = None
) -> list[dict]:
    """Score every trained fold of a run on the held-out (test) domains of its task."""
    run_dir, data = Path(run_dir), Path(data)
    device = device or pick_device()
    manifest, config = load_run(run_dir)
    if tta is not None:
        config = config.replace(tta=tta)
    test = task_samples(discover(data), manifest["task"], "test")
    if not test:
        raise DataError(f"{data}: no held-out (COSAS24-TestSet) images for {manifest['task']}")
    records = []
    for fold, model, normaliser in trained_folds(run_dir, config, device):
        rows = score_samples(model, test, config, normaliser, device)
        records.append(
            _record(config, manifest["task"], manifest["strategy"], fold, "test", rows, data)
        )
    if not records:
        raise FileNotFoundError(f"{run_dir}: no trained fold (fold*/model.pt) to evaluate")
    (run_dir / "evaluation.json").write_text(
        json.dumps(
            [{k: r[k] for k in ("task", "strategy", "fold", "split", "domains")} for r in records],
            indent=2,
        )
    )
    return records


def baseline_records(data: Path, task: str, config: RunConfig) -> list[dict]:
    """Trivial predictors on the same CV validation images and held-out images as the models."""
    samples = discover(data)
    train = task_samples(samples, task, "train")
    val = [
        train[i]
        for _, val_idx in kfold_by_domain(train, config.folds, config.seed)[: config.run_folds]
        for i in val_idx
    ]
    test = task_samples(samples, task, "test")
    records = []
    for kind in BASELINES:
        for split, chosen in (("cv", val), ("test", test)):
            if chosen:
                records.append(
                    _record(config, task, kind, -1, split, baseline_rows(chosen, kind), data)
                )
    return records


def run_experiment(
    data: Path,
    config: RunConfig,
    out: Path,
    strategies=None,
    tasks=None,
    device: torch.device | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Every strategy × task (those the data allows): train, evaluate, collect records.

    Writes ``out/results.jsonl`` and returns its records.
    """
    data, out = Path(data), Path(out)
    samples = discover(data)
    present = {s.task for s in samples if s.split == "train"}
    tasks = [t for t in (tasks or TASKS) if t in present]
    results = out / "results.jsonl"
    if results.exists() and not resume:
        raise FileExistsError(f"{results} exists; use --resume or another --out")
    records = []
    for task in tasks:
        has_test = any(s.task == task and s.split == "test" for s in samples)
        for name in strategies or STRATEGIES:
            if get_strategy(name).uses_other_task and other_task(task) not in present:
                print(f"skipping {name} on {task}: the data holds no {other_task(task)}")
                continue
            run_dir = out / f"{task}-{name}"
            if (run_dir / RECORDS_FILE).exists() and resume:  # trained: read it back
                check_same_run(run_dir, run_identity(task, name, config, data))
                run_records = read_records(run_dir / RECORDS_FILE)
            else:
                run_records = train_run(data, task, name, config, run_dir, device, resume, progress)
            # Evaluated unless the data has no held-out images (or a run stopped in between).
            if has_test and not any(r["split"] == "test" for r in run_records):
                test_records = evaluate_run(run_dir, data, device=device)
                append_records(run_dir / RECORDS_FILE, test_records)
                run_records += test_records
            records += run_records
        records += baseline_records(data, task, config)
    results.unlink(missing_ok=True)
    append_records(results, records)
    return records
