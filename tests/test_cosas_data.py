"""Discovery, validation and loading of COSAS-layout trees."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cosas_tutorial.data.cosas import DataError, check, discover, domains, read_image, read_mask
from cosas_tutorial.data.layout import TRAIN_DIR, pair_dirs


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


def rgb(height=24, width=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def only_problem(report):
    assert not report.ok
    assert len(report.problems) == 1, report.format()
    return report.problems[0]


# --- valid trees ---------------------------------------------------------------------------


def test_valid_tree_checks_ok(make_cosas_tree):
    root = make_cosas_tree()
    report = check(root)
    assert report.ok, report.format()
    assert len(report.samples) == 6
    assert report.problems == [] and report.notes == []
    text = report.format()
    for word in ("colorectum", "pancreas", "stomach", "32×24", "OK; 6 pairs"):
        assert word in text


def test_non_square_and_odd_sized_tiles_are_valid(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 1}}, size=(31, 57))
    make_cosas_tree({"task1": {"pancreas": 2}}, size=(150, 150))
    make_cosas_tree({"task1": {"pancreas": 1}}, size=(82, 224))  # replaces tile00
    report = check(root)
    assert report.ok, report.format()
    assert "31×57" in report.format()
    assert "82×224–150×150" in report.format()


def test_only_task2_tree_is_valid(make_cosas_tree):
    root = make_cosas_tree({"task2": {"kfbio-400": 2, "3d-1000": 1}})
    report = check(root)
    assert report.ok, report.format()
    assert {s.task for s in discover(root)} == {"task2"}
    assert domains(discover(root), "task2", "train") == ["3d-1000", "kfbio-400"]


def test_three_identical_channel_and_zero_one_masks_are_valid(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 2}})
    _, mask_dir = pair_dirs(root, "train", "task1", "colorectum")
    grey = np.zeros((24, 32), np.uint8)
    grey[5:10, 5:20] = 255
    save(mask_dir / "tile00.png", np.stack([grey] * 3, axis=-1))
    save(mask_dir / "tile01.png", grey // 255)
    assert check(root).ok
    for stem in ("tile00", "tile01"):
        mask = read_mask(mask_dir / f"{stem}.png")
        assert mask.shape == (24, 32) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1}
        assert mask.sum() == 5 * 15


def test_empty_and_full_masks_are_valid(tmp_path):
    save(tmp_path / "empty.png", np.zeros((4, 4)))
    save(tmp_path / "full.png", np.full((4, 4), 255))
    assert read_mask(tmp_path / "empty.png").sum() == 0
    assert read_mask(tmp_path / "full.png").sum() == 16


def test_rgba_opaque_image_is_converted_with_a_note(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 1}})
    image_dir, _ = pair_dirs(root, "train", "task1", "colorectum")
    pixels = rgb()
    rgba = np.concatenate([pixels, np.full((24, 32, 1), 255, np.uint8)], axis=-1)
    save(image_dir / "tile00.png", rgba)
    report = check(root)
    assert report.ok
    assert [n.path for n in report.notes] == [image_dir / "tile00.png"]
    assert "opaque alpha" in report.notes[0].message
    assert "notes (1)" in report.format()
    with pytest.warns(UserWarning, match="tile00.png"):
        image = read_image(image_dir / "tile00.png")
    assert image.shape == (24, 32, 3) and np.array_equal(image, pixels)


def test_colour_palette_image_is_read_as_rgb(tmp_path):
    pixels = rgb(8, 8)
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    with pytest.warns(UserWarning, match="palette"):
        image = read_image(tmp_path / "p.png")
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8


# --- every bad input -----------------------------------------------------------------------


def corrupt(path):
    path.write_bytes(b"not an image at all")


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_CASES = {
    # name: (edit(image_path, mask_path, domain_dir) -> offending path, words in the message)
    "missing mask": (lambda i, m, d: (m.unlink(), i)[1], ["missing mask"]),
    "missing image": (lambda i, m, d: (i.unlink(), m)[1], ["missing image"]),
    "corrupt image": (lambda i, m, d: (corrupt(i), i)[1], ["cannot read image"]),
    "truncated image": (lambda i, m, d: (truncate(i), i)[1], ["cannot read image"]),
    "corrupt mask": (lambda i, m, d: (corrupt(m), m)[1], ["cannot read mask"]),
    "truncated mask": (lambda i, m, d: (truncate(m), m)[1], ["cannot read mask"]),
    "size mismatch": (
        lambda i, m, d: (save(m, np.zeros((24, 30))), m)[1],
        ["size mismatch", "30×24", "32×24"],
    ),
    "mask not binary": (
        lambda i, m, d: (save(m, np.arange(24 * 32).reshape(24, 32) % 3), m)[1],
        ["not binary", "{0, 1, 2}"],
    ),
    "mask two values without zero": (
        lambda i, m, d: (save(m, 100 + 155 * (np.arange(24 * 32).reshape(24, 32) % 2)), m)[1],
        ["not binary", "{100, 255}"],
    ),
    "mask grey levels": (
        lambda i, m, d: (save(m, np.arange(24 * 32).reshape(24, 32) % 256), m)[1],
        ["not binary", "256 unique values"],
    ),
    "mask channels differ": (
        lambda i, m, d: (save(m, rgb()), m)[1],
        ["3 channels that differ"],
    ),
    "grayscale image": (
        lambda i, m, d: (save(i, rgb()[..., 0]), i)[1],
        ["grayscale", "mode L"],
    ),
    "transparent image": (
        lambda i, m, d: (save(i, np.concatenate([rgb(), np.zeros((24, 32, 1))], -1)), i)[1],
        ["transparency"],
    ),
    "grey palette image": (
        lambda i, m, d: (Image.fromarray(rgb()[..., 0]).convert("P").save(i), i)[1],
        ["palette", "without colour"],
    ),
    "mask with transparency": (
        lambda i, m, d: (save(m, np.zeros((24, 32, 2)), mode="LA"), m)[1],
        ["transparency"],
    ),
    "two files with one id": (
        lambda i, m, d: (save(i.with_suffix(".jpg"), rgb()), i.with_suffix(""))[1],
        ["several files", "tile00.jpg", "tile00.png"],
    ),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_check_reports_each_bad_input(make_cosas_tree, case):
    root = make_cosas_tree({"task1": {"colorectum": 2, "pancreas": 1}})
    image_dir, mask_dir = pair_dirs(root, "train", "task1", "colorectum")
    edit, words = BAD_CASES[case]
    path = edit(image_dir / "tile00.png", mask_dir / "tile00.png", image_dir.parent)
    problem = only_problem(check(root))
    assert problem.path == path
    for word in words:
        assert word in problem.message, problem.message
    assert f"{path}: {problem.message}" in check(root).format()


def test_empty_domain_is_a_problem(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 1}})
    empty = root / TRAIN_DIR / "task1" / "pancreas"
    (empty / "image").mkdir(parents=True)
    (empty / "mask").mkdir()
    problem = only_problem(check(root))
    assert problem.path == empty and "empty domain" in problem.message


def test_missing_mask_folder_is_a_problem(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 1}})
    (root / TRAIN_DIR / "task1" / "stomach" / "image").mkdir(parents=True)
    report = check(root)
    assert not report.ok
    paths = {p.path: p.message for p in report.problems}
    assert "missing folder" in paths[root / TRAIN_DIR / "task1" / "stomach" / "mask"]
    assert "empty domain" not in report.format()


def test_empty_task_folder_is_a_problem(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 1}})
    (root / TRAIN_DIR / "task2").mkdir()
    problem = only_problem(check(root))
    assert problem.path == root / TRAIN_DIR / "task2" and "no domain folders" in problem.message


def test_check_of_a_folder_without_task_folders(tmp_path):
    (tmp_path / "photos").mkdir()
    problem = only_problem(check(tmp_path))
    assert problem.path == tmp_path
    assert "no task folder" in problem.message and "expected layout" in problem.message
    assert "NOT OK" in check(tmp_path).format()


def test_several_problems_are_all_reported(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 3}})
    image_dir, mask_dir = pair_dirs(root, "train", "task1", "colorectum")
    corrupt(image_dir / "tile00.png")
    (mask_dir / "tile01.png").unlink()
    save(mask_dir / "tile02.png", np.full((24, 32), 7) - np.eye(24, 32) * 7 + np.eye(24, 32) * 3)
    report = check(root)
    assert {p.path for p in report.problems} == {
        image_dir / "tile00.png",
        image_dir / "tile01.png",
        mask_dir / "tile02.png",
    }
    assert "NOT OK: 3 problem(s)" in report.format()


# --- reading -------------------------------------------------------------------------------


def test_read_image_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.png"
    corrupt(path)
    with pytest.raises(DataError, match="bad.png") as info:
        read_image(path)
    assert info.value.path == path
    save(path, rgb()[..., 0])
    with pytest.raises(DataError, match="grayscale"):
        read_image(path)


def test_read_mask_reports_values_found(tmp_path):
    path = tmp_path / "m.png"
    save(path, np.array([[0, 128], [255, 255]]))
    with pytest.raises(DataError, match=r"m.png: mask is not binary: values found \{0, 128, 255\}"):
        read_mask(path)


def test_read_image_returns_rgb_uint8(tmp_path):
    pixels = rgb(7, 5)
    save(tmp_path / "x.png", pixels)
    image = read_image(tmp_path / "x.png")
    assert image.dtype == np.uint8 and image.shape == (7, 5, 3)
    assert np.array_equal(image, pixels)
    save(tmp_path / "m.png", np.zeros((7, 5)))
    assert image.flags.writeable and read_mask(tmp_path / "m.png").flags.writeable


# --- discovery -----------------------------------------------------------------------------


def test_discover_pairs_by_stem_in_sorted_order(make_cosas_tree):
    root = make_cosas_tree({"task1": {"stomach": 2, "colorectum": 3}})
    image_dir, mask_dir = pair_dirs(root, "train", "task1", "colorectum")
    save(image_dir / "a-orphan.png", rgb())
    save(mask_dir / "z-orphan.png", np.zeros((24, 32)))
    (image_dir / "notes.txt").write_text("not an image")
    (image_dir / ".DS_Store").write_bytes(b"\0")
    samples = discover(root)
    assert [s.key for s in samples] == [
        "train/task1/colorectum/tile00",
        "train/task1/colorectum/tile01",
        "train/task1/colorectum/tile02",
        "train/task1/stomach/tile00",
        "train/task1/stomach/tile01",
    ]
    for sample in samples:
        assert sample.image.stem == sample.mask.stem
        assert sample.image.parent.name == "image" and sample.mask.parent.name == "mask"
    assert samples == discover(root)


def test_discover_pairs_across_suffixes(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 1}})
    image_dir, mask_dir = pair_dirs(root, "train", "task1", "colorectum")
    save(image_dir / "extra.jpg", rgb())
    save(mask_dir / "extra.png", np.zeros((24, 32)))
    (sample,) = [s for s in discover(root) if s.id == "extra"]
    assert sample.image.name == "extra.jpg" and sample.mask.name == "extra.png"


def test_discover_accepts_the_training_set_folder_itself(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 2}})
    make_cosas_tree({"task2": {"motic": 1}}, split="test")
    everything = discover(root)
    assert [s.split for s in everything] == ["train", "train", "test"]
    assert discover(root / TRAIN_DIR) == everything[:2]
    assert discover(root, splits=("test",)) == everything[2:]
    assert discover(root, tasks=["task2"]) == everything[2:]
    assert domains(everything, "task2", "test") == ["motic"]
    assert domains(everything, "task2", "train") == []


def test_discover_without_task_folder_explains_the_layout(tmp_path):
    with pytest.raises(DataError) as info:
        discover(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "expected layout" in message and "COSAS24-TrainingSet/task1" in message
    with pytest.raises(DataError, match="not a folder"):
        discover(tmp_path / "missing")


def test_discover_points_at_a_nested_training_set(make_cosas_tree, tmp_path):
    make_cosas_tree({"task1": {"colorectum": 1}}, root=tmp_path / "drive" / "unzipped")
    with pytest.raises(DataError, match=f"pass {tmp_path / 'drive' / 'unzipped'}"):
        discover(tmp_path / "drive")


def test_discover_rejects_two_files_with_one_id(make_cosas_tree):
    root = make_cosas_tree({"task1": {"colorectum": 1}})
    image_dir, _ = pair_dirs(root, "train", "task1", "colorectum")
    save(image_dir / "tile00.tif", rgb())
    with pytest.raises(DataError, match="several files"):
        discover(root)


def test_discover_rejects_unknown_task_or_split(make_cosas_tree):
    root = make_cosas_tree()
    with pytest.raises(ValueError, match="task3"):
        discover(root, tasks=["task3"])
    with pytest.raises(ValueError, match="val"):
        discover(root, splits=("val",))
