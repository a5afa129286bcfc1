"""The synthetic tier: tiles, the COSAS layout on disk, determinism, shift, safety."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from PIL import Image
from scipy.stats import rankdata

from cosas_tutorial.data import synthetic
from cosas_tutorial.data.acquisition import REFERENCE, scanner
from cosas_tutorial.data.drawing import Nuclei
from cosas_tutorial.data.layout import TEST_DIR, TRAIN_DIR
from cosas_tutorial.data.synthetic import (
    BREAST,
    DOMAINS,
    ORGAN_DOMAINS,
    ORGAN_LAB,
    ORGANS,
    SCANNER_DOMAINS,
    SPLITS,
    domain_profile,
    generate,
    synthesize,
    tile_id,
)
from cosas_tutorial.data.tissue import BreastCarcinoma, GlandularCarcinoma


def _od(rgb: np.ndarray) -> np.ndarray:
    return -np.log10(np.maximum(rgb.astype(np.float64), 1.0) / 255.0)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "tree", tiles=2, size=64, seed=3)


def test_domain_names():
    assert ORGAN_DOMAINS == {
        "train": ("colorectum", "pancreas", "stomach"),
        "test": ("esophagus", "duodenum"),
    }
    assert SCANNER_DOMAINS == {
        "train": ("3d-1000", "kfbio-400", "teksqray-600p"),
        "test": ("3d-250", "leica-450", "motic"),
    }
    with pytest.raises(ValueError, match="unknown synthetic domain task1/breast"):
        synthesize("task1", "breast", 0)


def test_tile_is_rgb_with_binary_mask_and_looks_like_h_and_e():
    image, mask = synthesize("task1", "colorectum", 0, size=96, shift=0.5, seed=0)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert mask.shape == (96, 96) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    for task, domains in DOMAINS.items():
        for domain in domains["train"] + domains["test"]:
            tiles = [synthesize(task, domain, i, size=96, shift=1.0, seed=0)[0] for i in range(4)]
            image = np.concatenate(tiles)
            tissue = image[image.sum(axis=2) < 600].astype(float)  # not glass or lumen
            red, green, blue = tissue.mean(axis=0)
            assert green < red and green < blue, (domain, red, green, blue)  # pink/purple
            assert (image.min(axis=2) > 200).mean() > 0.005, domain  # some white lumen/fat


def test_tumour_in_most_tiles_with_widely_varying_extent():
    fractions = np.array(
        [(synthesize("task2", "kfbio-400", i, size=128)[1] > 0).mean() for i in range(40)]
    )
    assert 0.05 <= (fractions == 0).mean() <= 0.4
    tumour = fractions[fractions > 0]
    assert tumour.min() < 0.3 and tumour.max() > 0.8


@pytest.mark.parametrize("task, domain", [("task1", "colorectum"), ("task2", "3d-1000")])
def test_tumour_is_crowded_with_nuclei_but_not_a_single_colour(task, domain):
    od_sum, labels = [], []
    for i in range(12):
        image, mask = synthesize(task, domain, i, size=128, seed=0)
        od_sum.append(_od(image).sum(axis=2).ravel())
        labels.append(mask.ravel() > 0)
    od_sum, labels = np.concatenate(od_sum), np.concatenate(labels)
    nuclear = od_sum > 1.2  # haematoxylin-dark pixels
    assert nuclear[labels].mean() > 1.5 * nuclear[~labels].mean()
    # Area under the ROC curve of "darker pixel = tumour": far from a perfect separation.
    ranks = rankdata(od_sum)[labels]
    auc = (ranks.sum() - labels.sum() * (labels.sum() + 1) / 2) / (labels.sum() * (~labels).sum())
    assert auc < 0.8


def test_layout_on_disk(small_tree):
    manifest = json.loads((small_tree / "synthetic.json").read_text())
    profiles = manifest["profiles"]
    assert profiles["task2/motic"]["morphology"]["tumour"]["recipe"] == "BreastCarcinoma"
    assert profiles["task1/duodenum"]["morphology"]["tumour"]["recipe"] == "GlandularCarcinoma"
    assert manifest["parameters"] == {
        "tiles": 2, "size": 64, "shift": 0.5, "seed": 3, "tasks": ["task1", "task2"],
        "version": synthetic.GENERATOR_VERSION,
    }  # fmt: skip
    for split, top in (("train", TRAIN_DIR), ("test", TEST_DIR)):
        for task, domains in DOMAINS.items():
            assert sorted(p.name for p in (small_tree / top / task).iterdir()) == sorted(
                domains[split]
            )
            for domain in domains[split]:
                images = sorted((small_tree / top / task / domain / "image").iterdir())
                masks = sorted((small_tree / top / task / domain / "mask").iterdir())
                assert [p.name for p in images] == [p.name for p in masks]
                assert len(images) == 2
                for image_path, mask_path in zip(images, masks):
                    assert re.fullmatch(r"[0-9a-f]{8}\.png", image_path.name)
                    with Image.open(image_path) as image, Image.open(mask_path) as mask:
                        assert image.mode == "RGB" and image.size == (64, 64)
                        assert mask.mode == "L" and mask.size == (64, 64)
                        assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert not list(small_tree.glob(".*")), "no temporary or marker files are left"


def test_same_seed_same_bytes_other_seed_other_bytes(small_tree, tmp_path):
    again = generate(tmp_path / "again", tiles=2, size=64, seed=3)
    assert _files(again) == _files(small_tree)
    other = _files(generate(tmp_path / "other", tiles=2, size=64, seed=4))
    images = [name for name in other if name.parent.name == "image"]
    assert all(name not in other for name in _files(small_tree) if name.parent.name == "image")
    assert len({other[name] for name in images}) == len(images)


def test_threads_write_the_same_bytes_as_one(tmp_path):
    one = generate(tmp_path / "one", tiles=2, size=64, seed=5, workers=1)
    assert _files(generate(tmp_path / "four", tiles=2, size=64, seed=5, workers=4)) == _files(one)


def test_ids_and_layout_do_not_depend_on_shift():
    assert tile_id(0, "task2", "motic", 5) == tile_id(0, "task2", "motic", 5)
    assert tile_id(0, "task2", "motic", 5) != tile_id(1, "task2", "motic", 5)
    # Task 2 differs in acquisition only: the same tile at another shift has the same mask.
    low, mask_low = synthesize("task2", "motic", 5, size=64, shift=0.0)
    high, mask_high = synthesize("task2", "motic", 5, size=64, shift=1.0)
    assert np.array_equal(mask_low, mask_high) and not np.array_equal(low, high)


def test_shift_zero_gives_every_domain_the_same_parameters():
    for task, domains in DOMAINS.items():
        profiles = [domain_profile(task, d, 0.0) for d in domains["train"] + domains["test"]]
        assert all(p == profiles[0] for p in profiles)
        assert domain_profile(task, domains["train"][0], 1.0) != profiles[0]
    assert domain_profile("task1", "colorectum", 0.0)[1] == ORGAN_LAB != REFERENCE
    assert domain_profile("task2", "motic", 0.0)[1] == REFERENCE


def _all_domains(task: str) -> tuple[str, ...]:
    return DOMAINS[task]["train"] + DOMAINS[task]["test"]


def test_task1_scanners_are_their_own_and_close_together():
    for shift in (0.0, 0.5, 1.0):
        task2 = {REFERENCE, *(scanner(name, shift) for name in _all_domains("task2"))}
        task1 = [domain_profile("task1", organ, shift)[1] for organ in _all_domains("task1")]
        assert not task2 & set(task1), shift
    task1 = [domain_profile("task1", organ, 1.0)[1] for organ in _all_domains("task1")]
    assert len(set(task1)) == 5  # one scanner per organ
    training_scanners = [scanner(name, 1.0) for name in DOMAINS["task2"]["train"]]
    for parameter in REFERENCE.parameters():
        organs = [acq.parameters()[parameter] for acq in task1]
        scanners = [acq.parameters()[parameter] for acq in training_scanners]
        assert np.ptp(organs) <= np.ptp(scanners) / 3, parameter


def _nearest(value: float, profiles: list[dict], parameter: str) -> float:
    return min(abs(value - profile[parameter]) for profile in profiles)


@pytest.mark.parametrize("shift", [0.25, 0.5, 1.0])
def test_the_other_task_never_stands_closer_to_an_unseen_domain(shift):
    """Per acquisition parameter: union and cross-task training add tiles from the other task,
    whose scanners must preview no unseen domain better than the task's own training domains."""
    scanners = {
        (task, split): [
            domain_profile(task, d, shift)[1].parameters() for d in DOMAINS[task][split]
        ]
        for task in DOMAINS
        for split in SPLITS
    }
    task1 = scanners["task1", "train"] + scanners["task1", "test"]
    for parameter in REFERENCE.parameters():
        for unseen, own, other in (
            (scanners["task2", "test"], scanners["task2", "train"], task1),
            (scanners["task1", "test"], scanners["task1", "train"], scanners["task2", "train"]),
        ):
            for value in (profile[parameter] for profile in unseen):
                nearest = _nearest(value, own, parameter)
                assert _nearest(value, other, parameter) >= nearest, (parameter, value)


def test_breast_tumour_has_its_own_recipe():
    assert all(isinstance(ORGANS[o].tumour, GlandularCarcinoma) for o in _all_domains("task1"))
    assert isinstance(BREAST.tumour, BreastCarcinoma)
    assert all(domain_profile("task2", d, 1.0)[0] == BREAST for d in _all_domains("task2"))
    region = np.ones((256, 256), bool)
    shapes = {}
    for recipe in (ORGANS["colorectum"].tumour, BREAST.tumour):
        rng = np.random.default_rng(0)
        glands = recipe.glands(rng, 256, region)
        nuclei = Nuclei()
        recipe.nuclei(rng, glands, 2.3, nuclei)
        axes = np.concatenate(nuclei.parts)[:, 2:4]
        shapes[type(recipe)] = (glands, np.median(axes[:, 0] / axes[:, 1]))
    glands, elongation = shapes[GlandularCarcinoma]
    assert glands.aspect.max() < 2 and glands.hollow().mean() > 0.5 and elongation > 1.5
    glands, elongation = shapes[BreastCarcinoma]  # solid nests and cords, few tubules
    assert glands.aspect.max() > 4 and glands.hollow().mean() < 0.5 and elongation < 1.2


def _spread(features) -> float:
    return max(np.linalg.norm(a - b) for a, b in itertools.combinations(features, 2))


def _scanner_colour(domain: str, shift: float) -> np.ndarray:
    """Mean optical density and white point (99th percentile) of 24 tiles of a domain."""
    stats = []
    for i in range(24):
        image, _ = synthesize("task2", domain, i, size=64, shift=shift)
        pixels = image.reshape(-1, 3)
        stats.append(np.concatenate([_od(pixels).mean(0), np.percentile(pixels, 99, 0) / 255]))
    return np.mean(stats, axis=0)


def _organ_morphology(domain: str, shift: float) -> np.ndarray:
    """Of the tumour-free tissue of 10 tiles: mean OD, share of nuclear and of white pixels."""
    pixels = []
    for i in range(10):
        image, mask = synthesize("task1", domain, i, size=128, shift=shift)
        pixels.append(image[mask == 0])
    od = _od(np.concatenate(pixels))
    total = od.sum(axis=1)
    return np.concatenate([od.mean(axis=0), [(total > 1.2).mean(), (total < 0.15).mean()]])


@pytest.mark.parametrize(
    "task, statistic", [("task1", _organ_morphology), ("task2", _scanner_colour)]
)
def test_domains_move_apart_as_shift_grows(task, statistic):
    spreads = [
        _spread([statistic(domain, shift) for domain in DOMAINS[task]["train"]])
        for shift in (0.0, 0.5, 1.0)
    ]
    assert spreads[0] < spreads[1] < spreads[2], spreads
    assert spreads[0] < 0.5 * spreads[2], spreads  # at 0 only sampling noise remains


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"tiles": 0}, "tiles"),
        ({"tiles": 2.5}, "tiles"),
        ({"size": 63}, "size"),
        ({"size": "256"}, "size"),
        ({"shift": -0.1}, "shift"),
        ({"shift": 1.01}, "shift"),
        ({"shift": float("nan")}, "shift"),
        ({"seed": -1}, "seed"),
        ({"tasks": ()}, "tasks"),
        ({"tasks": ("task3",)}, "tasks"),
        ({"tasks": "task1"}, "tasks"),
    ],
)
def test_invalid_arguments_are_refused(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_one_task_only(tmp_path):
    out = generate(tmp_path / "t2", tiles=1, size=64, tasks=("task2",))
    assert not (out / TRAIN_DIR / "task1").exists()
    assert len(list((out / TEST_DIR / "task2").glob("*/image/*.png"))) == 3


def test_cache_hit_returns_without_writing(small_tree):
    before = {p: p.stat().st_mtime_ns for p in small_tree.rglob("*")}
    assert generate(small_tree, tiles=2, size=64, seed=3) == small_tree
    assert {p: p.stat().st_mtime_ns for p in small_tree.rglob("*")} == before


def test_never_overwrites_other_data(small_tree, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="mine"):
        generate(foreign, tiles=1, size=64)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(FileExistsError, match="other parameters"):
        generate(small_tree, tiles=2, size=64, seed=4)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        generate(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert (generate(tmp_path / "empty", tiles=1, size=64) / "synthetic.json").is_file()


def test_interrupted_run_is_not_complete_and_can_be_finished(tmp_path, monkeypatch):
    calls = []
    real_synthesize = synthetic.synthesize

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_synthesize(*args, **kwargs)

    monkeypatch.setattr(synthetic, "synthesize", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "out", tiles=1, size=64)
    monkeypatch.setattr(synthetic, "synthesize", real_synthesize)
    assert not (tmp_path / "out" / "synthetic.json").exists()
    with pytest.raises(FileExistsError):
        generate(tmp_path / "out", tiles=2, size=64)  # other parameters: not ours to reuse
    generate(tmp_path / "out", tiles=1, size=64)  # same parameters: finished in place
    assert _files(tmp_path / "out") == _files(generate(tmp_path / "ref", tiles=1, size=64))


def test_domain_gallery_shows_every_domain(small_tree):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cosas_tutorial.data.cosas import DataError
    from cosas_tutorial.viz import plot_domain_gallery

    fig = plot_domain_gallery(small_tree)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:5] == [
        "task1 · colorectum", "task1 · pancreas", "task1 · stomach",
        "task1 · duodenum (test)", "task1 · esophagus (test)",
    ]  # fmt: skip
    assert len(titles) == 11 and titles[-1] == "task2 · motic (test)"
    plt.close(fig)
    fig = plot_domain_gallery(small_tree, task="task2", n_per_domain=2)
    assert sum(bool(ax.get_title()) for ax in fig.axes) == 12
    plt.close(fig)
    with pytest.raises(ValueError, match="task"):
        plot_domain_gallery(small_tree, task="task3")
    with pytest.raises(DataError, match="COSAS"):  # a folder without the layout
        plot_domain_gallery(small_tree / "COSAS24-TestSet" / "task1")
