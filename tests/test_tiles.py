"""The tile cache and batch cutting: same batches as from files, glass padding, memory estimate."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import cosas_tutorial.data.tiles as tiles_module
from cosas_tutorial.augment import augment_colours
from cosas_tutorial.data.cosas import discover
from cosas_tutorial.data.layout import Sample
from cosas_tutorial.data.tiles import (
    FileTiles,
    TileCache,
    draw_crops,
    sample_batch,
)
from cosas_tutorial.env import OperatorCount


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def augmented_batch(tiles, size, crop, g, device="cpu"):
    """A batch as the trainer cuts it with augmentation on (flips, colour and HED jitter)."""
    images, masks = sample_batch(tiles, size, crop, g, device, flips=True)
    return augment_colours(images, g, "hed"), masks


def write_tile(folder, name, image, mask) -> Sample:
    (folder / "image").mkdir(parents=True, exist_ok=True)
    (folder / "mask").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "image" / f"{name}.png")
    Image.fromarray(mask).save(folder / "mask" / f"{name}.png")
    return Sample(
        folder / "image" / f"{name}.png", folder / "mask" / f"{name}.png", "task1", "x", "train"
    )


@pytest.fixture
def mixed_samples(make_cosas_tree):
    """Tiles of three sizes, square and not, some smaller than a training window."""
    root = make_cosas_tree({"task1": {"colorectum": 2, "pancreas": 1}}, size=(96, 80))
    make_cosas_tree({"task1": {"stomach": 2}}, size=(40, 130), root=root)
    make_cosas_tree({"task2": {"kfbio-400": 1}}, size=(30, 20), root=root)
    return discover(root)


@pytest.mark.parametrize("scale", [1.0, 0.75])
def test_cached_batches_equal_batches_from_files(mixed_samples, scale):
    cache = TileCache(mixed_samples, scale, workers=2)
    files = FileTiles(mixed_samples, scale)
    g_cache, g_files = generator(7), generator(7)
    for _ in range(3):  # the generators advance identically batch after batch
        a = augmented_batch(cache, 6, 64, g_cache)
        b = augmented_batch(files, 6, 64, g_files)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (6, 3, 64, 64) and a[1].shape == (6, 1, 64, 64)
    assert cache.flat([1, 1], "cpu").words is cache.store.words  # batches read the cache itself
    c = sample_batch(cache, 6, 64, generator(8), "cpu")[0]
    assert not torch.equal(sample_batch(cache, 6, 64, generator(7), "cpu")[0], c)


def window_by_window(tiles, size, crop, g, scale_range):
    """The batch cut one window at a time with ``F.interpolate`` (the plain way), then flipped
    and rotated by the three coins that ``sample_batch`` draws next."""
    images, masks = [], []
    for index, s, fy, fx in zip(*draw_crops(len(tiles), size, g, scale_range)):
        img, mask = tiles.tile(index)
        window = max(1, round(crop / s))
        height, width = img.shape[1:]
        y = int(fy * (max(height, window) - window + 1))
        x = int(fx * (max(width, window) - window + 1))
        img, mask = img[:, y : y + window, x : x + window], mask[:, y : y + window, x : x + window]
        pad = (0, window - img.shape[2], 0, window - img.shape[1])
        img, mask = F.pad(img, pad, value=255), F.pad(mask, pad, value=0)
        images.append(F.interpolate(img[None].float(), size=(crop, crop), mode="bilinear")[0])
        masks.append(F.interpolate(mask[None], size=(crop, crop), mode="nearest")[0])
    coins = (torch.rand(size, 3, generator=g) < 0.5).tolist()
    for k, (transpose, hflip, vflip) in enumerate(coins):
        for batch in (images, masks):
            t = batch[k].transpose(1, 2) if transpose else batch[k]
            batch[k] = t.flip([d for d, flip in ((2, hflip), (1, vflip)) if flip])
    return torch.stack(images) / 255, torch.stack(masks).float()


@pytest.mark.parametrize("scale_range", [(0.8, 1.25), (1.0, 1.0), (0.3, 3.0)])
def test_a_batch_is_its_windows_resized_flipped_and_rotated_one_by_one(mixed_samples, scale_range):
    cache = TileCache(mixed_samples, 0.8)
    images, masks = sample_batch(cache, 64, 48, generator(11), "cpu", scale_range, flips=True)
    expected_images, expected_masks = window_by_window(cache, 64, 48, generator(11), scale_range)
    assert torch.allclose(images, expected_images, atol=1e-6)
    assert torch.equal(masks, expected_masks)
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_a_batch_costs_the_same_few_operators_whatever_its_size(mixed_samples):
    """The host issues a batch as a fixed set of gathers, not as work per crop."""
    cache, counts = TileCache(mixed_samples), []
    for size in (2, 32):
        with OperatorCount() as counter:
            augmented_batch(cache, size, 64, generator())
        counts.append(counter.count)
    assert counts[0] == counts[1] < 120


def test_windows_larger_than_the_tile_are_white_glass_with_mask_zero(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (20, 28, 3), dtype=np.uint8)  # never white
    tile = write_tile(tmp_path, "small", image, np.full((20, 28), 255, np.uint8))
    images, masks = sample_batch(TileCache([tile]), 4, 64, generator(), "cpu", (1.0, 1.0))
    expected = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    for img, mask in zip(images, masks):  # the tile sits at the top left, glass elsewhere
        assert torch.equal(img[:, :20, :28], expected)
        assert torch.all(img[:, 20:] == 1) and torch.all(img[:, :, 28:] == 1)
        assert torch.all(mask[:, :20, :28] == 1)
        assert mask.sum() == 20 * 28


def test_cut_and_augmented_batches_keep_image_and_mask_aligned(tmp_path):
    # the mask is drawn from the image (bright blocks = tumour): any shift, flip or rotation
    # applied to one and not the other shows as a mismatch
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 2, (12, 9), dtype=np.uint8)
    pattern = np.kron(blocks, np.ones((16, 16), np.uint8))  # 192 × 144
    image = np.stack([pattern * 200 + 30, pattern * 50 + 60, np.full_like(pattern, 90)], -1)
    tile = write_tile(tmp_path, "blocks", image.astype(np.uint8), pattern * 255)
    cache = TileCache([tile])
    images, masks = sample_batch(cache, 16, 64, generator(3), "cpu", (1.0, 1.0), flips=True)
    assert torch.equal(masks, (images[:, :1] > 0.5).float())
    # scaled crops: bilinear image, nearest mask, so only block edges may disagree
    images, masks = augmented_batch(cache, 16, 64, generator(5))
    agreement = (masks == (images[:, :1] > images[:, 2:3]).float()).float().mean()
    assert agreement > 0.95


@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_estimate_matches_the_bytes_of_the_cached_tensors(mixed_samples, scale):
    cache = TileCache(mixed_samples, scale)  # nbytes: estimated from the image headers
    tiles = [cache.tile(i) for i in range(len(cache))]
    decoded = 4 * sum(img.shape[1] * img.shape[2] for img, _ in tiles)  # RGB + label a pixel
    assert cache.nbytes == cache.tensor_bytes() == decoded
    assert all(img.dtype == torch.uint8 and img.shape[0] == 3 for img, _ in tiles)
    assert all(m.dtype == torch.uint8 and set(m.unique().tolist()) <= {0, 1} for _, m in tiles)


def test_the_estimate_is_printed_before_any_tile_is_decoded(mixed_samples, monkeypatch, capsys):
    real = tiles_module._to_tensors

    def noisy(*args):
        print("decoded a tile")
        return real(*args)

    monkeypatch.setattr(tiles_module, "_to_tensors", noisy)
    TileCache(mixed_samples, workers=1)  # small and not asked: silent
    assert "tile cache" not in capsys.readouterr().out
    TileCache(mixed_samples, progress=True, workers=1)
    out = capsys.readouterr().out
    assert out.index("tile cache: 6 tiles") < out.index("decoded a tile")
    monkeypatch.setattr(tiles_module, "ANNOUNCE_BYTES", 1)  # big caches always announce
    TileCache(mixed_samples, workers=1)
    assert capsys.readouterr().out.startswith("tile cache: 6 tiles")


def test_transforms_run_in_the_calling_thread_and_match_the_plain_path(mixed_samples):
    threads = set()

    def invert(image):  # stands in for stain normalisation, which keeps a count of fallbacks
        threads.add(threading.get_ident())
        return 255 - image

    cache = TileCache(mixed_samples, transform=invert, workers=3)
    assert threads == {threading.get_ident()}
    files = FileTiles(mixed_samples, transform=invert)
    for i in range(len(mixed_samples)):
        assert all(torch.equal(a, b) for a, b in zip(cache.tile(i), files.tile(i)))


def test_a_tile_that_does_not_decode_to_its_header_size_is_named(mixed_samples):
    def crop(image):  # a transform that changes the size, as a careless one might
        return image[:-2]

    with pytest.raises(ValueError, match=r"image.*tile00\.png: .* the image header says"):
        TileCache(mixed_samples, transform=crop)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("gpu_fraction", [0.5, 0.0], ids=["gpu-cache", "host-cache"])
def test_cutting_and_augmenting_a_batch_on_the_gpu_never_waits_for_it(mixed_samples, gpu_fraction):
    device = torch.device("cuda")
    cache = TileCache(mixed_samples, device=device, gpu_fraction=gpu_fraction)
    assert cache.device.type == ("cuda" if gpu_fraction else "cpu")
    # on the GPU, batches read the cache itself; from host memory, only their tiles travel
    assert (cache.flat([0], device).words is cache.store.words) == bool(gpu_fraction)
    g = generator()
    augmented_batch(cache, 8, 64, g, device)  # first-call allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
    try:
        for _ in range(3):
            images, masks = augmented_batch(cache, 8, 64, g, device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = TileCache(mixed_samples)
    g_cpu = generator()
    for _ in range(4):  # the same random stream as on the CPU: the same crops and flips
        cpu_images, cpu_masks = augmented_batch(cpu, 8, 64, g_cpu)
    assert torch.equal(masks.cpu(), cpu_masks)
    assert torch.allclose(images.cpu(), cpu_images, atol=1e-4)
