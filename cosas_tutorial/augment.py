"""Colour augmentation of a batch on the tensor's device (GPU in training, CPU in tests).

The geometric part of augmentation (random crop and scale, flips, 90° rotations) is done where
a batch is cut, by :func:`cosas_tutorial.data.tiles.sample_batch`, in the same pass. What is
left here is colour: brightness, contrast, saturation and hue, and stain jitter.

Every random number comes from one explicit CPU ``torch.Generator``, so that a batch is a
function of the seed alone: from the tensor cache or from files, on CPU or GPU. The few numbers
a batch needs (a handful per image) are drawn on the host and turned, with NumPy, into one 3×3
matrix per image: the whole colour jitter is one affine map of RGB, the H&E stain jitter one
affine map in optical-density space. Only applying those maps runs on the device: a few passes
over the batch, issued as about fifteen operators each, and the host never waits for the GPU.

Plain torch and NumPy rather than kornia: kornia's random augmentations draw from the global
random state (one cannot hand them a generator), and they run each transform as its own pass
over the batch, each issued as several operators.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .env import to_device
from .stain import OD_FLOOR, RUIFROK_HED

# Luma weights (ITU-R BT.601), used for contrast and saturation (they sum to 1).
_LUMA = np.array([0.299, 0.587, 0.114])


def _uniform(g: torch.Generator, n: int, k: int) -> np.ndarray:
    """(n, k) uniform [0, 1) numbers from the CPU generator ``g``, as float64."""
    return torch.rand((n, k), generator=g).double().numpy()


def _on_device(array: np.ndarray, device) -> torch.Tensor:
    """A small NumPy array as a float32 tensor on ``device`` (copied without waiting)."""
    return to_device(torch.from_numpy(array.astype(np.float32)), device)


def hue_matrices(angles: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotations by ``angles`` (radians) about the grey axis of RGB space
    (Rodrigues' formula): grey stays grey, a full turn is the identity."""
    a = 1 / math.sqrt(3)
    cross = np.array([[0, -a, a], [a, 0, -a], [-a, a, 0]])
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    return cos * np.eye(3) + sin * cross + (1 - cos) * np.full((3, 3), 1 / 3)


def _per_pixel(images: torch.Tensor, matrices: np.ndarray) -> torch.Tensor:
    """``x @ matrices[n]`` for every pixel's channel vector ``x`` of image ``n``.

    Three products summed elementwise rather than a batched matrix product: on the CPU the
    BLAS result of a (pixels × 3) @ (3 × 3) product could differ between runs in its last
    digits, and a batch must be a function of the seed alone.
    """
    n, channels = images.shape[:2]
    matrices = _on_device(matrices, images.device).view(n, channels, channels, 1, 1)
    return (images.unsqueeze(2) * matrices).sum(1)


def colour_jitter(images: torch.Tensor, g: torch.Generator, strength: float = 0.1):
    """Brightness, contrast, saturation and hue jitter of images in [0, 1].

    In sequence: brightness ``x·b``; contrast about the image's mean grey ``m + (x − m)·c``;
    saturation about each pixel's grey ``y + (x − y)·s``; hue rotation by ``h`` about the grey
    axis; then clipping to [0, 1]. Every step is linear in RGB (or affine), so the chain is
    computed as one map ``A·x + t`` per image: a single pass over the batch.
    """
    n = images.shape[0]
    u = _uniform(g, n, 4)
    b, c, s = (1 - strength + 2 * strength * u[:, i] for i in range(3))
    h = (u[:, 3] - 0.5) * strength * math.pi
    saturation = s[:, None, None] * np.eye(3) + (1 - s)[:, None, None] * _LUMA
    linear = hue_matrices(h) @ saturation * (b * c)[:, None, None]  # (n, 3, 3), x' = A·x
    # The offset: (1 − c)·b·(mean grey of x), on every channel (grey stays grey under S and the
    # hue rotation because the luma weights sum to 1); mean grey = luma · mean RGB.
    offset_weights = ((1 - c) * b)[:, None] * _LUMA  # (n, 3)
    offset_weights = _on_device(offset_weights, images.device)
    offset = (images.mean((2, 3)) * offset_weights).sum(1).view(n, 1, 1, 1)
    return (_per_pixel(images, linear.transpose(0, 2, 1)) + offset).clamp_(0, 1)


def hed_jitter(images: torch.Tensor, g: torch.Generator, sigma: float = 0.05):
    """H&E stain jitter in optical-density space (Tellez et al. 2018).

    The optical density is unmixed into haematoxylin, eosin and DAB concentrations (Ruifrok &
    Johnston's stain vectors), each concentration is scaled by a factor in 1 ± sigma and shifted
    by ±sigma, and the result is mixed back. Unmix, scale and mix are one 3×3 map per image:
    ``od' = od·U·diag(scale)·M + shift·M``.
    """
    n = images.shape[0]
    u = _uniform(g, n, 6)
    scale = 1 - sigma + 2 * sigma * u[:, :3]
    shift = (2 * u[:, 3:] - 1) * sigma
    stains = RUIFROK_HED.double().numpy()  # rows H, E, D in OD space
    linear = np.linalg.inv(stains) @ (scale[:, :, None] * stains)  # (n, 3 od in, 3 od out)
    offset = _on_device(shift @ stains, images.device)
    # od = −log x, and x' = exp(−od'): computed in log space, without the two negations
    log = _per_pixel(torch.log(images.clamp_min(OD_FLOOR)), linear)
    return log.sub_(offset.view(n, 3, 1, 1)).exp_().clamp_(0, 1)


def hsv_jitter(images: torch.Tensor, g: torch.Generator, strength: float = 0.15):
    """Stronger hue/saturation jitter, the 'HSV' stain augmentation of several COSAS entries."""
    return colour_jitter(images, g, strength)


STAIN_AUGMENTATIONS = {"none": None, "hed": hed_jitter, "hsv": hsv_jitter}


def augment_colours(images: torch.Tensor, g: torch.Generator, stain_aug: str = "none"):
    """Colour jitter, then the stain augmentation ``stain_aug``, of images in [0, 1]."""
    images = colour_jitter(images, g)
    stain = STAIN_AUGMENTATIONS[stain_aug]
    return images if stain is None else stain(images, g)
