"""Stain tools on real tiles (the open-tissue mirror), glass tiles, persistence, and TTA."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cosas_tutorial import stain
from cosas_tutorial.config import get_profile
from cosas_tutorial.data.cosas import read_image
from cosas_tutorial.data.layout import Sample
from cosas_tutorial.evaluate import predict_tile


@pytest.fixture(scope="module")
def real_tiles(open_tissue_files) -> dict[str, list[np.ndarray]]:
    """Two tiles of each open-tissue source."""
    tiles: dict[str, list[np.ndarray]] = {}
    for entry, path in open_tissue_files.items():
        if entry.role == "image" and len(tiles.setdefault(entry.domain, [])) < 2:
            tiles[entry.domain].append(read_image(path))
    assert len(tiles) == 5
    return tiles


def glass_tile(size=96, tissue_pixels=20, seed=0) -> np.ndarray:
    """Nearly white glass with sensor noise and a speck of stained tissue."""
    rng = np.random.default_rng(seed)
    tile = np.clip(rng.normal(242, 3, (size, size, 3)), 0, 255).astype(np.uint8)
    tile.reshape(-1, 3)[:tissue_pixels] = (120, 60, 150)
    return tile


def test_optical_density_and_tissue_mask_under_both_conventions():
    image = np.full((4, 4, 3), 255, np.uint8)
    image[:2] = (80, 40, 120)
    image[2, 0] = (215, 250, 250)  # faint pink: optical density mostly in red
    image[3, 0] = 0
    od = stain.optical_density(image)
    assert od[3, 3] == pytest.approx([0, 0, 0])
    assert od[0, 0, 1] == pytest.approx(-math.log(40 / 255))
    assert od[3, 0] == pytest.approx([math.log(255)] * 3)  # black clipped at one grey level
    macenko = stain.optical_density(image, stain.MACENKO_OD)
    assert macenko[0, 0] == pytest.approx(-np.log((np.array([80, 40, 120]) + 1) / 240))
    stained = np.zeros((4, 4), bool)
    stained[:2], stained[3, 0] = True, True
    assert np.array_equal(stain.tissue_mask(image), stained)
    # A lower threshold takes the faint pixel in; Macenko's rule wants every channel stained.
    assert stain.tissue_mask(image, threshold=0.15)[2, 0]
    macenko_mask = stain.tissue_mask(
        image, stain.MACENKO_BETA, every_channel=True, convention=stain.MACENKO_OD
    )
    assert np.array_equal(macenko_mask, stained)
    with pytest.raises(ValueError, match="RGB"):
        stain.optical_density(np.zeros((4, 4)))


def test_numpy_hed_matches_the_torch_unmixing(real_tiles):
    tile = real_tiles["glas-colon"][0]
    x = torch.from_numpy(np.maximum(tile, 1)).permute(2, 0, 1)[None].double() / 255
    expected = stain.rgb_to_hed(x)[0].permute(1, 2, 0).numpy()
    assert np.abs(stain.hed_densities(tile) - expected).max() < 1e-6


def test_hed_round_trip_is_exact_on_real_tiles(real_tiles):
    for domain, tiles in real_tiles.items():
        x = torch.from_numpy(tiles[0]).permute(2, 0, 1)[None].float() / 255
        back = stain.hed_to_rgb(stain.rgb_to_hed(x))
        assert (back - x).abs().max() < 1e-4, domain


def test_macenko_output_takes_the_reference_stain_statistics(real_tiles):
    reference = real_tiles["glas-colon"][0]
    normaliser = stain.MacenkoNormaliser.fit(reference, "glas-colon/0")
    ref = normaliser.reference
    before, after, strengths = [], [], []
    for domain, tiles in real_tiles.items():
        for tile in tiles:
            source = stain.estimate_stains(tile)
            out = normaliser(tile)
            assert out.shape == tile.shape and out.dtype == np.uint8
            got = stain.estimate_stains(out)
            angles = [stain.angle_degrees(got.stains[:, i], ref.stains[:, i]) for i in (0, 1)]
            assert max(angles) < 8, (domain, angles)
            after.append(angles)
            before.append(
                [stain.angle_degrees(source.stains[:, i], ref.stains[:, i]) for i in (0, 1)]
            )
            strengths.append(got.max_conc / ref.max_conc)
    after, before, strengths = np.array(after), np.array(before), np.array(strengths)
    assert np.median(after) < 2.5 and np.median(before) > 2 * np.median(after)
    assert np.all((np.median(strengths, axis=0) > 0.85) & (np.median(strengths, axis=0) < 1.2))


def test_our_macenko_matches_torchstain_normalize(real_tiles):
    import torchstain

    reference, tile = real_tiles["ebhi-polyp"][0], real_tiles["camelyon-node"][0]
    ours = stain.MacenkoNormaliser.fit(reference)(tile)
    theirs = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    theirs.fit(reference)
    expected = theirs.normalize(tile, stains=False)[0]
    # the estimates use a subsample of the pixels, so the images agree to about a grey level
    assert np.abs(ours.astype(int) - expected.astype(int)).mean() < 2.0


@pytest.mark.parametrize(
    "tile",
    [glass_tile(), np.full((64, 64, 3), 255, np.uint8), glass_tile(tissue_pixels=0)],
    ids=["glass-with-speck", "white", "glass"],
)
def test_glass_tile_is_left_unchanged_with_a_warning(real_tiles, tile):
    normaliser = stain.MacenkoNormaliser.fit(real_tiles["ocdc-oral"][0])
    with pytest.warns(UserWarning, match=r"slide_07\.png.*tissue"):
        out = normaliser(tile, name="slide_07.png")
    assert np.array_equal(out, tile) and normaliser.fallbacks == 1
    with pytest.raises(stain.StainEstimationError, match="glass"):
        stain.estimate_stains(tile)


def test_reference_never_a_glass_tile_and_none_without_tissue(tmp_path, real_tiles):
    samples = []
    for i, tile in enumerate([glass_tile(), *real_tiles["ebhi-polyp"], glass_tile(seed=1)]):
        image, mask = tmp_path / f"image{i}.png", tmp_path / f"mask{i}.png"
        Image.fromarray(tile).save(image)
        Image.fromarray(np.zeros(tile.shape[:2], np.uint8)).save(mask)
        samples.append(Sample(image, mask, "task1", "d", "train"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = get_profile("ci", stain_norm="macenko")
        assert stain.choose_reference(samples) in samples[1:3]
        assert isinstance(stain.normaliser_for(config, samples), stain.MacenkoNormaliser)
        assert stain.normaliser_for(get_profile("ci"), samples) is None
    with pytest.warns(UserWarning, match="stain normalisation off"):
        assert stain.normaliser_for(config, [samples[0], samples[-1]]) is None
    table = stain.stain_table(samples)
    assert table["ok"].tolist() == [False, True, True, False]
    summary = stain.stain_summary(table)
    assert summary.loc[0, "tiles"] == 4 and summary.loc[0, "no_estimate"] == 2


def test_saved_normaliser_gives_identical_output(tmp_path, real_tiles):
    normaliser = stain.MacenkoNormaliser.fit(real_tiles["camelyon-node"][1], "cam/1")
    path = normaliser.save(tmp_path)
    assert path.name == stain.NORMALISER_FILE
    loaded = stain.load_normaliser(tmp_path)
    assert loaded.reference_name == "cam/1"
    for tiles in real_tiles.values():
        assert np.array_equal(loaded(tiles[0]), normaliser(tiles[0]))
    assert stain.load_normaliser(tmp_path / "elsewhere") is None


def test_stain_summary_has_one_row_per_domain(tmp_path, real_tiles):
    samples = []
    for domain, tiles in real_tiles.items():
        for i, tile in enumerate(tiles):
            image = tmp_path / f"{domain}-{i}.png"
            Image.fromarray(tile).save(image)
            samples.append(Sample(image, image, "task1", domain, "train"))
    summary = stain.stain_summary(samples)
    assert sorted(summary["domain"]) == sorted(real_tiles)
    assert (summary["tiles"] == 2).all() and (summary["no_estimate"] == 0).all()
    assert summary[list(stain.STAT_COLUMNS)].notna().all().all()


# --- test-time augmentation ----------------------------------------------------------------------


class PixelModel(nn.Module):
    """A 1×1 convolution shaped like the segmentation model: (N, 3, H, W) → (N, 1, H, W) logits.
    It sees one pixel at a time, so it commutes with every flip and rotation."""

    def __init__(self, kernel_size: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        return self.conv(x) * 4


def test_tta_of_an_equivariant_model_equals_its_plain_output():
    image = np.random.default_rng(0).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    model = PixelModel().eval()
    for scale in (1.0, 0.5):
        plain = predict_tile(model, image, 64, scale, tta=False, device=torch.device("cpu"))
        tta = predict_tile(model, image, 64, scale, tta=True, device=torch.device("cpu"))
        assert plain.shape == image.shape[:2]
        np.testing.assert_allclose(tta, plain, atol=1e-5)


def test_tta_changes_a_model_that_is_not_equivariant():
    image = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    model = PixelModel(kernel_size=3).eval()  # a random 3×3 kernel has no symmetry
    plain = predict_tile(model, image, 64, tta=False, device=torch.device("cpu"))
    tta = predict_tile(model, image, 64, tta=True, device=torch.device("cpu"))
    assert np.abs(tta - plain).max() > 1e-2
