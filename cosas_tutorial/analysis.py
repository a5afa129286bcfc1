"""Numbers behind the book's analysis chapters: colour and stain statistics per domain, tile
features for a 2-D embedding, error overlays, threshold sweeps, calibration and run summaries.

Everything here works on plain NumPy arrays (RGB ``uint8`` tiles, ``{0, 1}`` masks, float
probabilities) and on the run records of :mod:`cosas_tutorial.results`, so that it applies to
every data tier (synthetic, open-tissue, the real COSAS data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image

from .data.cosas import read_image, read_mask
from .data.layout import Sample
from .evaluate import image_scores
from .results import image_table
from .stain import estimate_stains, hed_densities, optical_density, tissue_mask
from .strategies import BASELINES

# Colours of the error overlay: true positive, false positive (over-segmentation),
# false negative (missed tumour).
ERROR_COLOURS = {"tp": (0, 170, 0), "fp": (230, 30, 30), "fn": (30, 90, 255)}


# --------------------------------------------------------------------------------------------
# Colour and stain


class Tile(NamedTuple):
    """A tile read for statistics: its sample, RGB image and {0, 1} mask (possibly shrunk)."""

    sample: Sample
    image: np.ndarray
    mask: np.ndarray


def read_small(sample: Sample, max_side: int = 256) -> Tile:
    """A tile and its mask, shrunk to at most ``max_side`` pixels a side (area-averaged image,
    nearest-neighbour mask), for statistics that need no full resolution."""
    image, mask = read_image(sample.image), read_mask(sample.mask)
    height, width = image.shape[:2]
    factor = max_side / max(height, width)
    if factor < 1:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    return Tile(sample, image, mask)


def read_tiles(samples: Sequence[Sample], max_side: int = 256) -> list[Tile]:
    """:func:`read_small` of every sample, in order."""
    return [read_small(sample, max_side) for sample in samples]


def colour_stats(image: np.ndarray) -> dict:
    """Mean RGB, optical density and HED densities over the tissue pixels of one tile."""
    tissue = tissue_mask(image)
    if not tissue.any():  # a blank tile: fall back to every pixel
        tissue = np.ones(image.shape[:2], dtype=bool)
    rgb = image[tissue].astype(np.float64)
    od = optical_density(image)[tissue]
    stains = hed_densities(image)[tissue]
    stats = {"tissue_fraction": float(tissue.mean())}
    for i, channel in enumerate("RGB"):
        stats[channel] = float(rgb[:, i].mean())
    for i, channel in enumerate("RGB"):
        stats[f"OD_{channel}"] = float(od[:, i].mean())
    for i, channel in enumerate("HED"):
        stats[channel] = float(stains[:, i].mean())
    return stats


def _describe(sample: Sample) -> dict:
    return {"task": sample.task, "domain": sample.domain, "split": sample.split, "id": sample.id}


def domain_colour_stats(tiles: Sequence[Tile]) -> pd.DataFrame:
    """One row per tile (of :func:`read_tiles`): task, domain, split, id, tumour fraction and
    :func:`colour_stats`."""
    rows = [
        {**_describe(t.sample), "tumour_fraction": float(t.mask.mean()), **colour_stats(t.image)}
        for t in tiles
    ]
    return pd.DataFrame(rows)


def stain_vectors(image: np.ndarray) -> np.ndarray:
    """Haematoxylin and eosin optical-density unit vectors (rows H, E) of one tile.

    Macenko et al. (2009): keep the stained pixels, project their optical densities onto the
    plane of their two main principal directions, and take the directions at the 1st and 99th
    percentiles of the angle in that plane; haematoxylin is the one that absorbs more red.
    This is :func:`cosas_tutorial.stain.estimate_stains` (torchstain underneath, the same
    estimate the stain normaliser uses), transposed to one row per stain. Raises
    :class:`cosas_tutorial.stain.StainEstimationError` (a ``ValueError``) on a tile with too
    little tissue.
    """
    return estimate_stains(image).stains.T.copy()


def domain_stain_vectors(tiles: Sequence[Tile]) -> pd.DataFrame:
    """One row per tile (of :func:`read_tiles`): task, domain, split, id and its H and E unit
    OD vectors (``H_R, H_G, H_B, E_R, E_G, E_B``); tiles with too little stain are left out."""
    rows = []
    for tile in tiles:
        try:
            vectors = stain_vectors(tile.image)
        except ValueError:
            continue
        row = _describe(tile.sample)
        for stain, vector in zip("HE", vectors):
            row.update({f"{stain}_{c}": float(x) for c, x in zip("RGB", vector)})
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Tile features, a 2-D embedding and how well colour alone tells the domain


def tile_features(images: Sequence[np.ndarray], bins: int = 16) -> np.ndarray:
    """One row per tile: normalised histograms of R, G, B over the tissue pixels, then the mean
    and standard deviation of each HED stain density (``3 * bins + 6`` numbers)."""
    rows = []
    for image in images:
        tissue = tissue_mask(image)
        if not tissue.any():
            tissue = np.ones(image.shape[:2], dtype=bool)
        pixels = image[tissue]
        histograms = [
            np.histogram(pixels[:, i], bins=bins, range=(0, 256))[0] / len(pixels) for i in range(3)
        ]
        stains = hed_densities(image)[tissue]
        rows.append(np.concatenate([*histograms, stains.mean(axis=0), stains.std(axis=0)]))
    return np.asarray(rows, dtype=np.float64)


def embed(features: np.ndarray, n_components: int = 2, seed: int = 0) -> np.ndarray:
    """Standardised features projected on their first principal components (scikit-learn PCA)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(features)
    return PCA(n_components=n_components, random_state=seed).fit_transform(scaled)


def domain_separability(
    features: np.ndarray, labels: Sequence[str], folds: int = 5, seed: int = 0
) -> dict:
    """How well a linear classifier tells the domain of a tile from its features.

    Stratified k-fold cross-validated accuracy of linear discriminant analysis with shrinkage
    (Ledoit-Wolf, suited to few tiles and many features) on standardised features, beside
    chance (the share of the largest domain). ``folds`` is capped by the smallest domain.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2:
        raise ValueError("need at least two domains to tell apart")
    folds = int(min(folds, counts.min()))
    if folds < 2:
        raise ValueError("every domain needs at least two tiles")
    classifier = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    model = make_pipeline(StandardScaler(), classifier)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    accuracy = cross_val_score(model, features, labels, cv=splitter)
    return {
        "accuracy": float(accuracy.mean()),
        "accuracy_std": float(accuracy.std()),
        "chance": float(counts.max() / counts.sum()),
        "domains": len(counts),
        "tiles": int(counts.sum()),
        "folds": folds,
    }


# --------------------------------------------------------------------------------------------
# Errors of a prediction


def error_overlay(
    image: np.ndarray, prediction: np.ndarray, mask: np.ndarray, alpha: float = 0.55
) -> np.ndarray:
    """The tile with true positives, false positives and false negatives tinted
    (:data:`ERROR_COLOURS`); true negatives stay as they are."""
    if image.shape[:2] != prediction.shape or prediction.shape != mask.shape:
        raise ValueError(
            f"image {image.shape[:2]}, prediction {prediction.shape} and mask {mask.shape} "
            "must have the same height and width"
        )
    pred, true = prediction.astype(bool), mask.astype(bool)
    out = image.astype(np.float32).copy()
    for name, where in (("tp", pred & true), ("fp", pred & ~true), ("fn", ~pred & true)):
        colour = np.asarray(ERROR_COLOURS[name], np.float32)
        out[where] = (1 - alpha) * out[where] + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def error_counts(prediction: np.ndarray, mask: np.ndarray) -> dict:
    """Shares of the tile's pixels that are TP, FP, FN and TN, with the predicted and true
    tumour fractions: over-segmentation shows as FP, missed tumour as FN."""
    pred, true = prediction.astype(bool), mask.astype(bool)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and mask {true.shape} differ in shape")
    n = pred.size
    return {
        "tp": float((pred & true).sum() / n),
        "fp": float((pred & ~true).sum() / n),
        "fn": float((~pred & true).sum() / n),
        "tn": float((~pred & ~true).sum() / n),
        "predicted_fraction": float(pred.mean()),
        "tumour_fraction": float(true.mean()),
    }


def all_tumour_score(tumour_fraction):
    """COSAS score of predicting "all tumour" on a tile with this tumour fraction ``f``:
    Dice ``2f / (1 + f)``, IoU ``f``, score their mean; 0 on a tumour-free tile."""
    f = np.asarray(tumour_fraction, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(f > 0, (2 * f / (1 + f) + f) / 2, 0.0)
    return float(score) if score.ndim == 0 else score


def threshold_sweep(
    probabilities: Sequence[np.ndarray], masks: Sequence[np.ndarray], thresholds
) -> pd.DataFrame:
    """Mean (over images) Dice, IoU and COSAS score when probabilities are cut at each threshold."""
    if len(probabilities) != len(masks) or not len(masks):
        raise ValueError("need as many masks as probability maps, and at least one")
    rows = []
    for threshold in thresholds:
        scores = [image_scores(p > threshold, m) for p, m in zip(probabilities, masks)]
        row = {"threshold": float(threshold)}
        for key in ("dice", "iou", "score"):
            row[key] = float(np.mean([s[key] for s in scores]))
        row["score_std"] = float(np.std([s["score"] for s in scores]))
        rows.append(row)
    return pd.DataFrame(rows)


def reliability(
    probabilities: Sequence[np.ndarray], masks: Sequence[np.ndarray], bins: int = 10
) -> pd.DataFrame:
    """Reliability table of pixel probabilities: per probability bin the mean predicted
    probability (``confidence``), the observed tumour share (``frequency``), the pixel count and
    the bin's share of all pixels. Perfect calibration: frequency == confidence in every bin."""
    if len(probabilities) != len(masks) or not len(masks):
        raise ValueError("need as many masks as probability maps, and at least one")
    prob = np.concatenate([np.asarray(p, np.float64).ravel() for p in probabilities])
    true = np.concatenate([np.asarray(m).astype(bool).ravel() for m in masks])
    if prob.shape != true.shape:
        raise ValueError("probability maps and masks differ in size")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)  # 1.0 falls in the last bin
    count = np.bincount(index, minlength=bins)
    total_prob = np.bincount(index, weights=prob, minlength=bins)
    total_true = np.bincount(index, weights=true, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, total_prob / count, np.nan)
        frequency = np.where(count > 0, total_true / count, np.nan)
    return pd.DataFrame(
        {
            "lower": edges[:-1],
            "upper": edges[1:],
            "confidence": confidence,
            "frequency": frequency,
            "count": count,
            "share": count / count.sum(),
        }
    )


def expected_calibration_error(table: pd.DataFrame) -> float:
    """ECE of a :func:`reliability` table: the pixel-weighted mean |frequency - confidence|."""
    used = table[table["count"] > 0]
    return float((used["share"] * (used["frequency"] - used["confidence"]).abs()).sum())


# --------------------------------------------------------------------------------------------
# Run records


def best_strategy(records: Sequence[dict], task: str, metric: str = "score") -> str:
    """The trained strategy with the highest mean in-domain (CV) ``metric`` on ``task``: the
    selection one can make without looking at the unseen domains. Baselines are not candidates."""
    frame = image_table(records)
    frame = frame[
        (frame["task"] == task) & (frame["split"] == "cv") & ~frame["strategy"].isin(BASELINES)
    ]
    if frame.empty:
        raise ValueError(f"no cross-validation records of a trained strategy for {task}")
    means = frame.groupby("strategy")[metric].mean()
    return str(means.idxmax())
