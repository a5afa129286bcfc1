"""The stain × TTA × strategy ablation: the table has every row and every unseen domain."""

from __future__ import annotations

import json

import pytest

from cosas_tutorial.ablation import (
    ablation_effects,
    ablation_table,
    evenly_spaced,
    plot_ablation,
    run_ablation,
)
from cosas_tutorial.cli import main
from cosas_tutorial.config import get_profile
from cosas_tutorial.data.cosas import discover
from cosas_tutorial.experiment import evaluate_run
from cosas_tutorial.results import read_records
from cosas_tutorial.stain import NORMALISER_FILE


def test_tiny_ablation_on_held_out_domains(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "ablation"
    argv = ["ablation", "--data", str(tiny_synthetic), "--profile", "ci", "--out", str(out)]
    options = ["--tasks", "task1", "--epochs", "1", "--quiet"]
    assert main([*argv, *options]) == 0
    assert "TTA on − off" in capsys.readouterr().out

    records = read_records(out / "ablation.jsonl")
    table = ablation_table(records)
    unseen = sorted({s.domain for s in discover(tiny_synthetic) if s.split == "test"} & {
        "esophagus", "duodenum"})  # fmt: skip
    assert list(table.columns) == ["task", "strategy", "stain", "TTA", *unseen, "unseen (all)"]
    rows = list(zip(table["strategy"], table["stain"], table["TTA"]))
    expected = [
        (strategy, stain, tta)
        for strategy in ("standard", "cross-task")
        for stain in ("none", "hed", "macenko")
        for tta in ("off", "on")
    ] + [("all-tumour", "–", "–"), ("all-background", "–", "–")]
    assert rows == expected
    assert (table[unseen] != "–").all().all()
    assert (
        table.loc[table["strategy"] == "all-background", "unseen (all)"].item().startswith("0.000")
    )
    markdown = (out / "ablation.md").read_text()
    assert "| standard" in markdown and "macenko − none" in markdown

    # Macenko runs keep their reference; the stain settings reached the run configuration
    run = out / "runs" / "task1-standard-macenko"
    assert (run / "fold0" / NORMALISER_FILE).is_file()
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["stain_norm"] == "macenko" and config["stain_aug"] == "none"
    # `cosas evaluate` reloads the saved normaliser: its scores are the ablation's, TTA off
    evaluated = evaluate_run(run, tiny_synthetic, tta=False)[0]["images"]
    ablated = next(
        r["images"]
        for r in records
        if r["strategy"] == "standard" and r["stain"] == "macenko" and not r["tta"]
    )
    assert [i["score"] for i in evaluated] == [i["score"] for i in ablated]
    hed = json.loads((out / "runs" / "task1-cross-task-hed" / "run.json").read_text())["config"]
    assert hed["stain_aug"] == "hed" and hed["stain_norm"] == "none"

    effects = ablation_effects(records)
    assert set(effects["change"]) == {
        "TTA on − off",
        "hed − none",
        "macenko − none",
        "cross-task − standard",
    }
    assert plot_ablation(records).axes

    # --resume reuses every finished run
    again = run_ablation(
        tiny_synthetic, get_profile("ci", epochs=1), out, ["task1"], resume=True, progress=False
    )
    assert len(again) == len(records)
    with pytest.raises(FileExistsError, match="another configuration"):
        run_ablation(tiny_synthetic, get_profile("ci"), out, ["task1"], resume=True)


# random-noise tiles are no H&E: Macenko finds no two stains there, warns and leaves them be
@pytest.mark.filterwarnings("ignore:no stain statistics", "ignore:stain normalisation skipped")
def test_leave_one_source_out_on_a_single_task_tree(make_cosas_tree, tmp_path, capsys):
    data = make_cosas_tree({"task1": {"a": 4, "b": 4, "c": 4}}, size=(48, 40))
    config = get_profile("ci", epochs=1, steps_per_epoch=1)
    out = tmp_path / "loso"
    records = run_ablation(
        data, config, out, stains=("none", "macenko"), limit=3, held_out=["b", "c"]
    )
    assert "skipping cross-task" in capsys.readouterr().out
    table = ablation_table(records)
    assert list(table.columns[4:]) == ["b", "c", "unseen (all)"]
    assert len(table) == 2 * 2 + 2  # standard × {none, macenko} × TTA, and the two baselines
    assert {r["protocol"] for r in records} == {"loso"}
    # each held-out source is unseen once per model and TTA setting, with `limit` tiles, and
    # trained on the other sources only
    plain = [r for r in records if r["strategy"] == "standard" and r["stain"] == "none"]
    plain = [r for r in plain if not r["tta"]]
    domains = sorted(image["domain"] for r in plain for image in r["images"])
    assert domains == sorted("bc" * 3)
    tree = out / "trees" / "task1-loso-b"
    assert {(s.split, s.domain) for s in discover(tree)} == {
        ("train", "a"), ("train", "c"), ("test", "b")}  # fmt: skip
    assert len(discover(tree)) == 3 * 3
    with pytest.raises(ValueError, match="fewer tiles per domain"):
        run_ablation(data, config, tmp_path / "x", limit=2)


def test_evenly_spaced():
    assert evenly_spaced(range(10), 3) == [0, 4, 9]
    assert evenly_spaced([1, 2], None) == [1, 2] and evenly_spaced([1, 2], 5) == [1, 2]
