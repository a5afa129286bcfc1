"""A run folder and what it holds: what was run, its records and its trained folds.

``<run>/run.json`` says what was run: task, strategy, configuration, the data's
:func:`~cosas_tutorial.data.cosas.fingerprint` and, for information only, the data's path.
``<run>/fold<k>/`` holds one trained fold: ``<stage>.ckpt`` (resumable checkpoints),
``model.pt`` (final weights) and ``stain_norm.json`` (its stain normaliser, with
``stain_norm="macenko"``). ``<run>/records.jsonl`` holds its scores, one record per evaluation.

A run folder moved or copied together with its data is resumed and read back wherever it lies:
the data are known by their content, not their path. :class:`TrainedFold` keeps a fold's model
and stain normaliser together, so that nothing outside this module pairs them by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import RunConfig
from .data.cosas import Fingerprint, fingerprint
from .env import git_commit
from .evaluate import evaluate_samples, predict_tile
from .results import read_records
from .stain import MacenkoNormaliser, load_normaliser, normaliser_for

RUN_FILE, RECORDS_FILE, MODEL_FILE = "run.json", "records.jsonl", "model.pt"
FINGERPRINT = "data_fingerprint"  # the key of run.json that identifies the data


def run_identity(
    task: str, strategy: str, config: RunConfig, data: Path, protocol: str = "cv"
) -> dict:
    """What makes a run folder this run, as ``run.json`` records it: task, strategy, protocol,
    configuration and the data's fingerprint; the data's path is there for information only."""
    return {
        "task": task,
        "strategy": strategy,
        "protocol": protocol,
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
    previous = json.loads((Path(run_dir) / RUN_FILE).read_text())
    previous.setdefault("protocol", "cv")  # run.json of versions without protocols
    keys = ("task", "strategy", "protocol")
    differences = [key for key in keys if previous.get(key) != identity[key]]
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


def prepare_run_dir(run_dir: Path, identity: dict, resume: bool) -> None:
    """Create the run folder; refuse to mix a different run into an existing one."""
    run_dir = Path(run_dir)
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


def make_record(
    config: RunConfig,
    task: str,
    strategy: str,
    fold: int,
    split: str,
    rows: list[dict],
    data: Path,
    history: Sequence[dict] = (),
    **labels,
) -> dict:
    """One evaluation as a run record (a line of ``records.jsonl``): what was scored, with
    which configuration, seed and commit, the training history and one row per image.
    ``labels`` add fields of the caller's own (the stain ablation's ``stain``, ``unit`` …)."""
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
        "history": list(history),
        "images": rows,
        **labels,
    }


def load_run(run_dir: Path) -> tuple[dict, RunConfig]:
    """``run.json`` of a run folder and its configuration."""
    run_file = Path(run_dir) / RUN_FILE
    if not run_file.exists():
        raise FileNotFoundError(
            f"{run_dir}: no {RUN_FILE}; is this a run folder made by `cosas train`?"
        )
    manifest = json.loads(run_file.read_text())
    return manifest, RunConfig(**manifest["config"])


def fold_normaliser(config: RunConfig, fold_train: Sequence, fold_dir: Path):
    """The fold's stain normaliser (``config.stain_norm``), saved in ``fold_dir`` so that the
    fold is scored later with the same one; ``None`` without stain normalisation.

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


@dataclass
class TrainedFold:
    """One trained fold: its model, the stain normaliser it was trained with (or ``None``) and
    the run's configuration, which together say how a tile is predicted and scored."""

    model: nn.Module
    config: RunConfig
    normaliser: MacenkoNormaliser | None = None
    fold: int = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict(self, image: np.ndarray, tta: bool | None = None) -> np.ndarray:
        """Tumour probability (H×W) of an RGB tile as the run scores it: stain-normalised,
        rescaled by the tile scale, predicted in sliding windows of the crop size, with TTA
        as the configuration says (or as ``tta`` says)."""
        seen = image if self.normaliser is None else self.normaliser(image)
        tta = self.config.tta if tta is None else tta
        window, scale = self.config.crop_size, self.config.tile_scale
        return predict_tile(self.model, seen, window, scale, tta=tta, device=self.device)

    def score(
        self, samples: Sequence, tta: bool | None = None, keep_probabilities: bool = False
    ) -> list[dict]:
        """Per-image scores (Dice, IoU, COSAS score) on ``samples``, one row each."""
        return evaluate_samples(
            self.model,
            samples,
            self.config.crop_size,
            self.config.tile_scale,
            self.config.threshold,
            self.config.tta if tta is None else tta,
            transform=self.normaliser,
            device=self.device,
            keep_probabilities=keep_probabilities,
        )


def trained_folds(run_dir: Path, device: torch.device | str = "cpu") -> Iterator[TrainedFold]:
    """Every trained fold of a run (``fold*/model.pt``), its model on ``device``."""
    from .model import build_model  # here: smp takes seconds to import

    _, config = load_run(run_dir)
    for model_file in sorted(Path(run_dir).glob(f"fold*/{MODEL_FILE}")):
        model = build_model(config.encoder, None)
        model.load_state_dict(torch.load(model_file, map_location="cpu"))
        normaliser = load_normaliser(model_file.parent)
        if config.stain_norm != "none" and normaliser is None:
            warnings.warn(
                f"{model_file.parent}: run trained with stain_norm={config.stain_norm!r} but "
                "no stain normaliser saved (no tile with tissue?); scoring without it",
                stacklevel=2,
            )
        fold = int(model_file.parent.name.removeprefix("fold"))
        yield TrainedFold(model.to(device), config, normaliser, fold)


def read_run_records(
    out: Path, runs: dict[str, str], task: str, data: Path, config: RunConfig, protocol: str
) -> dict[str, list[dict]]:
    """The records of ``out/<folder>/records.jsonl`` for each ``{strategy: folder}`` of
    ``runs`` that has them.

    A run made on other data or with another configuration is an error (its numbers would not
    belong beside ours), not something to reuse silently: the same check as ``--resume``, which
    follows the data's content, so that runs moved with their data are read back.
    """
    found = {}
    for strategy, folder in runs.items():
        run_dir = Path(out) / folder
        if not (run_dir / RECORDS_FILE).exists():
            continue
        check_same_run(run_dir, run_identity(task, strategy, config, data, protocol))
        found[strategy] = read_records(run_dir / RECORDS_FILE)
    return found
