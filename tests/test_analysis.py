"""cosas_tutorial.analysis on small hand-made arrays whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cosas_tutorial import analysis
from cosas_tutorial.config import get_profile
from cosas_tutorial.data.acquisition import REFERENCE, Acquisition, render
from cosas_tutorial.evaluate import baseline_rows, image_scores
from cosas_tutorial.stain import angle_degrees


def _two_stain_tile(stain_od: np.ndarray, seed: int = 0) -> np.ndarray:
    """Half the tile haematoxylin, half eosin, rendered without blur, noise or white offset."""
    rng = np.random.default_rng(seed)
    acq = Acquisition(
        stain_od=stain_od,
        gamma=(1, 1, 1),
        blur_sigma=0,
        noise_std=0,
        jpeg_quality=None,
        white=(1, 1, 1),
    )
    conc = rng.uniform(0.0, 0.08, (64, 64, 2)).astype(np.float32)
    conc[:32, :, 0] += rng.uniform(0.2, 0.8, (32, 64))
    conc[32:, :, 1] += rng.uniform(0.2, 0.8, (32, 64))
    return render(conc, acq, rng)


def test_colour_stats_averages_tissue_only():
    image = np.full((10, 10, 3), 255, np.uint8)
    image[:5] = (100, 50, 150)  # glass elsewhere is ignored
    stats = analysis.colour_stats(image)
    assert stats["tissue_fraction"] == pytest.approx(0.5)
    assert (stats["R"], stats["G"], stats["B"]) == pytest.approx((100, 50, 150))
    assert stats["OD_G"] == pytest.approx(-math.log(50 / 255), rel=1e-5)
    # purple tissue: more haematoxylin than eosin would give a pinker one
    pink = np.full((10, 10, 3), (230, 120, 190), np.uint8)
    assert stats["H"] > analysis.colour_stats(pink)["H"]


@pytest.mark.parametrize("seed", [0, 1])
def test_stain_vectors_recover_the_rendering_matrix(seed):
    image = _two_stain_tile(REFERENCE.stain_od, seed)
    h, e = analysis.stain_vectors(image)
    assert angle_degrees(h, REFERENCE.stain_od[0]) < 3
    assert angle_degrees(e, REFERENCE.stain_od[1]) < 3
    assert np.linalg.norm(h) == pytest.approx(1) and h[0] > e[0]


def test_stain_vectors_follow_a_changed_stain():
    bluer = REFERENCE.stain_od.copy()
    bluer[0] = np.array([0.80, 0.55, 0.24]) / np.linalg.norm([0.80, 0.55, 0.24])
    h, _ = analysis.stain_vectors(_two_stain_tile(bluer))
    assert angle_degrees(h, bluer[0]) < 3
    assert angle_degrees(h, REFERENCE.stain_od[0]) > 8


def test_stain_vectors_refuse_a_blank_tile():
    with pytest.raises(ValueError, match="too few"):
        analysis.stain_vectors(np.full((32, 32, 3), 250, np.uint8))


def test_tile_features_and_separability():
    rng = np.random.default_rng(0)
    pink = [np.clip(rng.normal((220, 130, 190), 12, (16, 16, 3)), 0, 255) for _ in range(8)]
    blue = [np.clip(rng.normal((130, 110, 200), 12, (16, 16, 3)), 0, 255) for _ in range(8)]
    images = [a.astype(np.uint8) for a in pink + blue]
    features = analysis.tile_features(images, bins=8)
    assert features.shape == (16, 3 * 8 + 6)
    assert features[:, :8].sum(axis=1) == pytest.approx(np.ones(16))  # a red histogram each
    coords = analysis.embed(features)
    assert coords.shape == (16, 2)
    # the first component separates the two colours
    assert np.sign(coords[:8, 0]).tolist() != np.sign(coords[8:, 0]).tolist()
    labels = ["pink"] * 8 + ["blue"] * 8
    separable = analysis.domain_separability(features, labels, folds=4)
    assert separable["accuracy"] == pytest.approx(1.0)
    assert separable["chance"] == pytest.approx(0.5)
    # same distribution under two names: no better than chance on average
    same = [
        np.clip(rng.normal((200, 120, 190), 15, (16, 16, 3)), 0, 255).astype(np.uint8)
        for _ in range(40)
    ]
    shuffled = analysis.domain_separability(
        analysis.tile_features(same, bins=8), ["a", "b"] * 20, folds=5
    )
    assert shuffled["accuracy"] < 0.8
    with pytest.raises(ValueError, match="two domains"):
        analysis.domain_separability(features, ["x"] * 16)


def test_error_overlay_colours_each_kind():
    image = np.full((2, 2, 3), 100, np.uint8)
    prediction = np.array([[1, 1], [0, 0]])
    mask = np.array([[1, 0], [1, 0]])
    out = analysis.error_overlay(image, prediction, mask, alpha=1.0)
    assert tuple(out[0, 0]) == analysis.ERROR_COLOURS["tp"]
    assert tuple(out[0, 1]) == analysis.ERROR_COLOURS["fp"]
    assert tuple(out[1, 0]) == analysis.ERROR_COLOURS["fn"]
    assert tuple(out[1, 1]) == (100, 100, 100)  # true negative untouched
    with pytest.raises(ValueError, match="same height"):
        analysis.error_overlay(image, prediction[:1], mask)


def test_error_counts():
    counts = analysis.error_counts(np.array([[1, 1], [0, 0]]), np.array([[1, 0], [1, 0]]))
    assert counts == {
        "tp": 0.25,
        "fp": 0.25,
        "fn": 0.25,
        "tn": 0.25,
        "predicted_fraction": 0.5,
        "tumour_fraction": 0.5,
    }


def test_all_tumour_score_matches_the_baseline(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 2}})
    from cosas_tutorial.data.cosas import discover

    rows = baseline_rows(discover(root), "all-tumour")
    for row in rows:
        assert analysis.all_tumour_score(row["tumour_fraction"]) == pytest.approx(row["score"])
    assert analysis.all_tumour_score(0.0) == 0.0
    assert analysis.all_tumour_score(1.0) == pytest.approx(1.0)
    assert analysis.all_tumour_score(np.array([0.0, 0.5])) == pytest.approx(
        [0.0, (2 / 3 + 0.5) / 2]
    )


def test_threshold_sweep():
    probability = np.array([[0.9, 0.6], [0.4, 0.1]])
    mask = np.array([[1, 1], [0, 0]])
    sweep = analysis.threshold_sweep([probability], [mask], [0.05, 0.5, 0.95])
    assert list(sweep["threshold"]) == [0.05, 0.5, 0.95]
    assert sweep.loc[1, "score"] == pytest.approx(1.0)  # 0.5 separates perfectly
    low = image_scores(probability > 0.05, mask)
    assert sweep.loc[0, "dice"] == pytest.approx(low["dice"])
    assert sweep.loc[2, "score"] == pytest.approx(image_scores(probability > 0.95, mask)["score"])
    assert sweep["score"].idxmax() == 1
    with pytest.raises(ValueError):
        analysis.threshold_sweep([probability], [], [0.5])


def test_reliability_and_ece():
    # bin [0.2, 0.3): predicts 0.25, 1 of 4 pixels tumour -> calibrated
    # bin [0.9, 1.0]: predicts 0.95 and 1.0, 1 of 2 pixels tumour -> over-confident
    prob = np.array([0.25, 0.25, 0.25, 0.25, 0.95, 1.0])
    true = np.array([1, 0, 0, 0, 1, 0])
    table = analysis.reliability([prob[:3], prob[3:]], [true[:3], true[3:]], bins=10)
    assert len(table) == 10 and table["count"].sum() == 6
    assert table.loc[2, "confidence"] == pytest.approx(0.25)
    assert table.loc[2, "frequency"] == pytest.approx(0.25)
    assert table.loc[9, "count"] == 2  # 1.0 falls in the last bin
    assert table.loc[9, "frequency"] == pytest.approx(0.5)
    assert math.isnan(table.loc[0, "confidence"])
    ece = analysis.expected_calibration_error(table)
    assert ece == pytest.approx(2 / 6 * abs(0.5 - 0.975))
    perfect = analysis.reliability([np.array([0.0, 1.0])], [np.array([0, 1])], bins=5)
    assert analysis.expected_calibration_error(perfect) == pytest.approx(0.0)


def _record(task, strategy, split, scores, domain="d"):
    images = [
        {"id": str(i), "domain": domain, "dice": s, "iou": s, "score": s}
        for i, s in enumerate(scores)
    ]
    return {"task": task, "strategy": strategy, "fold": 0, "split": split, "images": images}


def test_best_strategy_is_chosen_on_in_domain_scores():
    records = [
        _record("task2", "standard", "cv", [0.6, 0.8]),
        _record("task2", "standard", "test", [0.2]),
        _record("task2", "cross-task", "cv", [0.5, 0.5]),
        _record("task2", "cross-task", "test", [0.9]),
        _record("task2", "all-background", "cv", [1.0, 1.0]),
        _record("task1", "union", "cv", [0.99]),
    ]
    # selection by in-domain CV only: the unseen score and the baselines do not count
    assert analysis.best_strategy(records, "task2") == "standard"
    assert analysis.best_strategy(records, "task1") == "union"
    with pytest.raises(ValueError):
        analysis.best_strategy(records[4:5], "task2")


def test_run_images_match_the_baseline_records(tiny_synthetic):
    from cosas_tutorial.experiment import baseline_records, run_images

    config = get_profile("ci")
    images = run_images(tiny_synthetic, "task2", config)
    records = baseline_records(tiny_synthetic, "task2", config)
    cv = next(r for r in records if r["split"] == "cv")
    assert [row["id"] for row in cv["images"]] == [s.id for s in images["cv"]]
    assert {s.domain for s in images["test"]} == {"3d-250", "leica-450", "motic"}
    tiles = analysis.read_tiles(images["test"][:4], max_side=64)
    assert all(max(t.image.shape[:2]) <= 64 and t.mask.shape == t.image.shape[:2] for t in tiles)
    stats = analysis.domain_colour_stats(tiles)
    assert isinstance(stats, pd.DataFrame) and len(stats) == 4
    assert {"R", "OD_B", "H", "E", "tumour_fraction"} <= set(stats.columns)
    assert list(stats["id"]) == [s.id for s in images["test"][:4]]
    vectors = analysis.domain_stain_vectors(tiles)
    assert len(vectors) == 4 and (vectors["H_R"] > vectors["E_R"]).all()
