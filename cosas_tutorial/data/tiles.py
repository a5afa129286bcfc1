"""Tiles as tensors: decode each PNG once into a uint8 cache, then cut training batches from it.

The cache lives on the GPU when it fits (the whole COSAS training set of one task is ≈1.2 GB as
uint8), else in pinned host memory, so that batch preparation costs almost nothing next to the
model step. :class:`FileTiles` is the same interface reading from disk every time; it exists to
show (and test) that the cache changes speed, not batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .cosas import read_image, read_mask
from .layout import Sample

ImageTransform = Callable[[np.ndarray], np.ndarray]  # e.g. stain normalisation, uint8 HxWx3


def _to_tensors(sample: Sample, scale: float, transform: ImageTransform | None):
    image = read_image(sample.image)
    if transform is not None:
        image = transform(image)
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    mask = torch.from_numpy(read_mask(sample.mask))[None]
    if scale != 1.0:
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[2] * scale)))
        img = (
            F.interpolate(
                img[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
            )[0]
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
        mask = F.interpolate(mask[None].float(), size=size, mode="nearest")[0].to(torch.uint8)
    return img, mask


def estimate_bytes(samples: Sequence[Sample], scale: float = 1.0) -> int:
    """uint8 bytes the cache will take (image 3 channels + mask 1), from the PNG headers."""
    total = 0
    for sample in samples:
        with Image.open(sample.image) as im:
            width, height = im.size
        total += 4 * round(width * scale) * round(height * scale)
    return total


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
        img, mask = _to_tensors(self.samples[index], self.scale, self.transform)
        return img.to(self.device), mask.to(self.device)


class TileCache(FileTiles):
    """Every tile decoded once into uint8 tensors on ``device`` (or pinned host memory)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        scale: float = 1.0,
        transform: ImageTransform | None = None,
        device="cpu",
        progress: bool = False,
    ):
        super().__init__(samples, scale, transform, device)
        self.nbytes = estimate_bytes(self.samples, scale)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if self.nbytes > 0.5 * free:  # leave the other half to the model
                self.device = torch.device("cpu")
        pin = self.device.type == "cpu" and torch.cuda.is_available()
        if progress:
            where = "pinned host memory" if pin else str(self.device)
            print(
                f"tile cache: {len(self.samples)} tiles, {self.nbytes / 2**20:.0f} MiB in {where}"
            )
        self.images, self.masks = [], []
        for sample in tqdm(self.samples, desc="decoding tiles", disable=not progress):
            img, mask = _to_tensors(sample, scale, transform)
            if pin:
                img, mask = img.pin_memory(), mask.pin_memory()
            self.images.append(img.to(self.device))
            self.masks.append(mask.to(self.device))

    def tile(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.masks[index]


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
    windows larger than the tile are padded with white glass (mask 0).
    """
    gen_device = g.device
    picks = torch.randint(0, len(tiles), (batch_size,), generator=g, device=gen_device).tolist()
    scales = torch.empty(batch_size, device=gen_device).uniform_(*scale_range, generator=g)
    offsets = torch.rand(batch_size, 2, generator=g, device=gen_device)
    images, masks = [], []
    for index, s, (oy, ox) in zip(picks, scales.tolist(), offsets.tolist()):
        img, mask = tiles.tile(index)
        img, mask = img.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        window = max(1, round(crop / s))
        img, mask = _pad_to(img, window, 255), _pad_to(mask, window, 0)
        y = int(oy * (img.shape[1] - window + 1))
        x = int(ox * (img.shape[2] - window + 1))
        images.append(img[:, y : y + window, x : x + window])
        masks.append(mask[:, y : y + window, x : x + window])
    images = torch.cat([_resize(i[None].float(), crop, "bilinear") for i in images]) / 255
    masks = torch.cat([_resize(m[None].float(), crop, "nearest") for m in masks])
    return images, masks


def _pad_to(t: torch.Tensor, size: int, value: int) -> torch.Tensor:
    pad_h, pad_w = max(0, size - t.shape[1]), max(0, size - t.shape[2])
    return F.pad(t, (0, pad_w, 0, pad_h), value=value) if pad_h or pad_w else t


def _resize(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if t.shape[-1] == size and t.shape[-2] == size:
        return t
    if mode == "nearest":
        return F.interpolate(t, size=(size, size), mode="nearest")
    return F.interpolate(t, size=(size, size), mode=mode, align_corners=False)
