"""FPN decoder + Mix-Vision-Transformer (SegFormer's MiT) encoder, built with smp."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from huggingface_hub import constants as hub_constants
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ENCODERS

STRIDE = 32  # MiT + FPN need height and width divisible by 32


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but could not be fetched."""


# The statistics smp's MiT ImageNet weights were trained with (written here because smp looks
# them up on the model hub, which fails offline).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TumourFPN(smp.FPN):
    """smp's FPN that takes RGB in [0, 1] and first standardises it with ImageNet statistics.

    Inside the model, so that training, prediction and every notebook feed the same [0, 1]
    tensors; the statistics are buffers outside the state dict (saved models stay plain smp).
    Random initialisation learns faster from centred inputs too.
    """

    def __init__(self, encoder: str, weights: str | None):
        super().__init__(encoder_name=encoder, encoder_weights=weights, classes=1)
        shape = (1, 3, 1, 1)
        mean, std = torch.tensor(IMAGENET_MEAN).view(shape), torch.tensor(IMAGENET_STD).view(shape)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x - self.pixel_mean) / self.pixel_std)


def build_model(encoder: str = "mit_b0", weights: str | None = None) -> nn.Module:
    """FPN + MiT with one output channel (tumour logit), for RGB input in [0, 1].

    ``weights="imagenet"`` downloads ImageNet encoder weights from the model hub; if that fails the
    error says how to proceed instead of silently training from scratch.
    """
    if encoder not in ENCODERS:
        raise ValueError(f"encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
    try:
        return TumourFPN(encoder, weights)
    except Exception as err:  # network errors come in many types from the hub client
        if weights is None:
            raise
        # the hub client reads HF_HUB_OFFLINE once, on import: ask it, not the environment
        offline = hub_constants.HF_HUB_OFFLINE
        raise WeightsUnavailableError(
            f"could not load {weights} weights for {encoder} "
            f"({'the model hub is in offline mode' if offline else type(err).__name__}: {err}). "
            "Either connect to the internet once (the weights are cached afterwards), "
            "or train from scratch explicitly with --weights none "
            "(expect lower scores: the paper used ImageNet weights)."
        ) from err


def check_input_size(height: int, width: int) -> None:
    """Raise a clear error for sizes the encoder cannot take."""
    if height % STRIDE or width % STRIDE:
        raise ValueError(
            f"input {height}×{width} is not divisible by {STRIDE}: pad to "
            f"({-(-height // STRIDE) * STRIDE}, {-(-width // STRIDE) * STRIDE}) "
            "or use cosas_tutorial.evaluate.predict_tile, which pads for you"
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, size: int = 512) -> int:
    """Floating-point operations of one forward pass on a 3×size×size input (torch's counter,
    which counts a multiply-add as 2; tables that quote multiply-adds as FLOPs give half)."""
    check_input_size(size, size)
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        was_training = model.training
        model.eval()
        model(torch.zeros(1, 3, size, size, device=device))
        model.train(was_training)
    return counter.get_total_flops()


def summary(encoders=ENCODERS, size: int = 512) -> list[dict]:
    """Parameters and forward FLOPs of FPN + each MiT variant (random weights, CPU)."""
    rows = []
    for name in encoders:
        model = build_model(name)
        rows.append(
            {
                "encoder": name,
                "params_M": count_parameters(model) / 1e6,
                f"GFLOPs@{size}": count_flops(model, size) / 1e9,
            }
        )
    return rows
