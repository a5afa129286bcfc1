"""Portable runs: a run folder is known to its data by their content, not their path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cosas_tutorial import experiment, runs
from cosas_tutorial.cli import main
from cosas_tutorial.config import get_profile
from cosas_tutorial.data.cosas import discover, fingerprint
from cosas_tutorial.data.synthetic import generate
from cosas_tutorial.experiment import run_name
from cosas_tutorial.results import read_records

RUN = run_name("task1", "standard")
OPTIONS = ["--profile", "ci", "--epochs", "1", "--tasks", "task1", "--strategies", "standard"]


def make_data(folder: Path) -> Path:
    """A small task-1 synthetic tree; the same bytes wherever it is generated."""
    config = get_profile("ci")
    return generate(folder, tiles=3, size=config.synthetic_size, seed=0, tasks=("task1",))


def experiment_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["experiment", "--data", str(data), "--out", str(out), *OPTIONS, "--quiet", *extra]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of ``folder`` with its modification time and bytes."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """``data/`` and ``runs/`` (one finished run, evaluated) in one folder."""
    lab = tmp_path_factory.mktemp("lab")
    assert main(experiment_argv(make_data(lab / "data"), lab / "runs")) == 0
    return lab


@pytest.fixture
def no_training(monkeypatch):
    """Any training step fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(experiment, "fit_stage", fail)


@pytest.fixture
def lab_copy(trained, tmp_path) -> Path:
    """A copy of the trained folder that a test may move or change."""
    return Path(shutil.copytree(trained, tmp_path / "lab"))


def test_moved_run_and_data_are_resumed_and_evaluated_without_retraining(
    trained, lab_copy, tmp_path, no_training, capsys
):
    home = tmp_path / "home"
    home.mkdir()
    data = Path(shutil.move(lab_copy / "data", home / "data"))
    runs = Path(shutil.move(lab_copy / "runs", home / "runs"))
    run = runs / RUN
    before = snapshot(run)
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["data"] == str((trained / "data").resolve())  # where it was made: info

    assert main(experiment_argv(data, runs, "--resume")) == 0
    assert snapshot(run) == before  # read back as it was: no model, record or manifest rewritten

    saved = [r for r in read_records(run / "records.jsonl") if r["split"] == "test"]
    evaluation = tmp_path / "evaluation.json"
    argv = ["evaluate", "--run", str(run), "--data", str(data), "--json", str(evaluation)]
    assert main(argv) == 0, capsys.readouterr().err
    scored = json.loads(evaluation.read_text())
    assert [r["split"] for r in scored] == ["test"]
    assert len(scored[0]["images"]) == len([s for s in discover(data) if s.split == "test"])
    assert [i["score"] for i in scored[0]["images"]] == [i["score"] for i in saved[0]["images"]]


def test_data_regenerated_at_another_path_are_the_same_data(trained, tmp_path, no_training):
    runs = Path(shutil.copytree(trained / "runs", tmp_path / "runs"))
    data = make_data(tmp_path / "regenerated")
    assert data.resolve() != (trained / "data").resolve()
    assert fingerprint(data) == fingerprint(trained / "data")

    before = snapshot(runs / RUN)
    assert main(experiment_argv(data, runs, "--resume")) == 0
    assert snapshot(runs / RUN) == before


def test_other_data_are_refused_naming_what_differs(lab_copy, capsys):
    data, runs = lab_copy / "data", lab_copy / "runs"
    original = fingerprint(data)
    before = snapshot(runs)
    pair = next(s for s in discover(data) if s.split == "train")

    pair.mask.write_bytes(pair.mask.read_bytes() + b"\0")  # the same pairs, one byte more
    assert main(experiment_argv(data, runs, "--resume")) == 2
    error = capsys.readouterr().err
    assert "(data differ from these settings)" in error
    assert f"data here: {original.pairs} pairs, {original.bytes + 1:,} bytes" in error
    assert f"data in run.json: {original.pairs} pairs, {original.bytes:,} bytes" in error

    pair.image.unlink()  # one pair fewer
    pair.mask.unlink()
    assert main(experiment_argv(data, runs, "--resume")) == 2
    assert f"data here: {original.pairs - 1} pairs" in capsys.readouterr().err
    assert snapshot(runs) == before  # refused without touching the runs


def test_run_json_of_an_older_version_is_checked_by_its_path_only(lab_copy, tmp_path):
    """Such a run.json holds the data's path and no fingerprint: reused where it was made, as
    that version reused it; elsewhere nothing tells whether the data are the same."""
    run, data = lab_copy / "runs" / RUN, lab_copy / "data"
    manifest = json.loads((run / "run.json").read_text())
    del manifest[runs.FINGERPRINT]
    manifest["data"] = str(data.resolve())  # as if made here
    (run / "run.json").write_text(json.dumps(manifest))
    identity = runs.run_identity("task1", "standard", get_profile("ci", epochs=1), data)
    runs.check_same_run(run, identity)  # accepted at the recorded path

    moved = Path(shutil.move(data, tmp_path / "moved"))
    identity = runs.run_identity("task1", "standard", get_profile("ci", epochs=1), moved)
    with pytest.raises(FileExistsError, match="older version") as refused:
        runs.check_same_run(run, identity)
    assert str(data.resolve()) in str(refused.value) and str(moved.resolve()) in str(refused.value)
