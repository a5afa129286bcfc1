"""Stain optics: RGB ↔ optical density ↔ haematoxylin/eosin/DAB (HED) on torch tensors.

Written with plain torch (a 3×3 matrix and a log) so that it runs on batches on the GPU inside
augmentation; skimage's ``rgb2hed`` does the same on one NumPy image at a time.
"""

from __future__ import annotations

import torch

# Ruifrok & Johnston (2001) stain vectors in optical-density space, rows = H, E, DAB.
RUIFROK_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
RUIFROK_HED = RUIFROK_HED / RUIFROK_HED.norm(dim=1, keepdim=True)
OD_FLOOR = 1e-6  # avoids log(0) on pure black pixels


def rgb_to_od(rgb: torch.Tensor) -> torch.Tensor:
    """Optical density -log(I) of intensities in [0, 1] (Beer–Lambert)."""
    return -torch.log(rgb.clamp_min(OD_FLOOR))


def od_to_rgb(od: torch.Tensor) -> torch.Tensor:
    return torch.exp(-od).clamp(0, 1)


def rgb_to_hed(rgb: torch.Tensor, stains: torch.Tensor = RUIFROK_HED) -> torch.Tensor:
    """Stain concentrations of images ``(..., 3, H, W)`` in [0, 1] (channel order H, E, D)."""
    od = rgb_to_od(rgb)
    unmix = torch.linalg.inv(stains.to(rgb.device, rgb.dtype))
    return torch.einsum("...chw,cs->...shw", od, unmix)


def hed_to_rgb(hed: torch.Tensor, stains: torch.Tensor = RUIFROK_HED) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed`."""
    od = torch.einsum("...shw,sc->...chw", hed, stains.to(hed.device, hed.dtype))
    return od_to_rgb(od)
