"""The run folder: reading finished runs back only when they are this run, and the chapters'
ensure_runs, which trains what is missing and reuses the rest."""

from __future__ import annotations

import json

import pytest

from cosas_tutorial.config import get_profile
from cosas_tutorial.experiment import ensure_runs, run_name
from cosas_tutorial.results import append_records
from cosas_tutorial.runs import read_run_records, run_identity


def test_read_run_records_checks_data_and_config(make_cosas_tree, tmp_path):
    config = get_profile("ci")
    data = make_cosas_tree({"task2": {"3d-1000": 2}})
    other = make_cosas_tree({"task2": {"3d-1000": 3}}, root=tmp_path / "other")
    run_dir = tmp_path / "experiment" / "task2-standard"
    run_dir.mkdir(parents=True)
    identity = run_identity("task2", "standard", config, data)
    (run_dir / "run.json").write_text(json.dumps(identity))
    record = {"task": "task2", "strategy": "standard", "fold": 0, "split": "cv", "images": []}
    append_records(run_dir / "records.jsonl", [record])
    out, runs = tmp_path / "experiment", {"standard": "task2-standard", "union": "task2-union"}

    found = read_run_records(out, runs, "task2", data, config, "cv")
    assert list(found) == ["standard"] and found["standard"] == [record]
    with pytest.raises(FileExistsError, match=r"\(data differ"):
        read_run_records(out, runs, "task2", other, config, "cv")
    with pytest.raises(FileExistsError, match="config.epochs differ"):
        read_run_records(out, runs, "task2", data, config.replace(epochs=9), "cv")
    with pytest.raises(FileExistsError, match="protocol differ"):
        read_run_records(out, runs, "task2", data, config, "lodo")


def test_ensure_runs_trains_once_then_reuses(tiny_synthetic, tmp_path, capsys):
    config = get_profile("ci").replace(epochs=1, steps_per_epoch=1)
    out = tmp_path / "experiment"
    first = ensure_runs(tiny_synthetic, config, out, "task2", ["standard"])
    weights = out / run_name("task2", "standard") / "fold0" / "model.pt"
    stamp = weights.stat().st_mtime_ns
    assert "to train: ['standard']" in capsys.readouterr().out
    again = ensure_runs(tiny_synthetic, config, out, "task2", ["standard"])
    assert "reused: ['standard']" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == stamp  # read back, not trained again
    strategies = {r["strategy"] for r in again}
    assert strategies == {"standard", "all-tumour", "all-background"}
    assert {(r["strategy"], r["split"]) for r in again} == {
        (r["strategy"], r["split"]) for r in first
    }
    assert {r["split"] for r in again if r["strategy"] == "standard"} == {"cv", "test"}
