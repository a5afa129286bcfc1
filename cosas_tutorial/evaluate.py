"""Scores and prediction: per-image Dice, IoU and the COSAS score; sliding-window inference.

Empty-mask convention (as in public COSAS scoring code): an image whose mask and prediction are
both empty scores Dice = IoU = 1; if only one of them is empty it scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.cosas import read_image, read_mask
from .data.layout import Sample
from .env import autocast_dtype
from .model import STRIDE


def dice_iou(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two binary masks of the same shape."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and mask {target.shape} differ in shape")
    pred, true = prediction.astype(bool), target.astype(bool)
    intersection = np.logical_and(pred, true).sum()
    total = pred.sum() + true.sum()
    if total == 0:
        return 1.0, 1.0
    union = total - intersection
    return float(2 * intersection / total), float(intersection / union)


def image_scores(prediction: np.ndarray, target: np.ndarray) -> dict:
    """Dice, IoU and the COSAS score (Dice + IoU) / 2 of one image."""
    dice, iou = dice_iou(prediction, target)
    return {"dice": dice, "iou": iou, "score": (dice + iou) / 2}


def _window_weights(size: int, device) -> torch.Tensor:
    """Blending weights that fall off towards a window's borders (never to 0)."""
    ramp = torch.hann_window(size + 2, periodic=False, device=device)[1:-1]
    return torch.outer(ramp, ramp).clamp_min(1e-3)


def _tta_views(x: torch.Tensor):
    """The 8 flips/rotations of a batch (or only the 4 flips when not square), with inverses."""
    square = x.shape[-1] == x.shape[-2]
    for k in range(4) if square else (0, 2):
        for flip in (False, True):
            view = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))

            def undo(y, k=k, flip=flip):
                y = torch.rot90(y, -k, dims=(-2, -1))
                return y.flip(-1) if flip else y

            yield view, undo


def window_grid(length: int, window: int, overlap: float) -> tuple[int, int, int]:
    """(number of windows, stride, padded length) covering ``length`` with ``window``-sized
    windows on a regular grid that overlap by at least ``overlap`` of a window.

    The stride is the largest that needs no more windows than a ``window·(1 − overlap)`` stride
    would, so the padding past ``length`` is less than one pixel per window.
    """
    if length <= window:
        return 1, window, window
    longest = max(1, int(window * (1 - overlap)))
    count = math.ceil((length - window) / longest) + 1
    stride = math.ceil((length - window) / (count - 1))
    return count, stride, window + stride * (count - 1)


def _probabilities(model, patches, tta: bool, amp_dtype) -> torch.Tensor:
    """Sigmoid of the model (float32), averaged over the flips/rotations with ``tta``."""
    with torch.autocast(patches.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if not tta:
            return torch.sigmoid(model(patches).float())
        views = [undo(torch.sigmoid(model(view).float())) for view, undo in _tta_views(patches)]
        return torch.stack(views).mean(0)


@torch.no_grad()
def predict_tile(
    model: nn.Module,
    image: np.ndarray,
    window: int,
    scale: float = 1.0,
    overlap: float = 0.25,
    batch_size: int = 16,
    tta: bool = False,
    device: torch.device | None = None,
    amp: bool = True,
) -> np.ndarray:
    """Tumour probability (H×W float32) of an RGB uint8 tile of any size.

    The tile goes to the device as uint8, is rescaled by ``scale``, padded with white glass to
    a regular grid of overlapping ``window``-sized patches (at least one window each way), and
    the patches are predicted in batches of ``batch_size`` (bf16/fp16 autocast on a GPU unless
    ``amp`` is off; channels_last there). The probabilities are blended with border-damped
    weights by one ``fold`` (no per-window loop) and resized back to the input size. With
    ``tta`` each patch's probability is the mean over flips and 90° rotations.

    Memory: one float32 probability per window pixel, e.g. 16 windows of 512² (17 MB) for a
    1500² tile.
    """
    if window % STRIDE:
        raise ValueError(f"window {window} must be a multiple of {STRIDE}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    height, width = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    x = x.permute(2, 0, 1)[None].float().div_(255)
    if scale != 1.0:
        size = (max(STRIDE, round(height * scale)), max(STRIDE, round(width * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    h, w = x.shape[-2:]
    rows, stride_y, padded_h = window_grid(h, window, overlap)
    cols, stride_x, padded_w = window_grid(w, window, overlap)
    x = F.pad(x, (0, padded_w - w, 0, padded_h - h), value=1.0)  # pad with white glass
    # (3, rows, cols, window, window): a view, nothing copied yet
    grid = x[0].unfold(1, window, stride_y).unfold(2, window, stride_x)
    count = rows * cols
    amp_dtype = autocast_dtype(device) if amp else None
    channels_last = device.type == "cuda"
    probs = torch.empty(count, window, window, device=device)
    for start in range(0, count, batch_size):
        index = torch.arange(start, min(count, start + batch_size), device=device)
        patches = grid[:, index // cols, index % cols].transpose(0, 1)  # (batch, 3, win, win)
        if channels_last:
            patches = patches.contiguous(memory_format=torch.channels_last)
        else:
            patches = patches.contiguous()
        probs[start : start + len(index)] = _probabilities(model, patches, tta, amp_dtype)[:, 0]

    weights = _window_weights(window, device)
    columns = (probs * weights).reshape(count, window * window).T[None]
    fold = dict(output_size=(padded_h, padded_w), kernel_size=window, stride=(stride_y, stride_x))
    total = F.fold(columns, **fold)[0, 0]
    norm = F.fold(weights.reshape(1, -1, 1).expand(1, -1, count), **fold)[0, 0]
    prob = (total / norm)[:h, :w]
    if (h, w) != (height, width):
        prob = F.interpolate(
            prob[None, None], size=(height, width), mode="bilinear", align_corners=False
        )[0, 0]
    return prob.float().cpu().numpy()


def evaluate_samples(
    model: nn.Module,
    samples: Sequence[Sample],
    window: int,
    scale: float = 1.0,
    threshold: float = 0.5,
    tta: bool = False,
    transform=None,
    device=None,
    keep_probabilities: bool = False,
) -> list[dict]:
    """Per-image scores of a model (one row per sample, with its task and domain)."""
    rows = []
    for sample in samples:
        image = read_image(sample.image)
        if transform is not None:
            image = transform(image)
        mask = read_mask(sample.mask)
        prob = predict_tile(model, image, window, scale, tta=tta, device=device)
        row = {
            "id": sample.id,
            "task": sample.task,
            "domain": sample.domain,
            "split": sample.split,
            "tumour_fraction": float(mask.mean()),
            **image_scores(prob > threshold, mask),
        }
        if keep_probabilities:
            row["probability"] = prob
        rows.append(row)
    return rows


def baseline_rows(samples: Sequence[Sample], kind: str) -> list[dict]:
    """Scores of a trivial predictor: ``all-tumour`` or ``all-background`` for every tile."""
    if kind not in ("all-tumour", "all-background"):
        raise ValueError(f"unknown baseline {kind!r}")
    rows = []
    for sample in samples:
        mask = read_mask(sample.mask)
        prediction = np.full(mask.shape, kind == "all-tumour")
        rows.append(
            {
                "id": sample.id,
                "task": sample.task,
                "domain": sample.domain,
                "split": sample.split,
                "tumour_fraction": float(mask.mean()),
                **image_scores(prediction, mask),
            }
        )
    return rows
