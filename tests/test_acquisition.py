"""The scanner model: reference, scanner profiles, Beer-Lambert rendering, reacquisition."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from cosas_tutorial.data.acquisition import (
    REFERENCE,
    SCANNERS,
    Acquisition,
    jpeg_roundtrip,
    reacquire,
    render,
    scanner,
    stain_matrix,
    unmix,
)

CLEAN_REFERENCE = dataclasses.replace(REFERENCE, blur_sigma=0.0, noise_std=0.0)
TRAINING_SCANNERS = ("3d-1000", "kfbio-400", "teksqray-600p")
UNSEEN_SCANNERS = ("3d-250", "leica-450", "motic")
PARAMETERS = tuple(REFERENCE.parameters())


def _flat(h: float, e: float, size: int = 16) -> np.ndarray:
    conc = np.zeros((size, size, 2), np.float32)
    conc[..., 0], conc[..., 1] = h, e
    return conc


@pytest.fixture(scope="module")
def real_tile(open_tissue_files) -> np.ndarray:
    """One real H&E tile (RGB) of the open-tissue tier."""
    first = next(path for entry, path in open_tissue_files.items() if entry.role == "image")
    with Image.open(first) as image:
        return np.asarray(image.convert("RGB"))


def test_scanner_names_and_shift_zero_is_reference():
    assert SCANNERS == (
        "3d-1000", "kfbio-400", "teksqray-600p", "3d-250", "leica-450", "motic",
    )  # fmt: skip
    for name in SCANNERS:
        assert scanner(name, 0.0) == REFERENCE
        assert scanner(name, 1.0) != REFERENCE


def test_stain_rows_are_unit_vectors_and_h_e_look_like_h_and_e():
    assert np.allclose(np.linalg.norm(REFERENCE.stain_od, axis=1), 1.0)
    assert np.all(stain_matrix((1, 1, 0), (0, 1, 1))[2] >= 0)
    rng = np.random.default_rng(0)
    red, green, blue = render(_flat(0.8, 0.05), CLEAN_REFERENCE, rng)[0, 0].astype(int)
    assert blue > red > green - 20 and blue > green  # haematoxylin: blue-purple
    red, green, blue = render(_flat(0.0, 0.3), CLEAN_REFERENCE, rng)[0, 0].astype(int)
    assert red > blue > green  # eosin: pink


def test_unknown_scanner_and_bad_shift_are_refused():
    with pytest.raises(ValueError, match="unknown scanner 'aperio'.*kfbio-400"):
        scanner("aperio", 0.5)
    for shift in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="shift"):
            scanner("motic", shift)


def test_invalid_acquisitions_are_refused():
    good = dataclasses.asdict(REFERENCE)
    for change in (
        {"stain_od": np.ones((3, 3))},
        {"stain_od": np.eye(2)},
        {"gamma": (1.0, 0.0, 1.0)},
        {"white": (1.0, 1.2, 1.0)},
        {"blur_sigma": -1.0},
        {"jpeg_quality": 0},
    ):
        with pytest.raises(ValueError):
            Acquisition(**{**good, **change})


def test_scanner_moves_steadily_away_from_reference():
    conc = _flat(0.6, 0.3)
    for name in SCANNERS:
        colours = [
            render(conc, dataclasses.replace(scanner(name, s), noise_std=0.0, jpeg_quality=None),
                   np.random.default_rng(0))[0, 0].astype(float)
            for s in (0.0, 0.25, 0.5, 1.0)
        ]  # fmt: skip
        distances = [np.linalg.norm(c - colours[0]) for c in colours]
        assert distances[0] == 0
        assert distances[1] < distances[2] < distances[3], (name, distances)
        assert distances[3] > 5, (name, distances)


def test_towards_moves_every_parameter_part_way():
    full = scanner("motic", 1.0).parameters()
    half = scanner("motic", 0.5).parameters()
    start = REFERENCE.parameters()
    assert PARAMETERS == (
        "H_R", "H_G", "H_B", "E_R", "E_G", "E_B", "gamma_R", "gamma_G", "gamma_B",
        "white_R", "white_G", "white_B", "blur_sigma", "noise_std", "jpeg_quality",
    )  # fmt: skip
    for name in PARAMETERS:
        assert half[name] == pytest.approx((start[name] + full[name]) / 2, abs=0.01), name
        assert half[name] != pytest.approx(start[name], abs=1e-4), name
    assert REFERENCE.jpeg_quality is None and scanner("motic", 0.5).jpeg_quality == 75
    with pytest.raises(ValueError, match="shift"):
        REFERENCE.towards(scanner("motic", 1.0), 1.2)


@pytest.mark.parametrize("parameter", PARAMETERS)
def test_unseen_scanners_lie_outside_the_training_range(parameter):
    """No unseen scanner can be reached by interpolating between training scanners."""
    training = [scanner(name, 1.0).parameters()[parameter] for name in TRAINING_SCANNERS]
    for name in UNSEEN_SCANNERS:
        value = scanner(name, 1.0).parameters()[parameter]
        assert not min(training) <= value <= max(training), (name, value, training)


def test_render_white_where_no_stain_darker_with_more_stain():
    rng = np.random.default_rng(0)
    blank = render(_flat(0, 0), CLEAN_REFERENCE, rng)
    assert blank.dtype == np.uint8 and blank.shape == (16, 16, 3)
    assert np.all(blank == round(255 * REFERENCE.white[0]))
    light = render(_flat(0.3, 0.2), CLEAN_REFERENCE, rng).astype(int)
    dark = render(_flat(0.9, 0.4), CLEAN_REFERENCE, rng).astype(int)
    assert np.all(dark < light)
    three = render(np.dstack([_flat(0.3, 0.2), np.zeros((16, 16))]), CLEAN_REFERENCE, rng)
    assert np.array_equal(three, light)
    with pytest.raises(ValueError, match="HxWx2 or HxWx3"):
        render(np.zeros((4, 4)), REFERENCE, rng)


def test_render_noise_is_seeded_and_has_the_stated_size():
    acq = dataclasses.replace(REFERENCE, blur_sigma=0.0, noise_std=0.02)
    a = render(_flat(0.3, 0.3, 128), acq, np.random.default_rng(1))
    b = render(_flat(0.3, 0.3, 128), acq, np.random.default_rng(1))
    c = render(_flat(0.3, 0.3, 128), acq, np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.015 * 255 < a.astype(float).std(axis=(0, 1)).mean() < 0.025 * 255


def test_jpeg_roundtrip_is_lossy_but_close():
    rng = np.random.default_rng(0)
    image = render(rng.uniform(0, 0.8, (64, 64, 2)), CLEAN_REFERENCE, rng)
    out = jpeg_roundtrip(image, 60)
    assert out.shape == image.shape and out.dtype == np.uint8
    difference = np.abs(out.astype(int) - image).mean()
    assert 0 < difference < 20


def test_unmix_inverts_render():
    rng = np.random.default_rng(0)
    conc = rng.uniform(0, 1.0, (32, 32, 2)).astype(np.float32)
    back = unmix(render(conc, CLEAN_REFERENCE, rng))
    assert back.shape == (32, 32, 3)
    assert np.abs(back[..., :2] - conc).max() < 0.03
    assert np.abs(back[..., 2]).max() < 0.03
    with pytest.raises(ValueError, match="uint8"):
        unmix(np.zeros((4, 4, 3), np.float32))


def test_reacquire_real_tile(real_tile):
    rng = np.random.default_rng(0)
    same = reacquire(real_tile, CLEAN_REFERENCE, rng)
    assert same.shape == real_tile.shape and same.dtype == np.uint8
    assert np.abs(same.astype(int) - real_tile).max() <= 1
    for name in ("kfbio-400", "motic"):
        shifted = reacquire(real_tile, scanner(name, 1.0), rng)
        assert shifted.shape == real_tile.shape and shifted.dtype == np.uint8
        assert np.abs(shifted.astype(float) - real_tile).mean() > 5
    mild = reacquire(real_tile, scanner("kfbio-400", 0.3), rng).astype(float)
    strong = reacquire(real_tile, scanner("kfbio-400", 1.0), rng).astype(float)
    assert np.abs(mild - real_tile).mean() < np.abs(strong - real_tile).mean()
