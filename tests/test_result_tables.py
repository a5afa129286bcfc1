"""The tables and curves that chapters 3–5 and 8 build from run records (no training here)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from cosas_tutorial.config import get_profile
from cosas_tutorial.results import (
    CHALLENGE_WINNER,
    PAPER_DICE,
    image_means,
    mean_interval,
    overall_scores,
    paired_differences,
    paired_summary,
    paper_comparison,
)
from cosas_tutorial.viz import plot_strategy_scores, plot_training_curves


def record(strategy, split, scores, task="task1", history=None, domain="colorectum"):
    images = [
        {"id": f"tile{i}", "domain": domain, "dice": s, "iou": s, "score": s}
        for i, s in enumerate(scores)
    ]
    config = get_profile("ci").to_dict()
    return {
        "task": task,
        "strategy": strategy,
        "fold": 0,
        "split": split,
        "config": config,
        "history": history or [],
        "images": images,
    }


@pytest.fixture
def records():
    return [
        record("standard", "cv", [0.6, 0.8]),
        record("union", "cv", [0.7, 0.5]),
        record("all-tumour", "cv", [0.5, 0.4]),
        record("all-background", "cv", [0.0, 1.0]),
        record("standard", "test", [0.2], domain="duodenum"),
        record("all-tumour", "test", [0.3], domain="duodenum"),
        record("all-background", "test", [0.0], domain="duodenum"),
    ]


def test_overall_scores_margin_is_over_the_better_trivial_predictor(records):
    table = overall_scores(records).set_index(["split", "strategy"])
    assert table.loc[("cv", "standard"), "mean"] == pytest.approx(0.7)
    # in CV, all-background (mean 0.5) beats all-tumour (0.45)
    assert table.loc[("cv", "standard"), "best_trivial"] == pytest.approx(0.5)
    assert table.loc[("cv", "standard"), "margin"] == pytest.approx(0.2)
    assert table.loc[("test", "standard"), "margin"] == pytest.approx(-0.1)
    assert list(table.loc["cv"].index) == ["standard", "union", "all-tumour", "all-background"]


def test_paired_differences_pair_the_same_images(records):
    paired = paired_differences(records, "union", "standard")
    assert list(paired["id"]) == ["tile0", "tile1"]  # the test image has no union score
    assert paired["difference"].tolist() == pytest.approx([0.1, -0.3])


def test_held_out_images_count_once_whatever_the_number_of_folds():
    def fold(strategy, k, scores):
        return {**record(strategy, "test", scores, domain="duodenum"), "fold": k}

    records = [
        fold("union", 0, [0.9, 0.4]),
        fold("union", 1, [0.1, 0.4]),
        fold("standard", 0, [0.5, 0.2]),
        fold("standard", 1, [0.5, 0.2]),
    ]
    means = image_means(records).set_index(["strategy", "id"])["value"]
    assert means[("union", "tile0")] == pytest.approx(0.5)
    paired = paired_differences(records, "union", "standard")
    assert paired["difference"].tolist() == pytest.approx([0.0, 0.2])


def test_paired_summary_tells_apart_what_the_means_cannot():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0.2, 0.9, size=40)  # most of the spread: how hard each tile is
    standard = record("standard", "test", difficulty.tolist(), domain="duodenum")
    union = record("union", "test", (difficulty + 0.03).tolist(), domain="duodenum")
    _, low_standard, high_standard = mean_interval(difficulty)
    _, low_union, _ = mean_interval(difficulty + 0.03)
    assert low_union < high_standard  # the two means' intervals overlap
    summary = paired_summary(paired_differences([standard, union], "union", "standard"))
    row = summary.loc[("task1", "test")]
    assert row["mean"] == pytest.approx(0.03)
    assert 0 < row["ci_low"] <= row["ci_high"]  # yet every tile gained: told apart
    assert (row["better"], row["worse"], row["images"]) == (40, 0, 40)


def test_paired_summary_resamples_images_not_image_seed_rows():
    """Two seeds of the same 20 images: the interval is that of 20 images, each image's
    difference averaged over the seeds, not of 40 independent rows."""
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0.2, 0.9, size=20)
    gains = {0: rng.normal(0.02, 0.05, 20), 1: rng.normal(0.02, 0.05, 20)}
    records = []
    for seed, gain in gains.items():
        records += [
            {**record("standard", "test", difficulty.tolist(), domain="d"), "seed": seed},
            {**record("union", "test", (difficulty + gain).tolist(), domain="d"), "seed": seed},
        ]
    paired = paired_differences(records, "union", "standard")
    assert len(paired) == 40 and set(paired["seed"]) == {0, 1}
    row = paired_summary(paired).loc[("task1", "test")]
    assert (row["images"], row["seeds"]) == (20, 2)
    per_image = (gains[0] + gains[1]) / 2
    per_image = per_image[sorted(range(20), key=lambda i: f"tile{i}")]  # the table's image order
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(mean_interval(per_image))


def test_paper_comparison_labels_published_rows_and_adds_ours(records):
    table = paper_comparison(records)
    published = table[table["source"].str.contains("published")]
    assert len(published) == 2
    cv_mean, cv_std = PAPER_DICE["task1"]["cv"]
    assert f"{cv_mean:.2f} ± {cv_std:.2f}" in published["Dice % CV"].tolist()
    assert f"{CHALLENGE_WINNER['task1']:.3f}" in published["score unseen"].tolist()
    ours = table.set_index("source")
    assert ours.loc["ours: standard", "Dice % CV"] == "70.0 ± 10.0"
    assert ours.loc["ours: union", "Dice % unseen"] == "–"
    assert ours.loc["ours: standard", "score unseen"] == "0.200 ± 0.000"


def test_training_curves_draw_every_stage():
    history = [
        {"stage": stage, "epoch": e, "loss": 1.0 / e, "lr_end": 0.0}
        for stage in ("pretrain", "finetune")
        for e in (1, 2)
    ]
    fig = plot_training_curves(
        [record("cross-task", "cv", [0.5], history=history), record("all-tumour", "cv", [0.4])]
    )
    loss_axis = fig.axes[0]
    assert len(loss_axis.lines[0].get_xdata()) == 4  # both stages, end to end
    assert any(line.get_linestyle() == ":" for line in loss_axis.lines)  # the stage boundary
    assert len(fig.axes) == 2  # the learning-rate axis
    with pytest.raises(ValueError, match="no training history"):
        plot_training_curves([record("all-tumour", "cv", [0.4])])


def test_mean_interval_brackets_the_mean_and_narrows_with_more_images():
    rng = np.random.default_rng(1)
    few, many = rng.uniform(size=10), rng.uniform(size=1000)
    mean, low, high = mean_interval(few)
    assert mean == pytest.approx(few.mean())
    assert few.min() <= low < mean < high <= few.max()
    assert mean_interval(few) == (mean, low, high)  # seeded
    _, low_many, high_many = mean_interval(many)
    assert high_many - low_many < (high - low) / 3  # ~1/sqrt(n): 10x fewer images, ~3x wider
    assert mean_interval([0.4]) == (0.4, 0.4, 0.4)
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])


def test_score_whiskers_stay_inside_the_score_range():
    # Mostly perfect, a few failures: mean ± std would reach above 1.
    scores = [1.0] * 18 + [0.0, 0.1]
    assert np.mean(scores) + np.std(scores) > 1
    fig = plot_strategy_scores([record("standard", "cv", scores)])
    ax = fig.axes[0]
    (whisker,) = [c for c in ax.collections if c.get_segments()]  # the error bar's line
    (segment,) = whisker.get_segments()
    _, low, high = mean_interval(scores)
    assert segment[:, 1] == pytest.approx([low, high])
    assert 0 <= low < np.mean(scores) < high <= 1
    assert "95 % CI" in ax.get_ylabel()
    plt.close(fig)
