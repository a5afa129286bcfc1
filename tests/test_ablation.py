"""The stain × TTA × strategy ablation: the table has every row and every unseen domain."""

from __future__ import annotations

import json

import pytest

from cosas_tutorial.ablation import (
    ablation_effects,
    ablation_table,
    evenly_spaced,
    run_ablation,
    runs_not_learnt,
)
from cosas_tutorial.cli import main
from cosas_tutorial.config import get_profile
from cosas_tutorial.data.cosas import discover
from cosas_tutorial.experiment import evaluate_run, run_name
from cosas_tutorial.results import read_records
from cosas_tutorial.stain import NORMALISER_FILE
from cosas_tutorial.viz import plot_ablation


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
    cv = "in-domain (CV)"
    assert list(table.columns) == ["task", "strategy", "stain", "TTA", cv, *unseen, "unseen (all)"]
    rows = list(zip(table["strategy"], table["stain"], table["TTA"]))
    expected = [
        (strategy, stain, tta)
        for strategy in ("standard", "cross-task")
        for stain in ("none", "hed", "macenko")
        for tta in ("off", "on")
    ] + [("all-tumour", "–", "–"), ("all-background", "–", "–")]
    assert rows == expected
    assert (table[unseen] != "–").all().all()
    # in-domain CV is scored without TTA: a number on TTA-off and baseline rows only
    assert ((table[cv] == "–") == (table["TTA"] == "on")).all()
    assert (
        table.loc[table["strategy"] == "all-background", "unseen (all)"].item().startswith("0.000")
    )
    markdown = (out / "ablation.md").read_text()
    assert "| standard" in markdown and "macenko − none" in markdown
    assert "budget equal-steps · seeds 0 · profile ci)" in markdown  # what made the runs

    # Macenko runs keep their reference; the stain settings reached the run configuration
    run = out / "macenko" / "task1" / run_name("task1", "standard")
    assert (run / "fold0" / NORMALISER_FILE).is_file()
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["stain_norm"] == "macenko" and config["stain_aug"] == "none"
    # `cosas evaluate` reloads the saved normaliser: its scores are the ablation's, TTA off
    evaluated = evaluate_run(run, tiny_synthetic, tta=False)[0]["images"]
    ablated = next(
        r["images"]
        for r in records
        if r["strategy"] == "standard" and r["stain"] == "macenko" and not r["tta"]
        and r["split"] == "test"
    )  # fmt: skip
    assert [i["score"] for i in evaluated] == [i["score"] for i in ablated]
    hed_run = out / "hed" / "task1" / run_name("task1", "cross-task")
    hed = json.loads((hed_run / "run.json").read_text())["config"]
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
def test_leave_one_domain_out_on_a_single_task_tree(make_cosas_tree, tmp_path, capsys):
    data = make_cosas_tree({"task1": {"a": 4, "b": 4, "c": 4}}, size=(48, 40))
    config = get_profile("ci", epochs=1, steps_per_epoch=1)
    out = tmp_path / "lodo"
    records = run_ablation(
        data, config, out, stains=("none", "macenko"), limit=3, held_out=["b"], seeds=2
    )
    assert "skipping cross-task" in capsys.readouterr().out
    table = ablation_table(records)
    assert list(table.columns[4:]) == ["b", "unseen (all)"]  # no in-domain images under lodo
    assert len(table) == 2 * 2 + 2  # standard × {none, macenko} × TTA, and the two baselines
    assert {r["protocol"] for r in records} == {"lodo"}
    runs = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("*/task1/*/run.json"))
    assert runs == [
        f"{stain}/task1/{run_name('task1', 'standard', 'lodo', seed)}"
        for stain in ("macenko", "none") for seed in (0, 1)]  # fmt: skip
    # the held-out source is unseen once per model, seed and TTA setting, with `limit` tiles
    plain = [r for r in records if r["strategy"] == "standard" and r["stain"] == "none"]
    plain = [r for r in plain if not r["tta"] and r["split"] == "test"]
    assert sorted(r["seed"] for r in plain) == [0, 1]
    assert [image["domain"] for r in plain for image in r["images"]] == ["b"] * 6
    effects = ablation_effects(records).set_index("change")
    assert effects.loc["macenko − none", "pairs"] == 2 * 2 * 3  # seeds × TTA × tiles
    assert {r["held_out"] for r in records if r["strategy"] == "standard"} == {"b"}
    assert len(discover(out / "tree")) == 3 * 3  # `limit` tiles of every domain
    with pytest.raises(ValueError, match="fewer tiles per domain"):
        run_ablation(data, config, tmp_path / "x", limit=2)


def test_evenly_spaced():
    assert evenly_spaced(range(10), 3) == [0, 4, 9]
    assert evenly_spaced([1, 2], None) == [1, 2] and evenly_spaced([1, 2], 5) == [1, 2]


def test_runs_not_learnt_compares_in_domain_scores_with_the_trivial_predictors():
    def record(strategy, stain, split, scores, tta=False):
        images = [
            {"domain": "d", "id": str(i), "dice": v, "iou": v, "score": v}
            for i, v in enumerate(scores)
        ]
        return {"task": "task1", "strategy": strategy, "stain": stain, "tta": tta, "seed": 0,
                "fold": 0, "split": split, "images": images}  # fmt: skip

    records = [
        record("standard", "none", "cv", [0.6, 0.8]),
        record("standard", "macenko", "cv", [0.1, 0.2]),
        record("standard", "none", "test", [0.5, 0.5]),
        record("all-tumour", "–", "cv", [0.4, 0.5]),
        record("all-background", "–", "cv", [0.0, 1.0]),
    ]
    failed = runs_not_learnt(records)
    assert failed[["strategy", "stain", "images"]].values.tolist() == [
        ["standard", "macenko", "in-domain (CV)"]
    ]
    assert failed["trivial"].item() == 0.5
    # without in-domain images (lodo), the unseen ones decide
    unseen = [{**r, "split": "test"} for r in records if r["split"] == "cv"]
    assert runs_not_learnt(unseen)["images"].tolist() == ["unseen (all)"]
