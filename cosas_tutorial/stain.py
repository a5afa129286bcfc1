"""Stain optics: RGB ↔ optical density ↔ haematoxylin/eosin/DAB (HED), stain estimation and
normalisation.

On NumPy tiles: optical density (OD), the tissue mask and HED densities, with the OD
convention as an argument (:class:`ODConvention`, :func:`optical_density`, :func:`tissue_mask`,
:func:`hed_densities`). On batches of torch tensors, the same maps (:func:`rgb_to_hed`,
:func:`hed_to_rgb`) run where the batch lies, on the GPU as in augmentation.

Below them, on one NumPy tile at a time: Macenko stain estimation (torchstain) and
normalisation to a reference tile (:class:`MacenkoNormaliser`), the choice of a run's reference
tile (:func:`normaliser_for`), and per-tile and per-domain stain statistics
(:func:`stain_table`, :func:`stain_summary`).
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

# Ruifrok & Johnston (2001) stain vectors in optical-density space, rows = H, E, DAB.
RUIFROK_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
RUIFROK_HED = RUIFROK_HED / RUIFROK_HED.norm(dim=1, keepdim=True)
_UNMIX_HED = np.linalg.inv(RUIFROK_HED.double().numpy())
OD_FLOOR = 1e-6  # avoids log(0) on pure black pixels
# Optical density of glass is about 0; tissue is where the summed OD reaches this (natural log,
# as in Macenko et al. 2009 and torchstain, whose beta is 0.15 per channel).
TISSUE_OD = 0.3


# --- optical density of one NumPy tile ----------------------------------------------------------


class ODConvention(NamedTuple):
    """How intensities become optical density: ``OD = -ln(max(I + offset, 1) / background)``.

    The default (:data:`GLASS_OD`) puts white glass (255) at OD 0 and clips black to one grey
    level; torchstain's Macenko uses ``-ln((I + 1) / 240)`` (:data:`MACENKO_OD`).
    """

    background: float | np.ndarray = 255.0  # intensity of glass (OD 0), one value or per channel
    offset: float = 0.0  # added to every intensity before the log


GLASS_OD = ODConvention()  # white glass (255) at OD 0


def optical_density(rgb: np.ndarray, convention: ODConvention = GLASS_OD) -> np.ndarray:
    """H×W×3 optical density (float64, natural log) of an RGB image under ``convention``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {rgb.shape}")
    intensity = np.maximum(rgb.astype(np.float64) + convention.offset, 1.0)
    return -np.log(intensity / convention.background)


def tissue_mask(
    rgb: np.ndarray,
    threshold: float = TISSUE_OD,
    every_channel: bool = False,
    convention: ODConvention = GLASS_OD,
) -> np.ndarray:
    """Pixels that hold stain, not glass: summed optical density at least ``threshold``, or, with
    ``every_channel``, each channel's (Macenko's rule, with its ``beta`` and convention)."""
    od = optical_density(rgb, convention)
    return (od >= threshold).all(axis=-1) if every_channel else od.sum(axis=-1) >= threshold


def hed_densities(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 stain densities (haematoxylin, eosin, DAB) of an RGB image: Ruifrok-Johnston colour
    deconvolution of :func:`optical_density` (for one image the batched torch
    :func:`rgb_to_hed` costs more in overhead than in arithmetic).

    H&E holds no DAB: the third density is what the fixed H and E vectors do not explain (on
    the synthetic tier, whose eosin is Macenko's and not Ruifrok's, much of the eosin)."""
    return optical_density(rgb) @ _UNMIX_HED


# --- the same on batches of torch tensors -------------------------------------------------------
# For batches of float images in [0, 1] that lie on the device, as in augmentation: NumPy would
# copy them to the host and back. Same convention as optical_density's default (glass at OD 0).


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


# --- Macenko stain estimation and normalisation (NumPy, one uint8 RGB tile at a time) ---------
#
# The stain vectors of a tile are estimated with torchstain's NumPy Macenko normaliser (Macenko et
# al., ISBI 2009; a maintained port of the reference implementation). We use it for the delicate
# part, the plane of the optical densities and the extreme angles in it, on a subsample of the
# tile's pixels (stain vectors do not need every pixel), then compute the concentrations with the
# pseudo-inverse of the 3×2 stain matrix, which is the least-squares solution torchstain's
# `normalize` finds with `np.linalg.lstsq`, four times faster on a 512² tile and same numbers.
# Conventions are torchstain's: OD = -ln((I + 1) / Io) with Io = 240, pixels with any channel's
# OD below beta = 0.15 are background, alpha = 1 percentile for the extreme angles, stain
# strength = the 99th percentile of each concentration.

MACENKO_IO = 240.0
MACENKO_ALPHA = 1.0
MACENKO_BETA = 0.15
MACENKO_OD = ODConvention(background=MACENKO_IO, offset=1.0)
ESTIMATION_PIXELS = 256 * 256  # stain vectors are estimated on at most this many pixels
MIN_TISSUE_FRACTION = 0.02  # below this share of tissue pixels (or …
MIN_TISSUE_PIXELS = 200  # … this many) a tile is treated as glass: no estimate
NORMALISER_FILE = "stain_norm.json"
# torchstain's default reference vectors (HERef): Macenko's for a typical H&E slide.
MACENKO_REFERENCE = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])


class StainEstimationError(ValueError):
    """A tile's stains cannot be estimated (mostly glass or white background, or degenerate)."""


@dataclass(frozen=True, eq=False)
class StainStats:
    """Macenko statistics of one tile: stain vectors and stain strengths.

    ``stains`` is 3×2 (rows R, G, B; columns haematoxylin, eosin), unit optical-density vectors,
    torchstain's ``HERef`` layout; ``max_conc`` the 99th percentile of each stain's concentration.
    """

    stains: np.ndarray
    max_conc: np.ndarray
    tissue_fraction: float = 1.0

    def vector(self) -> np.ndarray:
        """The 8 numbers that describe a tile's staining: H (R, G, B), E (R, G, B), max H, max E."""
        return np.concatenate([self.stains[:, 0], self.stains[:, 1], self.max_conc])

    def to_dict(self) -> dict:
        return {
            "stains": np.asarray(self.stains).tolist(),
            "max_conc": np.asarray(self.max_conc).tolist(),
            "tissue_fraction": float(self.tissue_fraction),
        }

    @classmethod
    def from_dict(cls, d: dict) -> StainStats:
        return cls(
            np.array(d["stains"], dtype=np.float64),
            np.array(d["max_conc"], dtype=np.float64),
            float(d.get("tissue_fraction", 1.0)),
        )


STAT_COLUMNS = ("h_r", "h_g", "h_b", "e_r", "e_g", "e_b", "max_h", "max_e")


def _apply(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows @ matrix.T`` for N×k rows (einsum: NumPy's matmul is ten times slower here)."""
    return np.einsum("nk,mk->nm", rows, matrix)


def estimation_view(image: np.ndarray, max_pixels: int = ESTIMATION_PIXELS) -> np.ndarray:
    """A regular subsample (every k-th row and column) of at most about ``max_pixels`` pixels."""
    height, width = image.shape[:2]
    step = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    return image[::step, ::step]


def _check_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 RGB tile, got {image.dtype} {image.shape}")
    return image


def estimate_stains(
    image: np.ndarray, name: str | None = None, max_pixels: int = ESTIMATION_PIXELS
) -> StainStats:
    """Macenko stain vectors and strengths of one tile (torchstain estimates the vectors).

    Raises :class:`StainEstimationError` when the tile holds too little tissue (less than
    ``MIN_TISSUE_FRACTION`` of its pixels or ``MIN_TISSUE_PIXELS`` pixels: glass, white
    background) or the estimate is degenerate; the message names the tile (``name``).
    """
    import torchstain

    view = _check_rgb(image)
    view = estimation_view(view, max_pixels)
    label = name or f"tile {image.shape[1]}×{image.shape[0]}"
    tissue = tissue_mask(view, MACENKO_BETA, every_channel=True, convention=MACENKO_OD)
    fraction = float(tissue.mean())
    if tissue.sum() < MIN_TISSUE_PIXELS or fraction < MIN_TISSUE_FRACTION:
        raise StainEstimationError(
            f"{label}: only {fraction:.1%} tissue pixels ({int(tissue.sum())}), too few to "
            "estimate stain vectors (glass or white background)"
        )
    estimator = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            estimator.fit(view, Io=MACENKO_IO, alpha=MACENKO_ALPHA, beta=MACENKO_BETA)
    except (np.linalg.LinAlgError, ValueError, IndexError) as err:
        raise StainEstimationError(f"{label}: Macenko estimation failed ({err})") from err
    stains = np.array(estimator.HERef, dtype=np.float64)
    if stains.shape != (3, 2) or not np.isfinite(stains).all():
        raise StainEstimationError(f"{label}: Macenko estimation gave no finite stain vectors")
    stains = stains * np.where(stains.sum(axis=0) < 0, -1.0, 1.0)  # eigenvectors' sign is free
    stains = stains / np.linalg.norm(stains, axis=0, keepdims=True)
    if abs(float(stains[:, 0] @ stains[:, 1])) > 0.999:
        raise StainEstimationError(f"{label}: haematoxylin and eosin vectors coincide")
    conc = _apply(np.linalg.pinv(stains), optical_density(view, MACENKO_OD).reshape(-1, 3))
    max_conc = np.percentile(conc, 99, axis=0)
    if not (np.isfinite(max_conc).all() and (max_conc > 1e-6).all()):
        raise StainEstimationError(f"{label}: no positive stain concentration")
    return StainStats(stains, max_conc, fraction)


class MacenkoNormaliser:
    """Map a tile's stains onto a reference's (Macenko et al. 2009), as an image transform.

    ``normaliser(image) -> image``: estimate the tile's own stain vectors and strengths, unmix
    its optical densities into H and E concentrations, rescale them to the reference's strengths
    and remix them with the reference's vectors. A tile whose stains cannot be estimated (glass,
    white background) comes back unchanged, with a warning naming it; ``fallbacks`` counts them.
    """

    def __init__(self, reference: StainStats, reference_name: str | None = None):
        self.reference = reference
        self.reference_name = reference_name
        self.fallbacks = 0

    @classmethod
    def fit(cls, image: np.ndarray, name: str | None = None) -> MacenkoNormaliser:
        """A normaliser whose reference is ``image`` (raises if it holds too little tissue)."""
        return cls(estimate_stains(image, name), name)

    def __call__(self, image: np.ndarray, name: str | None = None) -> np.ndarray:
        image = _check_rgb(image)
        try:
            source = estimate_stains(image, name)
        except StainEstimationError as err:
            self.fallbacks += 1
            warnings.warn(f"stain normalisation skipped, tile left unchanged: {err}", stacklevel=2)
            return image
        height, width, _ = image.shape
        conc = _apply(
            np.linalg.pinv(source.stains), optical_density(image, MACENKO_OD).reshape(-1, 3)
        )
        conc *= self.reference.max_conc / source.max_conc
        out = MACENKO_IO * np.exp(-_apply(self.reference.stains, conc))
        return np.clip(out, 0, 255).astype(np.uint8).reshape(height, width, 3)

    def to_dict(self) -> dict:
        return {
            "method": "macenko",
            "reference": self.reference_name,
            **self.reference.to_dict(),
            "io": MACENKO_IO,
            "alpha": MACENKO_ALPHA,
            "beta": MACENKO_BETA,
            "estimated_by": "torchstain (numpy backend) MacenkoNormalizer",
        }

    def save(self, folder: Path | str) -> Path:
        """Write ``folder/stain_norm.json`` (reference stain vectors and strengths)."""
        path = Path(folder) / NORMALISER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path | str) -> MacenkoNormaliser:
        d = json.loads((Path(folder) / NORMALISER_FILE).read_text())
        if d.get("method") != "macenko":
            raise ValueError(f"{folder}/{NORMALISER_FILE}: unknown method {d.get('method')!r}")
        return cls(StainStats.from_dict(d), d.get("reference"))

    def __repr__(self) -> str:
        return f"MacenkoNormaliser(reference={self.reference_name!r})"


# --- stain statistics of tiles and domains ------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _file_stats(path: str, mtime_ns: int, size: int) -> StainStats | None:
    from .data.cosas import read_image

    try:
        return estimate_stains(read_image(path), name=path)
    except StainEstimationError as err:
        warnings.warn(f"no stain statistics: {err}", stacklevel=3)
        return None


def sample_stats(sample) -> StainStats | None:
    """Stain statistics of one sample's tile (cached per file), ``None`` for a glass tile."""
    stat = Path(sample.image).stat()
    return _file_stats(str(sample.image), stat.st_mtime_ns, stat.st_size)


def stain_table(samples: Sequence) -> pd.DataFrame:
    """One row per tile: task, split, domain, id, the 8 stain statistics, tissue fraction, ok."""
    import pandas as pd

    rows = []
    for sample in samples:
        stats = sample_stats(sample)
        values = stats.vector() if stats is not None else np.full(len(STAT_COLUMNS), np.nan)
        rows.append(
            {
                "task": sample.task,
                "split": sample.split,
                "domain": sample.domain,
                "id": sample.id,
                **dict(zip(STAT_COLUMNS, values.tolist())),
                "tissue_fraction": stats.tissue_fraction if stats is not None else np.nan,
                "ok": stats is not None,
            }
        )
    return pd.DataFrame(rows)


def angle_degrees(u, v) -> float:
    """Angle between two vectors, in degrees."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    cos = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def stain_summary(samples_or_table) -> pd.DataFrame:
    """Per domain (task, split, domain): tiles, tiles without estimate, median of each stain
    statistic over the tiles, and the angle of the median H and E vectors from the Macenko
    reference vectors (torchstain's defaults) in degrees."""
    import pandas as pd

    table = (
        samples_or_table
        if isinstance(samples_or_table, pd.DataFrame)
        else stain_table(samples_or_table)
    )
    rows = []
    for (task, split, domain), group in table.groupby(["task", "split", "domain"], sort=False):
        good = group[group["ok"]]
        medians = good[list(STAT_COLUMNS)].median()
        h, e = medians[["h_r", "h_g", "h_b"]].to_numpy(), medians[["e_r", "e_g", "e_b"]].to_numpy()
        rows.append(
            {
                "task": task,
                "split": split,
                "domain": domain,
                "tiles": len(group),
                "no_estimate": int((~group["ok"]).sum()),
                **medians.round(3).to_dict(),
                "h_angle": round(angle_degrees(h, MACENKO_REFERENCE[:, 0]), 1)
                if len(good)
                else np.nan,
                "e_angle": round(angle_degrees(e, MACENKO_REFERENCE[:, 1]), 1)
                if len(good)
                else np.nan,
            }
        )
    return pd.DataFrame(rows)


def choose_reference(samples: Sequence):
    """The sample whose stain statistics lie closest to the median of ``samples``.

    Each of the 8 statistics (H and E vectors, H and E strengths) is scaled by its median
    absolute deviation over the tiles, then the Euclidean distance to the per-statistic median is
    taken; ties go to the first sample in the given order. Tiles without an estimate (glass) are
    never chosen. Deterministic: a function of the tiles alone.
    """
    samples = list(samples)
    stats = [sample_stats(s) for s in samples]
    usable = [(s, st.vector()) for s, st in zip(samples, stats) if st is not None]
    if not usable:
        raise StainEstimationError("no training tile holds enough tissue to serve as reference")
    values = np.stack([v for _, v in usable])
    median = np.median(values, axis=0)
    spread = np.median(np.abs(values - median), axis=0)
    spread = np.where(spread > 1e-9, spread, 1.0)
    distance = np.linalg.norm((values - median) / spread, axis=1)
    return usable[int(np.argmin(distance))][0]


def normaliser_for(config, train_samples: Sequence) -> MacenkoNormaliser | None:
    """The stain normaliser a run uses (``config.stain_norm``), or ``None`` for none.

    ``"macenko"``: Macenko normalisation to the training tile closest to the training median
    (:func:`choose_reference`). If no training tile holds tissue, warns and returns ``None``.
    """
    if config.stain_norm == "none":
        return None
    if config.stain_norm != "macenko":
        raise ValueError(f"unknown stain normalisation {config.stain_norm!r}")
    from .data.cosas import read_image

    try:
        reference = choose_reference(train_samples)
    except StainEstimationError as err:
        warnings.warn(f"stain normalisation off: {err}", stacklevel=2)
        return None
    return MacenkoNormaliser.fit(read_image(reference.image), reference.key)


def load_normaliser(folder: Path | str) -> MacenkoNormaliser | None:
    """The normaliser saved in a run's fold folder, or ``None`` if it holds none."""
    if not (Path(folder) / NORMALISER_FILE).is_file():
        return None
    return MacenkoNormaliser.load(folder)
