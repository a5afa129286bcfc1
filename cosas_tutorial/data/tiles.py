"""Tiles as tensors: decode each PNG once into a uint8 cache, then cut training batches from it.

The cache lives on the GPU when it fits (the whole COSAS training set of one task is ≈1.2 GB of
uint8 image, 1.6 GB with the masks), else in pinned host memory, so that batch preparation
costs almost nothing next to the model step. :class:`FileTiles` is the same interface reading
from disk every time; it exists to show (and test) that the cache changes speed, not batches.

A batch's random numbers (which tile, what scale, where, which flip) are drawn on the host from
a CPU generator, and the crop geometry is worked out there too, so cutting a batch never waits
for the GPU; on the tensors' device a batch is a few gathers from the cache (:func:`sample_batch`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..env import is_on, to_device
from .cosas import read_image, read_mask
from .layout import Sample

ImageTransform = Callable[[np.ndarray], np.ndarray]  # e.g. stain normalisation, uint8 HxWx3

GPU_FRACTION = 0.5  # the cache goes on the GPU if it takes at most this share of free memory
ANNOUNCE_BYTES = 256 * 2**20  # caches at least this big always announce themselves


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Size of a tile after rescaling by ``scale`` (at least one pixel each way)."""
    if scale == 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def _decode(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    return read_image(sample.image), read_mask(sample.mask)


def _tensors(image, mask, scale: float, transform: ImageTransform | None):
    if transform is not None:
        image = transform(image)
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    mask = torch.from_numpy(mask)[None]
    size = scaled_size(img.shape[1], img.shape[2], scale)
    if size != tuple(img.shape[1:]):
        img = (
            F.interpolate(
                img[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
            )[0]
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
        mask = F.interpolate(mask[None], size=size, mode="nearest")[0]
    return img, mask


def _to_tensors(sample: Sample, scale: float, transform: ImageTransform | None):
    return _tensors(*_decode(sample), scale, transform)


def _sizes(samples: Sequence[Sample], scale: float) -> list[tuple[int, int]]:
    """(height, width) of each tile once rescaled, from the image headers alone."""
    sizes = []
    for sample in samples:
        with Image.open(sample.image) as im:
            width, height = im.size
        sizes.append(scaled_size(height, width, scale))
    return sizes


def _cache_bytes(sizes: Sequence[tuple[int, int]]) -> int:
    """Bytes of tiles of these (height, width) sizes in the cache: 4 a pixel (RGB + label)."""
    return 4 * sum(h * w for h, w in sizes)


def _decoded(
    samples: Sequence[Sample], scale: float, transform: ImageTransform | None, workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Decoded tiles in order. PNG decoding runs in ``workers`` threads (it releases the GIL),
    at most ``2 * workers`` tiles ahead; the transform (which may keep state, e.g. a count of
    tiles it could not normalise) and the resizing run in the calling thread."""
    if workers <= 1:
        for sample in samples:
            yield _to_tensors(sample, scale, transform)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        queue = iter(samples)
        for sample in queue:
            pending.append(pool.submit(_decode, sample))
            if len(pending) >= 2 * workers:
                break
        while pending:
            image, mask = pending.popleft().result()
            sample = next(queue, None)
            if sample is not None:
                pending.append(pool.submit(_decode, sample))
            yield _tensors(image, mask, scale, transform)


GLASS = (255, 255, 255, 0)  # white, not tumour: what lies beyond a tile's edge
# the same four bytes as one packed word (in this machine's byte order); filling a word with it
# on the GPU needs no copy from the host, so no wait for the GPU
_GLASS_WORD = torch.tensor(GLASS, dtype=torch.uint8).view(torch.int32).item()


def _pack(img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A tile (3×H×W image, 1×H×W mask) as one 32-bit word per pixel: bytes R, G, B, label.

    One word per pixel lets a batch fetch image and mask pixels with ``torch.take``, the
    fastest gather torch has (on one CPU core 3× faster than indexing rows of 3 bytes).
    """
    h, w = img.shape[1:]
    packed = torch.empty((h, w, 4), dtype=torch.uint8, device=img.device)
    packed[..., :3] = img.permute(1, 2, 0)
    packed[..., 3] = mask[0]
    return packed.view(-1).view(torch.int32)


def _rgbl(words: torch.Tensor) -> torch.Tensor:
    """Packed words (any shape) as their bytes: shape + (4,), R, G, B, label."""
    return words.view(torch.uint8).view(*words.shape, 4)


@dataclass(frozen=True)
class FlatTiles:
    """Tiles laid end to end as packed pixels (:func:`_pack`): ``words`` holds n + 1 of them,
    n the pixels of all tiles, the last one glass (:data:`GLASS`), which a window reaching
    past a tile's edge reads. ``starts`` and ``shapes`` give, for each tile asked for, its first
    word and its (height, width)."""

    words: torch.Tensor
    starts: list[int]
    shapes: list[tuple[int, int]]

    @property
    def glass(self) -> int:
        return self.words.shape[0] - 1

    def subset(self, indices: Sequence[int]) -> FlatTiles:
        """The same words, with ``starts`` and ``shapes`` of the tiles ``indices``."""
        return replace(
            self, starts=[self.starts[i] for i in indices], shapes=[self.shapes[i] for i in indices]
        )


def _flatten(
    tiles: Iterable[torch.Tensor],
    shapes: Sequence[tuple[int, int]],
    device: torch.device,
    pin: bool = False,
) -> FlatTiles:
    """Packed tiles (one word per pixel) of the given ``shapes``, copied one after another
    into :class:`FlatTiles` on ``device``, allocated once (in pinned host memory with ``pin``)."""
    total = sum(h * w for h, w in shapes)
    words = torch.empty(total + 1, dtype=torch.int32, device=device, pin_memory=pin)
    words[total] = _GLASS_WORD
    starts, start = [], 0
    for tile_words, (h, w) in zip(tiles, shapes, strict=True):
        # non_blocking: from pinned memory to the GPU, the host does not wait for the copy
        words[start : start + h * w].copy_(tile_words, non_blocking=True)
        starts.append(start)
        start += h * w
    return FlatTiles(words, starts, list(shapes))


class FileTiles:
    """Tiles decoded from disk on every access (the conventional path)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        scale: float = 1.0,
        transform: ImageTransform | None = None,
        device="cpu",
    ):
        if not samples:
            raise ValueError("no samples to train on")
        self.samples = list(samples)
        self.scale, self.transform = scale, transform
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.samples)

    def tile(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(3×H×W uint8 image, 1×H×W uint8 mask in {0, 1}) of tile ``index``."""
        img, mask = _to_tensors(self.samples[index], self.scale, self.transform)
        return img.to(self.device), mask.to(self.device)

    def packed(self, index: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tile ``index`` packed (:func:`_pack`), and its (height, width)."""
        img, mask = self.tile(index)
        return _pack(img, mask), tuple(img.shape[1:])

    def flat(self, indices: Sequence[int], device) -> FlatTiles:
        """The tiles ``indices`` (repeats allowed) as :class:`FlatTiles` on ``device``, holding
        just these tiles, each once."""
        unique = list(dict.fromkeys(indices))
        words, shapes = zip(*(self.packed(i) for i in unique))
        return _flatten(words, shapes, device).subset([unique.index(i) for i in indices])


def _gpu_room(device: torch.device) -> int:
    """Bytes a new tensor can take on ``device``: free memory plus what torch's allocator
    holds in reserve without using."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


class TileCache(FileTiles):
    """Every tile decoded once into uint8 tensors on ``device`` (or pinned host memory).

    On a CUDA ``device`` the cache stays on the GPU if it needs at most ``gpu_fraction`` of the
    memory still free there (the rest is left to the model), else it goes to pinned host memory
    and each batch's tiles travel to the GPU. The estimate (from the image headers) is printed
    before any tile is decoded when ``progress`` is set or the cache is big (≥ 256 MiB).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        scale: float = 1.0,
        transform: ImageTransform | None = None,
        device="cpu",
        progress: bool = False,
        gpu_fraction: float = GPU_FRACTION,
        workers: int | None = None,
    ):
        super().__init__(samples, scale, transform, device)
        sizes = _sizes(self.samples, scale)  # read once: the estimate and the allocation
        self.nbytes = _cache_bytes(sizes)
        room = None
        if self.device.type == "cuda":
            room = _gpu_room(self.device)
            if self.nbytes > gpu_fraction * room:
                self.device = torch.device("cpu")
        self.pinned = self.device.type == "cpu" and torch.cuda.is_available()
        if progress or self.nbytes >= ANNOUNCE_BYTES:
            where = "pinned host memory" if self.pinned else str(self.device)
            if self.pinned and room is not None:
                where += f" (GPU: {room / 2**30:.1f} GiB free, keeping half for the model)"
            print(
                f"tile cache: {len(self.samples)} tiles, {self.nbytes / 2**20:.0f} MiB "
                f"as uint8, in {where}",
                flush=True,
            )
        workers = workers or min(4, os.cpu_count() or 1)
        decoded = _decoded(self.samples, scale, transform, workers)
        packed = (
            _pack(*_checked(sample, size, img, mask))
            for sample, size, (img, mask) in zip(self.samples, sizes, decoded)
        )
        self.store = _flatten(
            tqdm(packed, total=len(self.samples), desc="decoding tiles", disable=not progress),
            sizes,
            self.device,
            pin=self.pinned,
        )

    def packed(self, index: int) -> tuple[torch.Tensor, tuple[int, int]]:
        (h, w), start = self.store.shapes[index], self.store.starts[index]
        return self.store.words[start : start + h * w], (h, w)

    def tile(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        words, (h, w) = self.packed(index)
        rgbl = _rgbl(words).view(h, w, 4).permute(2, 0, 1)
        return rgbl[:3], rgbl[3:]

    def flat(self, indices: Sequence[int], device) -> FlatTiles:
        if not is_on(self.store.words, device):  # a host cache: the batch's tiles travel
            return super().flat(indices, device)
        return self.store.subset(indices)

    def tensor_bytes(self) -> int:
        """Bytes the cached tiles take (without the one glass pixel)."""
        return self.store.words.nbytes - 4


def _checked(sample: Sample, size: tuple[int, int], img: torch.Tensor, mask: torch.Tensor):
    """``img, mask`` if both have the ``size`` the image header announced, else a clear error."""
    for path, tensor in ((sample.image, img), (sample.mask, mask)):
        got = tuple(tensor.shape[1:])
        if got != size:
            raise ValueError(
                f"{path}: {got[1]}×{got[0]} pixels after decoding and rescaling, "
                f"but the image header says {size[1]}×{size[0]} (run `cosas data check`)"
            )
    return img, mask


def draw_crops(n_tiles: int, batch_size: int, g: torch.Generator, scale_range=(0.8, 1.25)):
    """Tile index, scale, y fraction and x fraction of each crop of a batch (four arrays),
    drawn from the CPU generator ``g``."""
    picks = torch.randint(0, n_tiles, (batch_size,), generator=g)
    u = torch.rand(batch_size, 3, generator=g)
    scales = scale_range[0] + (scale_range[1] - scale_range[0]) * u[:, 0]
    return picks.tolist(), scales.tolist(), u[:, 1].tolist(), u[:, 2].tolist()


def _axis_sources(
    crop: int, windows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel of a crop reads from, along one axis, for every crop of a batch.

    A window of ``windows[k]`` pixels from ``offsets[k]`` of a tile ``lengths[k]`` long is
    resized to ``crop`` pixels. Returns (3, k, crop) positions in the tile — the two bilinear
    neighbours and the nearest pixel, -1 past the tile's end (glass) — and the (k, crop) weight
    of the second neighbour. The formulas are those of ``F.interpolate``
    (``align_corners=False``), in float32 as there, so the result matches resizing each window
    on its own.
    """
    scale = (windows.astype(np.float32) / np.float32(crop))[:, None]
    out = np.arange(crop, dtype=np.float32)
    source = np.maximum((out + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
    low = source.astype(np.int64)
    high = np.minimum(low + 1, windows[:, None] - 1)
    weight_high = source - low.astype(np.float32)
    nearest = np.minimum(np.floor(out * scale).astype(np.int64), windows[:, None] - 1)
    positions = np.stack([low, high, nearest]) + offsets[:, None]
    positions[positions >= lengths[:, None]] = -1
    return positions, weight_high


def _flip_and_rotate(down, across, coins: torch.Tensor):
    """Flip and rotate each crop by three fair coins (uniform (k, 3) numbers < 0.5): transpose,
    horizontal flip, vertical flip. ``down`` and ``across`` are the (positions, weights) tables
    that the output's rows and columns read: a transpose swaps them, a flip reverses one."""
    transpose, hflip, vflip = (coins < 0.5).numpy().T[:, :, None]  # each (k, 1)
    down, across = (
        tuple(np.where(transpose, b, a) for a, b in zip(first, second))
        for first, second in ((down, across), (across, down))
    )
    down = tuple(np.where(vflip, t[..., ::-1], t) for t in down)
    across = tuple(np.where(hflip, t[..., ::-1], t) for t in across)
    return down, across


def sample_batch(
    tiles: FileTiles,
    batch_size: int,
    crop: int,
    g: torch.Generator,
    device,
    scale_range: tuple[float, float] = (0.8, 1.25),
    flips: bool = False,
):
    """Random tiles at random scale and position: images in [0, 1], {0,1} masks, on ``device``.

    A window of ``crop / s`` pixels (s drawn from ``scale_range``) is cut and resized to
    ``crop`` (bilinear for the image, nearest for the mask); windows larger than the tile are
    padded with white glass (mask 0). With ``flips`` each crop also gets a random element of the
    dihedral group (three fair coins: transpose, horizontal flip, vertical flip; each of the 8
    flips and 90° rotations with probability 1/8), the same for image and mask. Pass a CPU
    generator: every random number is drawn on the host.

    Written by hand because no library cuts differently sized windows from uint8 tiles without
    converting them whole to float: the crop geometry (which tile pixels feed each output pixel,
    and with what weight) is computed on the host with NumPy, as small (crop, row) and
    (crop, column) tables; flips and rotations only reverse or swap those tables. On the device
    the batch is then five gathers from the cache and three linear blends: about 75 operators
    per batch whatever its size, so the host that issues them stays free for the model step.
    The images come out channels_last, the layout the model runs in on the GPU.
    """
    device = torch.device(device)
    picks, scales, ys, xs = draw_crops(len(tiles), batch_size, g, scale_range)
    source = tiles.flat(picks, device)
    heights, widths = (np.array(sizes) for sizes in zip(*source.shapes))
    windows = np.array([max(1, round(crop / s)) for s in scales])
    rows = (ys * (np.maximum(heights, windows) - windows + 1)).astype(np.int64)
    cols = (xs * (np.maximum(widths, windows) - windows + 1)).astype(np.int64)
    row_at, row_weights = _axis_sources(crop, windows, rows, heights)
    col_at, col_weights = _axis_sources(crop, windows, cols, widths)
    # a pixel's word in the flat store is (tile start + row · width) + column; glass if either
    # part is past the tile's edge (the -1 positions)
    starts = np.array(source.starts)[:, None]
    row_at = np.where(row_at < 0, source.glass, starts + row_at * widths[:, None])
    col_at = np.where(col_at < 0, source.glass, col_at)
    down, across = (row_at, row_weights), (col_at, col_weights)  # for the output's dims -2, -1
    if flips:
        down, across = _flip_and_rotate(down, across, torch.rand((batch_size, 3), generator=g))
    (down, down_weights), (across, across_weights) = down, across
    at = to_device(torch.from_numpy(np.stack([down, across])), device)
    weights = to_device(torch.from_numpy(np.stack([down_weights, across_weights])), device)
    down, across = at[0, :, :, :, None], at[1, :, :, None, :]  # (3, k, crop, 1), (3, k, 1, crop)
    wd, wa = weights[0, :, :, None, None], weights[1, :, None, :, None]  # as rows, as columns

    def read(i: int, j: int) -> torch.Tensor:
        """The packed pixels at rows ``down[i]`` and columns ``across[j]``, as (k, crop, crop, 4)
        bytes; a glass row plus any column, or a row plus a glass column, clips to glass."""
        return _rgbl(torch.take(source.words, (down[i] + across[j]).clamp_max_(source.glass)))

    top = torch.lerp(read(0, 0).float(), read(0, 1).float(), wa)
    bottom = torch.lerp(read(1, 0).float(), read(1, 1).float(), wa)
    rgbl = torch.lerp(top, bottom, wd)  # the label byte is blended too, and dropped here
    images = rgbl[..., :3].div(255).permute(0, 3, 1, 2)
    masks = read(2, 2)[..., 3].unsqueeze(1).float()
    return images, masks
