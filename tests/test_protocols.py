"""Leave-one-domain-out and cross-validation units, budget rules and seeds: what makes the
strategies' comparison fair (same images, same number of steps, several training runs)."""

from __future__ import annotations

import math

import pytest

from cosas_tutorial.cli import main
from cosas_tutorial.config import get_profile
from cosas_tutorial.data.cosas import DataError, discover
from cosas_tutorial.experiment import plan_stages, protocol_units, run_name, task_samples
from cosas_tutorial.results import read_records
from cosas_tutorial.strategies import STRATEGIES, get_strategy


def test_lodo_holds_out_each_training_domain_once(tiny_synthetic):
    train = task_samples(discover(tiny_synthetic), "task2", "train")
    units = protocol_units(train, get_profile("ci"), "lodo")
    assert [u.held_out for u in units] == ["3d-1000", "kfbio-400", "teksqray-600p"]
    for unit in units:
        assert {s.domain for s in unit.scored} == {unit.held_out}
        assert unit.held_out not in {s.domain for s in unit.train}
        assert len(unit.train) + len(unit.scored) == len(train)
    only = protocol_units(train, get_profile("ci"), "lodo", held_out=["kfbio-400"])
    assert [(u.fold, u.held_out) for u in only] == [(1, "kfbio-400")]  # its place among all
    with pytest.raises(DataError, match="cannot hold out"):
        protocol_units(train, get_profile("ci"), "lodo", held_out=["motic"])
    with pytest.raises(DataError, match="at least 2 domains"):
        protocol_units([s for s in train if s.domain == "3d-1000"], get_profile("ci"), "lodo")


def test_equal_steps_give_every_strategy_the_same_steps():
    config = get_profile("cpu").replace(epochs=8, steps_per_epoch=30)
    mine, other = ["a"] * 10, ["b"] * 30
    for name, strategy in STRATEGIES.items():
        plan = plan_stages(strategy.stages(mine, other), config)
        assert sum(c.steps_per_stage for _, c in plan) == 8 * 30, name
    plan = plan_stages(get_strategy("cross-task").stages(mine, other), config)
    assert [(s.name, c.steps_per_epoch) for s, c in plan] == [("pretrain", 15), ("finetune", 15)]
    shared = plan_stages(
        get_strategy("cross-task").stages(mine, other), config.replace(pretrain_share=0.2)
    )
    assert [c.steps_per_epoch for _, c in shared] == [6, 24]


def test_the_paper_budget_runs_the_epochs_over_each_stages_own_tiles():
    config = get_profile("cpu", budget="paper")  # batch 8
    mine, other = ["a"] * 20, ["b"] * 33
    steps = {
        name: [c.steps_per_stage for _, c in plan_stages(s.stages(mine, other), config)]
        for name, s in STRATEGIES.items()
    }
    epochs = config.epochs
    assert steps["standard"] == [epochs * math.ceil(20 / 8)]
    assert steps["union"] == [epochs * math.ceil(53 / 8)]
    assert steps["cross-task"] == [epochs * math.ceil(33 / 8), epochs * math.ceil(20 / 8)]
    with pytest.raises(ValueError, match="budget must be one of"):
        get_profile("cpu", budget="double")


def test_cli_lodo_with_two_seeds_on_a_synthetic_tree(tiny_synthetic, tmp_path):
    """Both tasks: 3 strategies × 3 held-out domains × 2 seeds, equal steps throughout."""
    out = tmp_path / "lodo"
    argv = ["experiment", "--data", str(tiny_synthetic), "--profile", "ci", "--out", str(out)]
    assert main([*argv, "--protocol", "lodo", "--seeds", "2", "--epochs", "1", "--quiet"]) == 0
    records = read_records(out / "results.jsonl")
    assert {r["protocol"] for r in records} == {"lodo"}
    trained = [r for r in records if r["strategy"] in STRATEGIES and r["held_out"] is not None]
    for task, domains in (
        ("task1", {"colorectum", "pancreas", "stomach"}),
        ("task2", {"3d-1000", "kfbio-400", "teksqray-600p"}),
    ):
        units = {
            (r["strategy"], r["held_out"], r["seed"])
            for r in trained
            if r["task"] == task and {i["domain"] for i in r["images"]} == {r["held_out"]}
        }
        assert units == {(s, d, k) for s in STRATEGIES for d in domains for k in (0, 1)}
        assert {r["steps"] for r in trained if r["task"] == task} == {1 * 2}  # ci: 2 per epoch
    assert (out / run_name("task1", "cross-task", "lodo", 1) / "fold2" / "model.pt").is_file()
    assert "protocol lodo · budget equal-steps · seeds 0, 1" in (out / "table.md").read_text()


def test_lodo_on_a_training_set_alone(make_cosas_tree, tmp_path, capsys):
    """The real COSAS training set has no TestSet: lodo still scores each scanner unseen."""
    data = make_cosas_tree(
        {"task2": {"3d-1000": 3, "kfbio-400": 3, "teksqray-600p": 3}}, size=(64, 64)
    )
    out = tmp_path / "cosas"
    argv = ["experiment", "--data", str(data), "--profile", "ci", "--out", str(out)]
    options = ["--protocol", "lodo", "--tasks", "task2", "--strategies", "standard"]
    assert main([*argv, *options, "--epochs", "1", "--quiet"]) == 0
    records = read_records(out / "results.jsonl")
    model = [r for r in records if r["strategy"] == "standard"]
    assert sorted(r["held_out"] for r in model) == ["3d-1000", "kfbio-400", "teksqray-600p"]
    assert all(r["split"] == "test" for r in model)
    for record in model:
        assert {i["domain"] for i in record["images"]} == {record["held_out"]}
    assert "3d-1000" in capsys.readouterr().out  # the printed table has the held-out columns
    # a one-task tree cannot train the strategies that need the other task
    assert main([*argv, "--protocol", "lodo", "--strategies", "union", "--resume"]) == 0
    assert "skipping union on task2: the data holds no task1" in capsys.readouterr().out
