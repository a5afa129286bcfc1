"""Training runs and the strategy × task grid, under two protocols and two budget rules.

Protocols (``cosas_tutorial.config.PROTOCOLS``), each a list of training units per task:

- ``cv``: k-fold cross-validation over the task's training domains, stratified by domain; a
  unit's validation images give in-domain scores (split ``"cv"``);
- ``lodo``: leave one domain out: each training domain of the task in turn is held out, the
  unit trains on the others and is scored on it (split ``"test"``, ``held_out`` its name).
  Needs nothing but a training set, so it answers "does it generalise to an unseen organ or
  scanner?" on the real COSAS training data alone.

Under both, the ``COSAS24-TestSet`` domains are scored too when the tree has them. A strategy
that uses the other task trains on all of that task's training images in every unit.

Budget rules (``config.budget``) decide how many optimiser steps each stage takes
(:func:`plan_stages`); every record carries ``protocol``, ``held_out``, ``seed`` and ``steps``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import PROTOCOLS, RunConfig
from .data.cosas import DataError, discover
from .data.layout import TASKS, Sample
from .data.splits import kfold_by_domain, leave_one_domain_out
from .data.tiles import TileCache
from .env import pick_device, seed_everything
from .evaluate import baseline_rows
from .results import append_records, read_records
from .runs import (
    MODEL_FILE,
    RECORDS_FILE,
    TrainedFold,
    check_same_run,
    fold_normaliser,
    load_run,
    make_record,
    prepare_run_dir,
    read_run_records,
    run_identity,
    trained_folds,
)
from .strategies import BASELINES, STRATEGIES, Stage, Strategy, get_strategy, other_task


def task_samples(samples: Sequence[Sample], task: str, split: str) -> list[Sample]:
    return [s for s in samples if s.task == task and s.split == split]


@dataclass(frozen=True)
class Unit:
    """One trained model of a run: fold ``fold`` trains on ``train`` and is scored on
    ``scored`` (validation images under cv, the held-out domain's images under lodo)."""

    fold: int
    train: tuple[Sample, ...]
    scored: tuple[Sample, ...]
    held_out: str | None = None

    @property
    def split(self) -> str:
        return "cv" if self.held_out is None else "test"


def protocol_units(
    train: Sequence[Sample],
    config: RunConfig,
    protocol: str,
    held_out: Sequence[str] | None = None,
) -> list[Unit]:
    """The units of ``protocol`` over a task's training images (cv: ``config.run_folds`` of
    the ``config.folds`` folds, drawn with ``config.seed``; lodo: one per domain, or per domain
    of ``held_out``; a unit's number is its domain's place among all, whichever are run)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "cv":
        folds = kfold_by_domain(train, config.folds, config.seed)[: config.run_folds]
        return [
            Unit(k, tuple(train[i] for i in fit), tuple(train[i] for i in val))
            for k, (fit, val) in enumerate(folds)
        ]
    try:
        splits = leave_one_domain_out(train)
    except ValueError as err:
        raise DataError(f"leave-one-domain-out: {err}") from err
    unknown = sorted(set(held_out or ()) - set(splits))
    if unknown:
        raise DataError(f"cannot hold out {unknown}: the training domains are {list(splits)}")
    return [
        Unit(k, tuple(train[i] for i in fit), tuple(train[i] for i in val), domain)
        for k, (domain, (fit, val)) in enumerate(splits.items())
        if held_out is None or domain in held_out
    ]


def run_images(
    data: Path, task: str, config: RunConfig, fold: int = 0, protocol: str = "cv"
) -> dict[str, list[Sample]]:
    """The images the records of unit ``fold`` score, by split: under cv ``"cv"`` (its
    validation images) and ``"test"`` (the COSAS24-TestSet domains); under lodo ``"test"``
    (the held-out domain's images, then the TestSet's)."""
    samples = discover(data)
    units = protocol_units(task_samples(samples, task, "train"), config, protocol)
    if not 0 <= fold < len(units):
        raise ValueError(f"fold must lie in 0..{len(units) - 1}, got {fold}")
    unit, test = units[fold], task_samples(samples, task, "test")
    if unit.split == "cv":
        return {"cv": list(unit.scored), "test": test}
    return {"test": list(unit.scored) + test}


def plan_stages(stages: Sequence[Stage], config: RunConfig) -> list[tuple[Stage, RunConfig]]:
    """Each stage with the configuration it trains with, by the budget rule ``config.budget``.

    ``equal-steps``: the stages share ``epochs × steps_per_epoch`` steps, whatever the
    strategy, so that strategies are compared at the same cost; the stages before the last
    share ``pretrain_share`` of every epoch's steps, the last stage the rest. ``paper``: every
    stage runs ``epochs`` epochs of one crop per tile of its own (union, with twice the tiles,
    takes twice the steps; cross-task the steps of both tasks).
    """
    if config.budget == "paper":
        return [
            (
                stage,
                config.replace(steps_per_epoch=math.ceil(len(stage.samples) / config.batch_size)),
            )
            for stage in stages
        ]
    if len(stages) == 1:
        return [(stages[0], config)]
    before = max(1, round(config.pretrain_share * config.steps_per_epoch))
    last = config.steps_per_epoch - before
    if last < 1:
        raise ValueError(
            f"steps_per_epoch {config.steps_per_epoch} leaves no step for the last stage "
            f"at pretrain_share {config.pretrain_share}"
        )
    early = len(stages) - 1
    shares = [before // early + (i < before % early) for i in range(early)] + [last]
    return [(stage, config.replace(steps_per_epoch=n)) for stage, n in zip(stages, shares)]


def run_name(task: str, strategy: str, protocol: str = "cv", seed: int = 0) -> str:
    """The folder of a run inside an experiment's output folder."""
    return f"{task}-{strategy}-{protocol}-seed{seed}"


def fit_stage(model, tiles, config, device, fold_dir, stage, resume, progress, loss):
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
        loss=loss,
    )


def _training_images(data: Path, task: str, strategy: Strategy):
    """This task's training images and, if the strategy uses it, the other task's."""
    samples = discover(data)
    train = task_samples(samples, task, "train")
    if not train:
        raise DataError(f"{data}: no training images for {task}")
    if not strategy.uses_other_task:
        return train, []
    other = task_samples(samples, other_task(task), "train")
    if not other:
        raise DataError(
            f"{data}: strategy {strategy.name!r} needs {other_task(task)} as well, but the tree "
            "holds no training images for it (a one-task tree, such as the open-tissue tier, "
            "can only train 'standard')"
        )
    return train, other


def train_run(
    data: Path,
    task: str,
    strategy: str,
    config: RunConfig,
    run_dir: Path,
    device: torch.device | None = None,
    resume: bool = False,
    progress: bool = True,
    protocol: str = "cv",
    held_out: Sequence[str] | None = None,
) -> list[dict]:
    """Train ``strategy`` for ``task`` on every unit of ``protocol`` (under lodo, those holding
    out a domain of ``held_out``, all by default); score each unit on its own images
    (validation, or the held-out domain); return those records."""
    data, run_dir = Path(data), Path(run_dir)
    device = device or pick_device()
    chosen = get_strategy(strategy)
    train, other = _training_images(data, task, chosen)
    units = protocol_units(train, config, protocol, held_out)
    prepare_run_dir(run_dir, run_identity(task, strategy, config, data, protocol), resume)

    from .model import build_model  # here: smp takes seconds to import

    records = []
    for unit in units:
        fold_dir = run_dir / f"fold{unit.fold}"
        seed_everything(config.seed + unit.fold)
        model = build_model(config.encoder, config.encoder_weights)
        normaliser = fold_normaliser(config, unit.train, fold_dir)
        history, steps = [], 0
        for stage, stage_config in plan_stages(chosen.stages(unit.train, other), config):
            tiles = TileCache(stage.samples, config.tile_scale, transform=normaliser, device=device)
            history += fit_stage(
                model, tiles, stage_config, device, fold_dir, stage.name, resume, progress,
                chosen.loss,
            )  # fmt: skip
            steps += stage_config.steps_per_stage
            del tiles  # free this stage's cache before the next stage fills its own
        torch.save(model.state_dict(), fold_dir / MODEL_FILE)
        rows = TrainedFold(model, config, normaliser, unit.fold).score(unit.scored)
        labels = {"protocol": protocol, "held_out": unit.held_out, "steps": steps}
        records.append(
            make_record(config, task, strategy, unit.fold, unit.split, rows, data, history,
                        **labels)
        )  # fmt: skip
    append_records(run_dir / RECORDS_FILE, records)
    return records


def evaluate_run(
    run_dir: Path,
    data: Path,
    tta: bool | None = None,
    device: torch.device | None = None,
    held_out_domains: bool = False,
) -> list[dict]:
    """Score every trained fold of a run on the unseen images of its task: the held-out
    (COSAS24-TestSet) domains and, with ``held_out_domains``, a lodo fold's own held-out
    domain (which training scored already, with the run's TTA setting)."""
    run_dir, data = Path(run_dir), Path(data)
    device = device or pick_device()
    manifest, config = load_run(run_dir)
    task, protocol = manifest["task"], manifest.get("protocol", "cv")
    samples = discover(data)
    test = task_samples(samples, task, "test")
    units = {u.fold: u for u in protocol_units(task_samples(samples, task, "train"), config,
                                                protocol)}  # fmt: skip
    own_records = run_dir / RECORDS_FILE
    steps = {r["fold"]: r.get("steps") for r in read_records(own_records)} if (
        own_records.exists()) else {}  # fmt: skip
    records = []
    for fold in trained_folds(run_dir, device):
        if tta is not None:
            fold = dataclasses.replace(fold, config=fold.config.replace(tta=tta))
        unit = units[fold.fold]
        unseen = list(unit.scored) if held_out_domains and unit.held_out else []
        if not test + unseen:
            continue
        labels = {"protocol": protocol, "held_out": unit.held_out, "steps": steps.get(fold.fold)}
        records.append(
            make_record(fold.config, task, manifest["strategy"], fold.fold, "test",
                        fold.score(test + unseen), data, **labels)
        )  # fmt: skip
    if not records:
        raise DataError(f"{run_dir}: no trained fold with unseen images to score in {data}")
    return records


def baseline_records(
    data: Path,
    task: str,
    config: RunConfig,
    protocol: str = "cv",
    held_out: Sequence[str] | None = None,
) -> list[dict]:
    """Trivial predictors on the same images as the models of ``protocol`` (under lodo, the
    units of ``held_out`` only): every unit's own images, then the held-out (COSAS24-TestSet)
    domains."""
    samples = discover(data)
    units = protocol_units(task_samples(samples, task, "train"), config, protocol, held_out)
    test = task_samples(samples, task, "test")
    records = []
    for kind in BASELINES:
        for unit in units:
            labels = {"protocol": protocol, "held_out": unit.held_out, "steps": 0}
            rows = baseline_rows(unit.scored, kind)
            records.append(make_record(config, task, kind, unit.fold, unit.split, rows, data,
                                       **labels))  # fmt: skip
        if test:
            rows = baseline_rows(test, kind)
            labels = {"protocol": protocol, "held_out": None, "steps": 0}
            records.append(make_record(config, task, kind, -1, "test", rows, data, **labels))
    return records


def _domains(record: dict) -> set[str]:
    return {image["domain"] for image in record["images"]}


def _run_one(
    data, task, name, config, run_dir, device, resume, progress, protocol, held_out, has_test
):
    """The records of one run: read back when finished (and the same run), else trained; then
    scored on the held-out domains if the tree has them and the run was not."""
    if (run_dir / RECORDS_FILE).exists() and resume:  # trained: read it back
        check_same_run(run_dir, run_identity(task, name, config, data, protocol))
        run_records = read_records(run_dir / RECORDS_FILE)
    else:
        run_records = train_run(
            data, task, name, config, run_dir, device, resume, progress, protocol, held_out
        )
    # Evaluated unless the data has no held-out images (or a run stopped in between).
    scored_test = {d for r in run_records if r["split"] == "test" for d in _domains(r)}
    if has_test and not scored_test & has_test:
        test_records = evaluate_run(run_dir, data, device=device)
        append_records(run_dir / RECORDS_FILE, test_records)
        run_records += test_records
    return run_records


def run_experiment(
    data: Path,
    config: RunConfig,
    out: Path,
    strategies: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    device: torch.device | None = None,
    resume: bool = False,
    progress: bool = True,
    protocol: str = "cv",
    seeds: int = 1,
    held_out: Sequence[str] | None = None,
) -> list[dict]:
    """Every strategy × task (those the data allows) × seed: train, evaluate, collect records,
    with the trivial baselines on the same images.

    ``seeds`` runs each strategy with seeds ``config.seed`` … ``config.seed + seeds - 1``
    (under cv each seed also draws its own folds, the same for every strategy); ``held_out``
    holds out only these domains under lodo. Writes ``out/results.jsonl`` and returns its
    records.
    """
    data, out = Path(data), Path(out)
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    samples = discover(data)
    present = {s.task for s in samples if s.split == "train"}
    tasks = [t for t in (tasks or TASKS) if t in present]
    if not tasks:
        raise DataError(f"{data}: no training images for {', '.join(tasks or TASKS)}")
    results = out / "results.jsonl"
    if results.exists() and not resume:
        raise FileExistsError(f"{results} exists; use --resume or another --out")
    seeded = [config.replace(seed=seed) for seed in range(config.seed, config.seed + seeds)]
    records = []
    for task in tasks:
        has_test = {s.domain for s in samples if s.task == task and s.split == "test"}
        for name in strategies or STRATEGIES:
            if get_strategy(name).uses_other_task and other_task(task) not in present:
                print(f"skipping {name} on {task}: the data holds no {other_task(task)}")
                continue
            for seed_config in seeded:
                run_dir = out / run_name(task, name, protocol, seed_config.seed)
                records += _run_one(
                    data, task, name, seed_config, run_dir, device, resume, progress, protocol,
                    held_out, has_test,
                )  # fmt: skip
        for seed_config in seeded:
            records += baseline_records(data, task, seed_config, protocol, held_out)
    results.unlink(missing_ok=True)
    append_records(results, records)
    return records


def ensure_runs(
    data: Path,
    config: RunConfig,
    out: Path,
    task: str,
    strategies: Sequence[str],
    device=None,
    progress: bool = False,
    protocol: str = "cv",
) -> list[dict]:
    """The run records of ``strategies`` on ``task`` in ``out``, then the trivial baselines on
    the same images.

    Finished runs (made on ``data`` with ``config``) are read back; if any is missing,
    :func:`run_experiment` trains it (``resume=True``: the finished ones are not trained again;
    note that it rewrites ``out/results.jsonl`` with the records of this call). Chapters share
    runs this way.
    """
    names = {s: run_name(task, s, protocol, config.seed) for s in strategies}
    found = read_run_records(out, names, task, data, config, protocol)
    missing = [s for s in strategies if s not in found]
    print(f"{out}: {task} runs reused: {sorted(found) or 'none'}; to train: {missing or 'none'}")
    if missing:
        run_experiment(
            data, config, out, strategies=strategies, tasks=[task], device=device, resume=True,
            progress=progress, protocol=protocol,
        )  # fmt: skip
        found = read_run_records(out, names, task, data, config, protocol)
    records = [r for s in strategies for r in found[s]]
    return records + baseline_records(data, task, config, protocol)
