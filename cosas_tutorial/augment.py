"""Batch augmentation on the tensor's device (GPU in training, CPU in tests).

Every random number comes from one explicit ``torch.Generator``, so that a batch is a function of
the seed alone: from the tensor cache or from files, on CPU or GPU. The trainer passes a *CPU*
generator: the few numbers a batch needs (a handful per image) are drawn on the host and sent
to the device in one small asynchronous copy each, so the host never waits for the GPU, and a
GPU run sees the same random stream as a CPU run. A CUDA generator works as well, at the cost of
a synchronisation per batch (the flips are chosen on the host).

Plain torch rather than kornia: kornia's random augmentations draw from the global random
state (one cannot hand them a generator), and they run each transform as its own pass over the
batch. Here the whole colour jitter (brightness, contrast, saturation, hue) is one affine 3×3
map per image, and the H&E stain jitter one affine 3×3 map per image in optical-density space,
so a batch costs a few passes over memory, and the same code runs on CPU tensors in CI.
(16 crops of 512² are 50 MB of float32: about ten passes over that per batch. On one busy core
of the development machine that took ≈0.6 s; on a GPU it is memory traffic of milliseconds or
less, next to a model step of tens of milliseconds.)
"""

from __future__ import annotations

import math

import torch

from .stain import OD_FLOOR, RUIFROK_HED

# Luma weights (ITU-R BT.601), used for contrast and saturation (they sum to 1).
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """Send a small host tensor to ``device`` without making the host wait for the GPU.

    On CUDA the tensor is first copied into pinned memory (torch's caching host allocator keeps
    that block alive until the copy is done), so the copy is truly asynchronous.
    """
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _rand(shape, g: torch.Generator, device) -> torch.Tensor:
    """Uniform [0, 1) numbers from ``g`` (on ``g``'s device), delivered on ``device``."""
    return to_device(torch.rand(shape, generator=g, device=g.device), device)


def _between(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


def flip_rotate(images: torch.Tensor, masks: torch.Tensor, g: torch.Generator):
    """A random element of the dihedral group (flips and 90° rotations) per sample, applied
    identically to image and mask.

    Three fair coins per sample (transpose, horizontal flip, vertical flip) give each of the 8
    flips/rotations with probability 1/8; a non-square batch keeps its shape (no transpose: the
    4 flips/180° turns). The coins are read on the host (free with a CPU generator), so each
    sample is copied once, transformed, into the output: no pass over samples left as they are.
    """
    n = images.shape[0]
    coins = (torch.rand((n, 3), generator=g, device=g.device) < 0.5).tolist()
    square = images.shape[-1] == images.shape[-2]

    def apply(x: torch.Tensor, transpose: bool, hflip: bool, vflip: bool) -> torch.Tensor:
        if transpose and square:
            x = x.transpose(-1, -2)  # a view
        dims = [d for d, flip in ((-1, hflip), (-2, vflip)) if flip]
        return x.flip(dims) if dims else x

    out_images = torch.stack([apply(x, *c) for x, c in zip(images, coins)])
    out_masks = torch.stack([apply(m, *c) for m, c in zip(masks, coins)])
    return out_images, out_masks


def _hue_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) rotations by ``angles`` about the grey axis of RGB space (Rodrigues' formula)."""
    a = 1 / math.sqrt(3)
    cross = torch.tensor([[0, -a, a], [a, 0, -a], [-a, a, 0]], dtype=angles.dtype)
    outer = torch.full((3, 3), 1 / 3, dtype=angles.dtype)
    eye = torch.eye(3, dtype=angles.dtype)
    cross, outer, eye = (m.to(angles.device) for m in (cross, outer, eye))
    cos, sin = angles.cos().view(-1, 1, 1), angles.sin().view(-1, 1, 1)
    return cos * eye + sin * cross + (1 - cos) * outer


def hue_rotate(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``angles`` (radians, one per image) about the grey axis of RGB space."""
    rotation = to_device(_hue_matrices(angles), images.device).to(images.dtype)
    return torch.einsum("nij,njhw->nihw", rotation, images).clamp(0, 1)


def colour_jitter(images: torch.Tensor, g: torch.Generator, strength: float = 0.1):
    """Brightness, contrast, saturation and hue jitter of images in [0, 1].

    In sequence: brightness ``x·b``; contrast about the image's mean grey ``m + (x − m)·c``;
    saturation about each pixel's grey ``y + (x − y)·s``; hue rotation by ``h`` about the grey
    axis; then clipping to [0, 1]. Every step is linear in RGB (or affine), so the chain is
    computed as one map ``A·x + t`` per image: a single pass over the batch.
    """
    n = images.shape[0]
    u = torch.rand((n, 4), generator=g, device=g.device)
    b, c, s = (_between(u[:, i], 1 - strength, 1 + strength) for i in range(3))
    h = _between(u[:, 3], -strength * math.pi / 2, strength * math.pi / 2)
    luma = _LUMA.to(u.device, u.dtype)
    eye = torch.eye(3, dtype=u.dtype, device=u.device)
    saturation = s.view(-1, 1, 1) * eye + (1 - s).view(-1, 1, 1) * luma.expand(3, 3)
    linear = _hue_matrices(h) @ saturation * (b * c).view(-1, 1, 1)  # (n, 3, 3)
    # The offset: (1 − c)·b·(mean grey of x), on every channel (grey stays grey under S and the
    # hue rotation because the luma weights sum to 1); mean grey = luma · mean RGB.
    offset_weights = ((1 - c) * b).view(-1, 1) * luma  # (n, 3)
    linear, offset_weights = (to_device(t, images.device) for t in (linear, offset_weights))
    offset = (images.mean((2, 3)) * offset_weights).sum(1).view(n, 1, 1, 1)
    return (torch.einsum("nij,njhw->nihw", linear, images) + offset).clamp_(0, 1)


def hed_jitter(images: torch.Tensor, g: torch.Generator, sigma: float = 0.05):
    """H&E stain jitter in optical-density space (Tellez et al. 2018).

    The optical density is unmixed into haematoxylin, eosin and DAB concentrations (Ruifrok &
    Johnston's stain vectors), each concentration is scaled by a factor in 1 ± sigma and shifted
    by ±sigma, and the result is mixed back. Unmix, scale and mix are one 3×3 map per image:
    ``od' = od·U·diag(scale)·M + shift·M``.
    """
    n = images.shape[0]
    u = torch.rand((n, 6), generator=g, device=g.device)
    scale = _between(u[:, :3], 1 - sigma, 1 + sigma)
    shift = _between(u[:, 3:], -sigma, sigma)
    stains = RUIFROK_HED.to(u.device, u.dtype)  # rows H, E, D in OD space
    unmix = torch.linalg.inv(stains)
    linear = unmix @ (scale.view(n, 3, 1) * stains)  # (n, 3 od in, 3 od out)
    offset = shift @ stains  # (n, 3)
    linear, offset = (to_device(t, images.device) for t in (linear, offset))
    # od = −log x, and x' = exp(−od'): computed in log space, without the two negations
    log = torch.log(images.clamp_min(OD_FLOOR))
    log = torch.einsum("nihw,nio->nohw", log, linear).sub_(offset.view(n, 3, 1, 1))
    return log.exp_().clamp_(0, 1)


def hsv_jitter(images: torch.Tensor, g: torch.Generator, strength: float = 0.15):
    """Stronger hue/saturation jitter, the 'HSV' stain augmentation of several COSAS entries."""
    return colour_jitter(images, g, strength)


STAIN_AUGMENTATIONS = {"none": None, "hed": hed_jitter, "hsv": hsv_jitter}


def augment_batch(images, masks, g: torch.Generator, stain_aug: str = "none"):
    """Geometric + colour augmentation of a batch (images float in [0, 1], masks {0, 1})."""
    images, masks = flip_rotate(images, masks, g)
    images = colour_jitter(images, g)
    stain = STAIN_AUGMENTATIONS[stain_aug]
    if stain is not None:
        images = stain(images, g)
    return images, masks
