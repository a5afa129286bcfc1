"""Tiles as tensors: decode each PNG once into a uint8 cache, then cut training batches from it.

The cache lives on the GPU when it fits (the whole COSAS training set of one task is ≈1.2 GB of
uint8 image, 1.6 GB with the masks), else in pinned host memory, so that batch preparation
costs almost nothing next to the model step. :class:`FileTiles` is the same interface reading
from disk every time; it exists to show (and test) that the cache changes speed, not batches.

A batch's random numbers (which tile, what scale, where) are drawn on the host from a CPU
generator, so cutting a batch never waits for the GPU; only the crops and their resizing run on
the tensors' device.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

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


def estimate_bytes(samples: Sequence[Sample], scale: float = 1.0) -> int:
    """uint8 bytes the cache will take (image 3 channels + mask 1), from the image headers."""
    total = 0
    for sample in samples:
        with Image.open(sample.image) as im:
            width, height = im.size
        h, w = scaled_size(height, width, scale)
        total += 4 * h * w
    return total


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


def _gpu_room(device: torch.device) -> int:
    """Bytes a new tensor can take on ``device``: free memory plus what torch's allocator
    holds in reserve without using."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


class TileCache(FileTiles):
    """Every tile decoded once into uint8 tensors on ``device`` (or pinned host memory).

    On a CUDA ``device`` the cache stays on the GPU if it needs at most ``gpu_fraction`` of the
    memory still free there (the rest is left to the model), else it goes to pinned host memory
    and each batch's crops travel to the GPU. The estimate (from the image headers) is printed
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
        self.nbytes = estimate_bytes(self.samples, scale)
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
        self.images, self.masks = [], []
        decoded = _decoded(self.samples, scale, transform, workers)
        for img, mask in tqdm(
            decoded, total=len(self.samples), desc="decoding tiles", disable=not progress
        ):
            if self.pinned:
                img, mask = img.pin_memory(), mask.pin_memory()
            self.images.append(img.to(self.device))
            self.masks.append(mask.to(self.device))

    def tile(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.masks[index]

    def tensor_bytes(self) -> int:
        """Bytes the cached tensors actually take."""
        tensors = self.images + self.masks
        return sum(t.numel() * t.element_size() for t in tensors)


def draw_crops(
    n_tiles: int,
    batch_size: int,
    g: torch.Generator,
    scale_range: tuple[float, float] = (0.8, 1.25),
) -> list[tuple[int, float, float, float]]:
    """(tile index, scale, y fraction, x fraction) of each crop of a batch.

    Drawn on ``g``'s device; a CPU generator costs no synchronisation, a CUDA one costs one.
    """
    picks = torch.randint(0, n_tiles, (batch_size,), generator=g, device=g.device)
    u = torch.rand(batch_size, 3, generator=g, device=g.device)
    scales = scale_range[0] + (scale_range[1] - scale_range[0]) * u[:, 0]
    return list(zip(picks.tolist(), scales.tolist(), u[:, 1].tolist(), u[:, 2].tolist()))


def sample_batch(
    tiles: FileTiles,
    batch_size: int,
    crop: int,
    g: torch.Generator,
    device,
    scale_range: tuple[float, float] = (0.8, 1.25),
):
    """Random tiles at random scale and position: images in [0, 1], {0,1} masks, on ``device``.

    A window of ``crop / s`` pixels (s drawn from ``scale_range``) is cut and resized to ``crop``;
    windows larger than the tile are padded with white glass (mask 0). Pass a CPU generator:
    the random numbers are then drawn on the host and nothing here waits for the GPU.

    Each crop is a view of its cached tile; only the window is converted and resized (one
    ``interpolate`` per crop, into a preallocated batch). The windows differ in size, so a
    batched ``roi_align`` would need the whole cache as floats (4× its memory) or a padded float
    copy per batch: more memory traffic than the per-crop kernels it would save.
    """
    device = torch.device(device)
    crops = draw_crops(len(tiles), batch_size, g, scale_range)
    images = torch.empty(batch_size, 3, crop, crop, device=device)
    masks = torch.empty(batch_size, 1, crop, crop, device=device)
    for i, (index, s, fy, fx) in enumerate(crops):
        img, mask = tiles.tile(index)
        window = max(1, round(crop / s))
        height, width = img.shape[-2:]
        y = int(fy * (max(height, window) - window + 1))
        x = int(fx * (max(width, window) - window + 1))
        img = img[:, y : y + window, x : x + window].to(device, non_blocking=True)
        mask = mask[:, y : y + window, x : x + window].to(device, non_blocking=True)
        img, mask = _pad_to(img, window, 255), _pad_to(mask, window, 0)
        images[i] = _resize(img[None].float(), crop, "bilinear")[0]
        masks[i] = _resize(mask[None], crop, "nearest")[0]
    return images.div_(255), masks


def _pad_to(t: torch.Tensor, size: int, value: int) -> torch.Tensor:
    pad_h, pad_w = max(0, size - t.shape[1]), max(0, size - t.shape[2])
    return F.pad(t, (0, pad_w, 0, pad_h), value=value) if pad_h or pad_w else t


def _resize(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if t.shape[-1] == size and t.shape[-2] == size:
        return t
    if mode == "nearest":
        return F.interpolate(t, size=(size, size), mode="nearest")
    return F.interpolate(t, size=(size, size), mode=mode, align_corners=False)
