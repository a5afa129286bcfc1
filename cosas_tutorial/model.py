"""FPN decoder + Mix-Vision-Transformer (SegFormer's MiT) encoder, built with smp."""

from __future__ import annotations

import sys

import segmentation_models_pytorch as smp
import torch
from huggingface_hub import constants as hub_constants
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ENCODERS, WEIGHTS, RunConfig

STRIDE = 32  # MiT + FPN need height and width divisible by 32


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but could not be fetched; ``reason`` says why."""

    def __init__(self, weights: str, encoder: str, reason: str):
        self.reason = reason
        super().__init__(
            f"could not load {weights} weights for {encoder} ({reason}). Either connect to the "
            "internet once (the weights are cached afterwards), or start from random "
            'initialisation explicitly: WEIGHTS = "none" in a notebook\'s parameters cell '
            '("auto" falls back on it by itself), --weights none on the command line '
            "(expect lower scores: the paper used ImageNet weights)."
        )


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
    error says how to proceed instead of silently training from scratch
    (:func:`resolve_weights` decides beforehand what to do without them).
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
        why = "the model hub is in offline mode" if offline else type(err).__name__
        raise WeightsUnavailableError(weights, encoder, f"{why}: {err}") from err


def resolve_weights(config: RunConfig, weights: str = "auto") -> RunConfig:
    """``config`` with its encoder weights settled before any training starts.

    ``"none"``: random initialisation. ``"imagenet"``: ImageNet weights, or
    :class:`WeightsUnavailableError` now rather than when training starts. ``"auto"``: the
    configuration's own weights (the profile's: ImageNet for gpu and paper) when they load, else
    random initialisation with a printed warning, so that a notebook goes on without the model
    hub. Weights are loaded once here, which caches them for training.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    wanted = {"auto": config.encoder_weights, "imagenet": "imagenet", "none": None}[weights]
    if wanted is not None:
        try:
            build_model(config.encoder, wanted)
        except WeightsUnavailableError as err:
            if weights != "auto":
                raise
            print(
                f"Warning: {wanted} weights for {config.encoder} could not be loaded "
                f"({err.reason}); the encoder starts from random initialisation, and scores "
                f"will be lower than with {wanted} weights.",
                file=sys.stderr,
            )
            wanted = None
    return config.replace(encoder_weights=wanted)


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
