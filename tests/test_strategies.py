"""Integration: every strategy on both tasks, end to end on tiny synthetic data."""

import json
import shutil

import pytest

from cosas_tutorial.cli import main
from cosas_tutorial.config import get_profile
from cosas_tutorial.experiment import run_experiment, run_name, train_run
from cosas_tutorial.results import read_records, score_table
from cosas_tutorial.strategies import STRATEGIES, get_strategy


def test_registry_and_stages():
    assert set(STRATEGIES) == {"standard", "union", "cross-task"}
    mine, other = ["a1", "a2"], ["b1"]
    assert [(s.name, s.samples) for s in get_strategy("standard").stages(mine, other)] == [
        ("train", ("a1", "a2"))
    ]
    assert get_strategy("union").stages(mine, other)[0].samples == ("a1", "a2", "b1")
    assert [(s.name, s.samples) for s in get_strategy("cross-task").stages(mine, other)] == [
        ("pretrain", ("b1",)),
        ("finetune", ("a1", "a2")),
    ]
    with pytest.raises(ValueError, match="unknown strategy"):
        get_strategy("mixup")


@pytest.fixture(scope="module")
def experiment(tiny_synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    config = get_profile("ci", epochs=1)
    return out, run_experiment(tiny_synthetic, config, out, progress=False)


def test_experiment_records_every_strategy_task_and_domain(experiment, tiny_synthetic):
    out, records = experiment
    assert read_records(out / "results.jsonl") == json.loads(json.dumps(records))
    seen = {(r["task"], r["strategy"], r["split"]) for r in records}
    for task in ("task1", "task2"):
        for strategy in ("standard", "union", "cross-task", "all-tumour", "all-background"):
            assert {(task, strategy, "cv"), (task, strategy, "test")} <= seen
    for record in records:
        assert record["profile"] == "ci" and record["seed"] == 0
        assert all(0 <= row["score"] <= 1 for row in record["images"])
        if record["split"] == "cv" and record["strategy"] == "cross-task":
            assert [h["stage"] for h in record["history"]] == ["pretrain", "finetune"]
    test_domains = {
        i["domain"] for r in records if r["split"] == "test" and r["task"] == "task2"
        for i in r["images"]
    }  # fmt: skip
    assert test_domains == {"3d-250", "leica-450", "motic"}
    table = score_table(records)
    assert len(table) == 10 and "unseen (all)" in table.columns


def test_all_tumour_baseline_matches_its_definition(experiment):
    _, records = experiment
    for record in records:
        if record["strategy"] == "all-background":
            for row in record["images"]:  # only tumour-free tiles score, and they score 1
                assert row["score"] == (1.0 if row["tumour_fraction"] == 0 else 0.0)


def test_resume_reads_back_only_the_same_run_and_finishes_its_evaluation(
    experiment, tiny_synthetic, tmp_path
):
    out, _ = experiment
    run = tmp_path / run_name("task1", "standard")
    shutil.copytree(out / run_name("task1", "standard"), run)
    records_file, model_file = run / "records.jsonl", run / "fold0" / "model.pt"
    lines = records_file.read_text().splitlines()
    cv_only = "\n".join(line for line in lines if json.loads(line)["split"] == "cv") + "\n"
    records_file.write_text(cv_only)  # as if stopped after training, before evaluation
    trained = model_file.stat().st_mtime_ns

    other = get_profile("ci", epochs=2)
    with pytest.raises(FileExistsError, match=r"config\.epochs differ"):
        run_experiment(
            tiny_synthetic, other, tmp_path, ["standard"], ["task1"], resume=True, progress=False
        )
    assert records_file.read_text() == cv_only  # refused without touching the run

    same = get_profile("ci", epochs=1)
    records = run_experiment(
        tiny_synthetic, same, tmp_path, ["standard"], ["task1"], resume=True, progress=False
    )
    splits = [r["split"] for r in records if r["strategy"] == "standard"]
    assert splits == ["cv", "test"]  # read back, then evaluated on the held-out domains
    assert [r["split"] for r in read_records(records_file)] == ["cv", "test"]
    assert model_file.stat().st_mtime_ns == trained  # not trained again


def test_single_task_tree_runs_standard_but_not_union(tiny_synthetic, tmp_path):
    only_task2 = tmp_path / "only-task2"
    for split in ("COSAS24-TrainingSet", "COSAS24-TestSet"):
        (only_task2 / split).mkdir(parents=True)
        (only_task2 / split / "task2").symlink_to(tiny_synthetic / split / "task2")
    config = get_profile("ci", epochs=1)
    records = train_run(only_task2, "task2", "standard", config, tmp_path / "run", progress=False)
    assert records[0]["split"] == "cv"
    with pytest.raises(ValueError, match="needs task1"):
        train_run(only_task2, "task2", "union", config, tmp_path / "run2", progress=False)


def test_cli_train_evaluate_and_refusals(tiny_synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tiny_synthetic),
        "--task",
        "task1",
        "--strategy",
        "standard",
        "--profile",
        "ci",
        "--epochs",
        "1",
        "--out",
        str(run),
        "--quiet",
    ]
    assert main(args) == 0
    assert main(args) == 2  # an existing run is never overwritten
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0  # finished folds are resumed, not retrained
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(run),
                "--data",
                str(tiny_synthetic),
                "--tta",
                "--json",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    assert evaluation[0]["split"] == "test" and evaluation[0]["config"]["tta"] is True
    printed = capsys.readouterr().out
    assert all(image["domain"] in printed for image in evaluation[0]["images"])


def test_a_new_strategy_is_one_class(tiny_synthetic, tmp_path, request, capsys):
    """Registered in one class, a strategy is a choice of the command line, a row of the
    tables and a bar of scores.png in a colour of its own; its loss is the one trained."""
    from cosas_tutorial import cli, strategies
    from cosas_tutorial.viz import colour, plot_strategy_scores

    request.addfinalizer(lambda: strategies.STRATEGIES.pop("finetune-first", None))
    losses = []

    @strategies.register
    class Reversed(strategies.Strategy):
        name = "finetune-first"
        uses_other_task = True
        description = "this task first, then the other one"

        def stages(self, fold_train, other_task):
            return [
                strategies.Stage("mine", tuple(fold_train)),
                strategies.Stage("other", tuple(other_task)),
            ]

        def loss(self, logits, masks):
            losses.append(logits.shape)
            return super().loss(logits, masks)

    with pytest.raises(SystemExit):
        cli.main(["experiment", "--help"])  # the choices are read from the registry
    assert "finetune-first" in capsys.readouterr().out
    out = tmp_path / "grid"
    argv = ["experiment", "--data", str(tiny_synthetic), "--profile", "ci", "--out", str(out)]
    assert cli.main([*argv, "--strategies", "finetune-first", "--tasks", "task2", "--quiet"]) == 0
    assert losses and all(shape[1] == 1 for shape in losses)  # the strategy's loss was trained
    records = read_records(out / "results.jsonl")
    assert {h["stage"] for r in records for h in r["history"]} == {"mine", "other"}
    table = score_table(records)
    assert table["strategy"].tolist() == ["finetune-first", "all-tumour", "all-background"]
    assert colour("finetune-first") not in {colour(s) for s in ("standard", "union", "cross-task")}
    assert (out / "scores.png").stat().st_size > 5_000
    legend = plot_strategy_scores(records).axes[-1].get_legend().get_texts()
    assert "finetune-first" in [text.get_text() for text in legend]
    with pytest.raises(ValueError, match="name of its own"):
        strategies.register(type("Again", (strategies.Standard,), {}))
