"""Batch augmentation on the tensor's device (GPU in training, CPU in tests).

Every random draw comes from one explicit ``torch.Generator`` so that a batch is a function of
the seed alone — on CPU and GPU, from the tensor cache or from files. Plain torch rather than
kornia for that reason: kornia's augmentations draw from the global random state.
"""

from __future__ import annotations

import math

import torch

from .stain import hed_to_rgb, rgb_to_hed

# Luma weights (ITU-R BT.601), used for contrast and saturation.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=device)


def flip_rotate(images: torch.Tensor, masks: torch.Tensor, g: torch.Generator):
    """Random horizontal flip and 90° rotation per sample, applied identically to image and mask."""
    n, device = images.shape[0], images.device
    flip = torch.rand(n, generator=g, device=device) < 0.5
    quarter_turns = torch.randint(0, 4, (n,), generator=g, device=device)
    if images.shape[-1] != images.shape[-2]:
        quarter_turns = quarter_turns * 2  # only 0° and 180° keep a non-square crop's shape
    out_images, out_masks = images.clone(), masks.clone()
    for k in range(4):
        for f in (False, True):
            chosen = (quarter_turns % 4 == k) & (flip == f)
            if not chosen.any() or (k == 0 and not f):
                continue
            x, m = images[chosen], masks[chosen]
            if f:
                x, m = x.flip(-1), m.flip(-1)
            out_images[chosen] = torch.rot90(x, k, dims=(-2, -1))
            out_masks[chosen] = torch.rot90(m, k, dims=(-2, -1))
    return out_images, out_masks


def colour_jitter(images: torch.Tensor, g: torch.Generator, strength: float = 0.1):
    """Brightness, contrast, saturation and hue jitter of images in [0, 1]."""
    n, device = images.shape[0], images.device
    view = (n, 1, 1, 1)
    luma = _LUMA.to(device, images.dtype).view(1, 3, 1, 1)
    x = images * _uniform(n, 1 - strength, 1 + strength, g, device).view(view)
    grey = (x * luma).sum(1, keepdim=True)
    mean = grey.mean((2, 3), keepdim=True)
    x = mean + (x - mean) * _uniform(n, 1 - strength, 1 + strength, g, device).view(view)
    grey = (x * luma).sum(1, keepdim=True)
    x = grey + (x - grey) * _uniform(n, 1 - strength, 1 + strength, g, device).view(view)
    return hue_rotate(x, _uniform(n, -strength * math.pi / 2, strength * math.pi / 2, g, device))


def hue_rotate(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``angles`` (radians, one per image) about the grey axis of RGB space."""
    axis = torch.full((3,), 1 / math.sqrt(3), device=images.device, dtype=images.dtype)
    cos, sin = angles.cos().view(-1, 1, 1), angles.sin().view(-1, 1, 1)
    cross = torch.tensor(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]],
        device=images.device,
        dtype=images.dtype,
    )
    outer = torch.outer(axis, axis)
    eye = torch.eye(3, device=images.device, dtype=images.dtype)
    rotation = cos * eye + sin * cross + (1 - cos) * outer  # Rodrigues' formula, (n, 3, 3)
    return torch.einsum("nij,njhw->nihw", rotation, images).clamp(0, 1)


def hed_jitter(images: torch.Tensor, g: torch.Generator, sigma: float = 0.05):
    """H&E stain jitter: scale and shift each stain's concentration (Tellez et al. 2018)."""
    n, device = images.shape[0], images.device
    hed = rgb_to_hed(images)
    scale = _uniform(n * 3, 1 - sigma, 1 + sigma, g, device).view(n, 3, 1, 1)
    shift = _uniform(n * 3, -sigma, sigma, g, device).view(n, 3, 1, 1)
    return hed_to_rgb(hed * scale + shift)


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
