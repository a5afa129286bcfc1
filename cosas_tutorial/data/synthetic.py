"""Procedural H&E-like tiles with tumour masks, written in the COSAS layout.

Each tile is built as stain concentrations (haematoxylin, eosin) and rendered by a scanner model
(:mod:`cosas_tutorial.data.acquisition`):

* stroma: pink collagen fibres with clefts, fibroblasts, lymphocytes, sometimes fat (breast);
* normal glands: regular, evenly spaced, a lumen lined by one row of small basal nuclei,
  goblet-cell mucin (colon), acini without lumen (pancreas), a myoepithelial layer (breast);
* tumour: a blob-shaped region (the mask) of crowded, irregular, fused or solid glands with
  large, dark, pleomorphic, stratified nuclei, luminal necrosis and pale desmoplastic stroma.

Task 1 (cross-organ) domains differ in morphology (gland size, shape, density, mucin, stroma ...)
and share one scanner; task 2 (cross-scanner) domains share breast-like morphology and differ in
acquisition (stain vectors, colour response, blur, noise, JPEG). ``shift`` in [0, 1] moves every
domain from one reference towards its own profile: at 0 all domains of a task are draws from the
same distribution. A fifth of the tiles are tumour-free.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from cosas_tutorial.data.acquisition import REFERENCE, Acquisition, render, scanner
from cosas_tutorial.data.layout import COSAS_TRAIN_DOMAINS, TASKS, pair_dirs

ORGAN_DOMAINS = {"train": COSAS_TRAIN_DOMAINS["task1"], "test": ("esophagus", "duodenum")}
SCANNER_DOMAINS = {"train": COSAS_TRAIN_DOMAINS["task2"], "test": ("3d-250", "leica-450", "motic")}
DOMAINS = {"task1": ORGAN_DOMAINS, "task2": SCANNER_DOMAINS}
SPLITS = ("train", "test")

GENERATOR_VERSION = 1  # bump when the tiles change: cached trees of another version are stale
EMPTY_TILE_FRACTION = 0.2  # share of tumour-free tiles
MANIFEST = "synthetic.json"
_DISK9 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
_INCOMPLETE = ".synthetic-incomplete.json"


@dataclass(frozen=True)
class Morphology:
    """Tissue parameters of one domain (lengths in pixels; densities per 1000 px² of stroma)."""

    gland_radius: float  # mean outer radius of a normal gland
    gland_aspect: float  # long/short axis of normal glands (tubular glands > 1)
    gland_spacing: float  # centre spacing of normal glands, in gland radii
    gland_coverage: float  # share of the tissue where normal glands lie (< 1: lobules)
    lumen_ratio: float  # lumen radius / gland radius (0: acini without lumen)
    cytoplasm_h: float  # haematoxylin of epithelial cytoplasm (basophilia)
    cytoplasm_e: float  # eosin of epithelial cytoplasm
    mucin: float  # chance of a goblet-cell mucin vacuole per epithelial cell
    nucleus_radius: float  # radius of a normal epithelial nucleus
    nucleus_elongation: float  # long/short axis of normal epithelial nuclei
    myoepithelium: float  # chance that a normal gland has an outer myoepithelial layer
    lymphocytes: float  # lymphocytes per 1000 px² of stroma
    fibroblasts: float  # fibroblast nuclei per 1000 px² of stroma
    stroma_eosin: float  # eosin density of collagen
    fibre_contrast: float  # how fibrous (streaky, with clefts) the stroma is
    adipose: float  # share of the non-glandular tissue that is fat
    tumour_gland_radius: float  # median radius of a tumour gland
    tumour_spacing: float  # centre spacing of tumour glands, in radii (small: crowded)
    tumour_irregularity: float  # amplitude of the shape harmonics of tumour glands
    tumour_solid: float  # chance that a tumour gland is a solid nest without lumen
    tumour_nucleus_scale: float  # tumour / normal nuclear size
    necrosis: float  # chance of necrotic debris in a tumour lumen
    desmoplasia: float  # how pale, bluish and haphazard the tumour stroma is

    def towards(self, other: Morphology, shift: float) -> Morphology:
        """Linear interpolation: ``shift=0`` gives self, ``shift=1`` gives other."""
        return Morphology(
            **{
                f.name: (1 - shift) * getattr(self, f.name) + shift * getattr(other, f.name)
                for f in fields(self)
            }
        )


ORGANS = {
    "colorectum": Morphology(
        gland_radius=17, gland_aspect=1.15, gland_spacing=2.5, gland_coverage=1.0,
        lumen_ratio=0.35, cytoplasm_h=0.06, cytoplasm_e=0.22, mucin=0.7, nucleus_radius=2.4,
        nucleus_elongation=1.7, myoepithelium=0.0, lymphocytes=2.0, fibroblasts=0.6,
        stroma_eosin=0.26, fibre_contrast=0.35, adipose=0.0, tumour_gland_radius=22,
        tumour_spacing=2.0, tumour_irregularity=0.18, tumour_solid=0.1,
        tumour_nucleus_scale=1.5, necrosis=0.6, desmoplasia=0.4,
    ),
    "pancreas": Morphology(
        gland_radius=9, gland_aspect=1.1, gland_spacing=2.15, gland_coverage=1.0,
        lumen_ratio=0.12, cytoplasm_h=0.30, cytoplasm_e=0.40, mucin=0.0, nucleus_radius=2.3,
        nucleus_elongation=1.1, myoepithelium=0.0, lymphocytes=0.3, fibroblasts=0.8,
        stroma_eosin=0.32, fibre_contrast=0.5, adipose=0.0, tumour_gland_radius=12,
        tumour_spacing=3.2, tumour_irregularity=0.25, tumour_solid=0.05,
        tumour_nucleus_scale=1.45, necrosis=0.1, desmoplasia=0.9,
    ),
    "stomach": Morphology(
        gland_radius=13, gland_aspect=2.4, gland_spacing=2.3, gland_coverage=1.0,
        lumen_ratio=0.35, cytoplasm_h=0.05, cytoplasm_e=0.12, mucin=0.3, nucleus_radius=2.2,
        nucleus_elongation=1.6, myoepithelium=0.0, lymphocytes=1.2, fibroblasts=0.5,
        stroma_eosin=0.28, fibre_contrast=0.3, adipose=0.0, tumour_gland_radius=15,
        tumour_spacing=2.0, tumour_irregularity=0.22, tumour_solid=0.3,
        tumour_nucleus_scale=1.55, necrosis=0.2, desmoplasia=0.5,
    ),
    # Unseen organs of the test set (Barrett-type oesophageal and duodenal mucosa).
    "esophagus": Morphology(
        gland_radius=15, gland_aspect=1.5, gland_spacing=3.4, gland_coverage=1.0,
        lumen_ratio=0.5, cytoplasm_h=0.08, cytoplasm_e=0.18, mucin=0.5, nucleus_radius=2.4,
        nucleus_elongation=1.6, myoepithelium=0.0, lymphocytes=1.0, fibroblasts=0.7,
        stroma_eosin=0.33, fibre_contrast=0.6, adipose=0.0, tumour_gland_radius=18,
        tumour_spacing=2.2, tumour_irregularity=0.2, tumour_solid=0.3,
        tumour_nucleus_scale=1.5, necrosis=0.3, desmoplasia=0.6,
    ),
    "duodenum": Morphology(
        gland_radius=11, gland_aspect=1.8, gland_spacing=2.2, gland_coverage=1.0,
        lumen_ratio=0.4, cytoplasm_h=0.10, cytoplasm_e=0.28, mucin=0.45, nucleus_radius=2.3,
        nucleus_elongation=1.7, myoepithelium=0.0, lymphocytes=2.5, fibroblasts=0.4,
        stroma_eosin=0.24, fibre_contrast=0.25, adipose=0.0, tumour_gland_radius=17,
        tumour_spacing=1.9, tumour_irregularity=0.2, tumour_solid=0.15,
        tumour_nucleus_scale=1.5, necrosis=0.4, desmoplasia=0.5,
    ),
}  # fmt: skip

# Task 2 tissue: breast lobules (small acini with a myoepithelial layer) in fibrous stroma and fat;
# invasive carcinoma as irregular nests and tubules.
BREAST = Morphology(
    gland_radius=8, gland_aspect=1.2, gland_spacing=2.3, gland_coverage=0.35, lumen_ratio=0.35,
    cytoplasm_h=0.06, cytoplasm_e=0.22, mucin=0.0, nucleus_radius=2.3, nucleus_elongation=1.2,
    myoepithelium=1.0, lymphocytes=0.5, fibroblasts=0.5, stroma_eosin=0.34, fibre_contrast=0.6,
    adipose=0.35, tumour_gland_radius=12, tumour_spacing=1.9, tumour_irregularity=0.3,
    tumour_solid=0.5, tumour_nucleus_scale=1.6, necrosis=0.15, desmoplasia=0.6,
)  # fmt: skip


def _mean_morphology(items) -> Morphology:
    items = list(items)
    return Morphology(
        **{f.name: sum(getattr(m, f.name) for m in items) / len(items) for f in fields(Morphology)}
    )


# Where every organ starts at shift=0: the average of the three training organs.
REFERENCE_ORGAN = _mean_morphology(ORGANS[name] for name in ORGAN_DOMAINS["train"])


def domain_profile(task: str, domain: str, shift: float) -> tuple[Morphology, Acquisition]:
    """The morphology and scanner of one synthetic domain at a given shift."""
    if task not in DOMAINS or domain not in DOMAINS[task]["train"] + DOMAINS[task]["test"]:
        known = {t: d["train"] + d["test"] for t, d in DOMAINS.items()}
        raise ValueError(f"unknown synthetic domain {task}/{domain}; known: {known}")
    if task == "task1":
        return REFERENCE_ORGAN.towards(ORGANS[domain], shift), REFERENCE
    return BREAST, scanner(domain, shift)


def _tile_key(seed: int, task: str, domain: str, index: int) -> bytes:
    return hashlib.sha256(f"cosas-synthetic/{seed}/{task}/{domain}/{index}".encode()).digest()


def tile_id(seed: int, task: str, domain: str, index: int) -> str:
    """Eight hex digits, stable for (seed, task, domain, index) whatever the shift."""
    return _tile_key(seed, task, domain, index)[:4].hex()


def synthesize(
    task: str, domain: str, index: int, size: int = 256, shift: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One tile: (HxWx3 uint8 RGB image, HxW uint8 mask with 0/255).

    The random streams depend on (seed, task, domain, index) only, so a tile keeps its layout
    at every shift. In task 2, where only the scanner moves, it keeps all of its tissue and its
    mask; in task 1 its glands, and so the edge of its mask, follow the organ's morphology.
    """
    morph, acq = domain_profile(task, domain, shift)
    entropy = int.from_bytes(_tile_key(seed, task, domain, index)[:16], "little")
    layout_rng, tissue_rng, scan_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(3)
    )
    conc, mask = _Tissue(size, morph, layout_rng, tissue_rng).build()
    return render(conc, acq, scan_rng), mask


# --------------------------------------------------------------------------------------------
# Tissue construction


@lru_cache(maxsize=4)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) pixel coordinates as float32 (read-only, cached per size)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def _noise_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth random field, zero mean and unit std, with blobs about ``scale`` pixels wide."""
    cells = max(2, int(round(size / scale)) + 2)
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    field -= field.mean()
    return field / (field.std() + 1e-6)


def _fine_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = cv2.GaussianBlur(rng.standard_normal((size, size), dtype=np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-6)


def _fibres(rng: np.random.Generator, size: int, lengths: tuple[float, float]) -> np.ndarray:
    """Two layers (HxWx2) of wavy streaks (collagen bundles), unit std, random directions."""
    layers = []
    for length in lengths:
        noise = rng.standard_normal((size, size), dtype=np.float32)
        streaks = cv2.GaussianBlur(noise, (0, 0), sigmaX=length, sigmaY=0.8)
        rotation = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(0, 180), 1.0)
        layers.append(
            cv2.warpAffine(streaks, rotation, (size, size), borderMode=cv2.BORDER_REFLECT)
        )
    ys, xs = _pixel_grid(size)
    dy, dx = (3.5 * _noise_field(rng, size, 40) for _ in range(2))
    wavy = cv2.remap(np.dstack(layers), xs + dx, ys + dy, cv2.INTER_LINEAR, cv2.BORDER_REFLECT)
    return wavy / (wavy.std(axis=(0, 1)) + 1e-6)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 with 4 fractional bits (OpenCV's ``shift=4``)."""
    return np.round(np.asarray(points) * 16).astype(np.int32)


def _sample_points(rng, weight: np.ndarray, count: int) -> np.ndarray:
    """``count`` points (x, y) drawn with probability proportional to ``weight`` (HxW >= 0)."""
    flat = weight.ravel().astype(np.float64)
    total = flat.sum()
    if count <= 0 or total <= 0:
        return np.zeros((0, 2))
    cells = rng.choice(flat.size, size=count, p=flat / total)
    ys, xs = np.divmod(cells, weight.shape[1])
    return np.stack([xs, ys], axis=1) + rng.random((count, 2))


def _lookup(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Values of ``image`` at points (x, y), clamped to the image."""
    h, w = image.shape[:2]
    xs = np.clip(xy[:, 0].astype(int), 0, w - 1)
    ys = np.clip(xy[:, 1].astype(int), 0, h - 1)
    return image[ys, xs]


def _lattice(rng, size: int, spacing: float, aspect: float, angle: float, jitter: float):
    """Jittered hexagonal lattice covering the tile (plus a margin), stretched and rotated."""
    along, across = spacing * math.sqrt(aspect), spacing / math.sqrt(aspect)
    reach = size * 0.75 + 2 * spacing
    rows = np.arange(-reach, reach, across)
    cols = np.arange(-reach, reach, along)
    ys, xs = np.meshgrid(rows, cols, indexing="ij")
    xs = xs + (np.arange(len(rows))[:, None] % 2) * along / 2
    u, v = xs.ravel(), ys.ravel()
    cos, sin = math.cos(angle), math.sin(angle)
    points = np.stack([u * cos - v * sin, u * sin + v * cos], axis=1) + size / 2
    points += rng.normal(0, jitter * spacing, points.shape)
    inside = np.all((points > -spacing) & (points < size + spacing), axis=1)
    return points[inside]


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For per-gland item counts: the gland index and the rank within its gland of every item."""
    owner = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, rank


def _radial_degrees(xy: np.ndarray, centre: np.ndarray) -> np.ndarray:
    d = xy - centre
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


_ORDERS = np.arange(2, 7, dtype=float)  # harmonics of gland outlines


@dataclass
class _Glands:
    """Glands as arrays, one row per gland; shapes are wobbly ellipses in polar form."""

    centre: np.ndarray  # (G, 2): x, y
    radius: np.ndarray  # mean outer radius
    aspect: np.ndarray  # long/short axis
    angle: np.ndarray  # orientation, radians
    amplitude: np.ndarray  # (G, 5): amplitudes of the shape harmonics
    phase: np.ndarray  # (G, 5)
    thickness: np.ndarray  # epithelium thickness (>= radius: solid nest)
    tumour: np.ndarray  # bool

    @classmethod
    def random(cls, rng, centre, radius, aspect, angle, irregularity, thickness, tumour):
        n = len(centre)
        return cls(
            centre=np.asarray(centre, float).reshape(n, 2),
            radius=radius,
            aspect=aspect,
            angle=angle,
            amplitude=rng.normal(0, irregularity, (n, _ORDERS.size)) / np.sqrt(_ORDERS - 1),
            phase=rng.uniform(0, 2 * np.pi, (n, _ORDERS.size)),
            thickness=thickness,
            tumour=np.full(n, tumour),
        )

    def __len__(self) -> int:
        return len(self.radius)

    def subset(self, keep: np.ndarray) -> _Glands:
        return _Glands(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def __add__(self, other: _Glands) -> _Glands:
        return _Glands(
            **{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
               for f in fields(self)}
        )  # fmt: skip

    def radius_at(self, owner: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Outer radius of gland ``owner[i]`` in direction ``theta[i]`` (gland frame)."""
        waves = np.cos(_ORDERS * theta[:, None] + self.phase[owner])
        wobble = (self.amplitude[owner] * waves).sum(axis=1)
        return self.radius[owner] * np.clip(1.0 + wobble, 0.4, None)

    def to_image(self, owner: np.ndarray, theta: np.ndarray, rho: np.ndarray) -> np.ndarray:
        """Gland-frame polar coordinates -> image (x, y)."""
        stretch = np.sqrt(self.aspect[owner])
        u, v = rho * np.cos(theta) * stretch, rho * np.sin(theta) / stretch
        cos, sin = np.cos(self.angle[owner]), np.sin(self.angle[owner])
        return np.stack([u * cos - v * sin, u * sin + v * cos], axis=1) + self.centre[owner]

    def outlines(self, inset: np.ndarray | float = 0.0, vertices: int = 36) -> np.ndarray:
        """(G, vertices, 2) polygons of the outer boundary moved ``inset`` pixels inwards."""
        owner = np.repeat(np.arange(len(self)), vertices)
        theta = np.tile(np.linspace(0, 2 * np.pi, vertices, endpoint=False), len(self))
        rho = self.radius_at(owner, theta) - np.broadcast_to(inset, (len(self),))[owner]
        return self.to_image(owner, theta, np.maximum(rho, 0.0)).reshape(len(self), vertices, 2)


class _Nuclei:
    """Ellipses collected as arrays, drawn in one pass."""

    def __init__(self):
        # rows: x, y, semi-axis a, semi-axis b, angle (degrees), density, vesicular (0/1)
        self.parts: list[np.ndarray] = []

    def add(self, xy, a, b, angle_deg, density, vesicular=0.0):
        n = len(xy)
        if n:
            columns = (a, b, angle_deg, density, vesicular)
            cols = [np.broadcast_to(np.asarray(c, float), (n,)) for c in columns]
            self.parts.append(np.column_stack([xy, *cols]))

    def draw(self, size: int, scale: float = 100.0) -> np.ndarray:
        """Haematoxylin density map (float32) of all nuclei; later ones are drawn on top.

        Vesicular nuclei (atypical) get a pale centre, a dark rim and a nucleolus.
        """
        canvas = np.zeros((size, size), np.uint8)
        if not self.parts:
            return canvas.astype(np.float32)
        rows = np.concatenate(self.parts)
        axes = np.maximum(rows[:, 2:4], 0.6)
        values = np.clip(rows[:, 5] * scale, 1, 255)
        drawing = zip(
            _fixed(rows[:, :2]).tolist(),
            _fixed(axes).tolist(),
            _fixed(axes * 0.62).tolist(),
            _fixed(np.maximum(axes[:, 1] * 0.3, 0.8)).tolist(),
            rows[:, 4].tolist(),
            values.round().tolist(),
            rows[:, 6].tolist(),
        )
        for centre, axis, inner, nucleolus, angle, value, vesicular in drawing:
            cv2.ellipse(canvas, centre, axis, angle, 0, 360, value, -1, cv2.LINE_AA, 4)
            if vesicular:
                cv2.ellipse(canvas, centre, inner, angle, 0, 360, value * 0.5, -1, cv2.LINE_AA, 4)
                cv2.circle(canvas, centre, nucleolus, min(255, value * 1.2), -1, cv2.LINE_AA, 4)
        return canvas.astype(np.float32) / scale


def _fill(canvas: np.ndarray, polygons: np.ndarray) -> None:
    """Fill each polygon (one call each: a joint call would XOR overlaps)."""
    for polygon in _fixed(polygons):
        cv2.fillPoly(canvas, [polygon], 255, cv2.LINE_AA, 4)


class _Tissue:
    """Builds the H and E concentration maps and the tumour mask of one tile."""

    def __init__(self, size: int, morph: Morphology, layout_rng, tissue_rng):
        self.size, self.m = size, morph
        self.layout_rng, self.rng = layout_rng, tissue_rng

    # -- layout: tumour region, glass, stain strength (independent of the domain) ---------------
    def _layout(self):
        rng, size = self.layout_rng, self.size
        has_tumour = rng.random() >= EMPTY_TILE_FRACTION
        fraction = rng.uniform(0.03, 1.0)
        ramp_angle, glass_angle = rng.uniform(0, 2 * np.pi, 2)
        has_glass, glass_fraction = rng.random() < 0.25, rng.uniform(0.05, 0.3)
        stain_strength = np.exp(rng.normal(0, 0.08, 2))
        ys, xs = _pixel_grid(size)
        xx, yy = xs / size - 0.5, ys / size - 0.5
        ramp = xx * math.cos(ramp_angle) + yy * math.sin(ramp_angle)
        field = _noise_field(rng, size, size / 2.5) + 2.5 * ramp
        glass_field = 3.0 * (xx * math.cos(glass_angle) + yy * math.sin(glass_angle))
        glass_field += 0.3 * _noise_field(rng, size, size / 8)
        if not has_tumour:
            region = np.zeros((size, size), bool)
        elif fraction > 0.92:
            region = np.ones((size, size), bool)
        else:
            region = field > np.quantile(field, 1 - fraction)
        glass = np.zeros_like(region)
        if has_glass:
            glass = (glass_field > np.quantile(glass_field, 1 - glass_fraction)) & ~region
        return region, ~glass, stain_strength

    # -- glands ---------------------------------------------------------------------------------
    def _normal_glands(self, allowed: np.ndarray, tumour_distance: np.ndarray) -> _Glands:
        m, rng = self.m, self.rng
        angle = rng.uniform(0, np.pi)
        spacing = m.gland_spacing * m.gland_radius
        centres = _lattice(rng, self.size, spacing, m.gland_aspect, angle, 0.12)
        n = len(centres)
        radius = m.gland_radius * np.exp(rng.normal(0, 0.12, n))
        keep = _lookup(allowed, centres) & (
            _lookup(tumour_distance, centres) >= radius * math.sqrt(m.gland_aspect) + 4
        )
        glands = _Glands.random(
            rng, centres, radius, m.gland_aspect * rng.uniform(0.85, 1.15, n),
            angle + rng.normal(0, 0.15, n), 0.05,
            radius * (1 - m.lumen_ratio) * rng.uniform(0.9, 1.1, n), tumour=False,
        )  # fmt: skip
        return glands.subset(keep)

    def _tumour_glands(self, region: np.ndarray) -> _Glands:
        m, rng = self.m, self.rng
        spacing = m.tumour_spacing * m.tumour_gland_radius
        centres = _lattice(rng, self.size, spacing, 1.0, rng.uniform(0, np.pi), 0.35)
        centres = centres[_lookup(region, centres)] if region.any() else centres[:0]
        if region.any() and not len(centres):  # a sliver of tumour: one gland at its deepest
            depth = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)
            y, x = np.unravel_index(np.argmax(depth), region.shape)
            centres = np.array([[x, y]], float)
        n = len(centres)
        radius = m.tumour_gland_radius * np.exp(rng.normal(0, 0.3, n))
        solid = rng.random(n) < m.tumour_solid
        thickness = np.where(solid, 2 * radius, radius * rng.uniform(0.35, 0.7, n))
        return _Glands.random(
            rng, centres, radius, rng.uniform(1.0, 1.8, n), rng.uniform(0, np.pi, n),
            m.tumour_irregularity, thickness, tumour=True,
        )  # fmt: skip

    def _normal_epithelium(self, glands: _Glands, nuclei: _Nuclei) -> tuple[np.ndarray, np.ndarray]:
        """Basal nuclei (plus myoepithelial cells); returns mucin vacuoles (centres, radii)."""
        m, rng = self.m, self.rng
        nr, elong = m.nucleus_radius, m.nucleus_elongation
        perimeter = 2 * np.pi * glands.radius * (1 + 0.25 * (glands.aspect - 1))
        counts = np.maximum(6, (perimeter / (2.1 * nr / math.sqrt(elong) + 1.2)).astype(int))
        owner, rank = _segments(counts)
        step = 2 * np.pi / counts[owner]
        theta = (rank + rng.uniform(0, 1, len(glands))[owner]) * step
        theta += rng.normal(0, 0.12, owner.size) * step
        rho = glands.radius_at(owner, theta) - nr * elong * 0.8 + rng.normal(0, 0.4, owner.size)
        xy = glands.to_image(owner, theta, np.maximum(rho, 0))
        e = elong * rng.uniform(0.85, 1.15, owner.size)
        nuclei.add(
            xy, nr * np.sqrt(e), nr / np.sqrt(e),
            _radial_degrees(xy, glands.centre[owner]) + rng.normal(0, 8, owner.size),
            rng.uniform(0.45, 0.6, owner.size),
        )  # fmt: skip

        goblet = (rng.random(owner.size) < m.mucin) & (glands.thickness[owner] > 2.5 * nr)
        t = theta[goblet] + step[goblet] / 2
        depth = glands.thickness[owner[goblet]]
        r = glands.radius_at(owner[goblet], t) - 0.7 * depth
        vacuoles = glands.to_image(owner[goblet], t, np.maximum(r, 0))
        vacuole_radius = 0.26 * depth * rng.uniform(0.8, 1.2, depth.size)

        layered = rng.random(len(glands)) < m.myoepithelium
        owner, _ = _segments(np.where(layered, counts // 2, 0))
        t = rng.uniform(0, 2 * np.pi, owner.size)
        xy = glands.to_image(owner, t, glands.radius_at(owner, t) - 0.6)
        tangent = _radial_degrees(xy, glands.centre[owner]) + 90
        nuclei.add(xy, nr * 1.3, nr * 0.5, tangent, 0.5)
        return vacuoles, vacuole_radius

    def _tumour_epithelium(self, glands: _Glands, nuclei: _Nuclei) -> None:
        """Crowded, stratified, pleomorphic nuclei filling the epithelium of tumour glands."""
        m, rng = self.m, self.rng
        nr = m.nucleus_radius * m.tumour_nucleus_scale
        inner_ratio = np.clip(1 - glands.thickness / glands.radius, 0.0, None)
        band_area = np.pi * glands.radius**2 * (1 - inner_ratio**2)
        owner, _ = _segments((band_area / (np.pi * (1.9 * nr) ** 2)).astype(int) + 1)
        n = owner.size
        theta = rng.uniform(0, 2 * np.pi, n)
        r_out = glands.radius_at(owner, theta) - nr * 0.9
        r_in = np.clip(r_out * inner_ratio[owner] + nr * 0.9, 0, r_out)
        rho = np.sqrt(rng.uniform(r_in**2, r_out**2))
        xy = glands.to_image(owner, theta, rho)
        size = nr * np.exp(rng.normal(0, 0.22, n))
        elong = rng.uniform(1.1, 2.1, n)
        nuclei.add(
            xy, size * np.sqrt(elong), size / np.sqrt(elong),
            _radial_degrees(xy, glands.centre[owner]) + rng.normal(0, 25, n),
            rng.uniform(0.55, 1.0, n), rng.random(n) < 0.45,
        )  # fmt: skip

    def _cribriform(self, glands: _Glands, lumen: np.ndarray) -> None:
        """Several punched-out lumens inside each of the given (large tumour) glands."""
        rng = self.rng
        owner, _ = _segments(rng.integers(3, 7, len(glands)))
        theta = rng.uniform(0, 2 * np.pi, owner.size)
        rho = glands.radius_at(owner, theta) * np.sqrt(rng.uniform(0, 0.4, owner.size))
        radius = glands.radius[owner] * rng.uniform(0.12, 0.25, owner.size)
        centres = _fixed(glands.to_image(owner, theta, rho)).tolist()
        for (x, y), r in zip(centres, _fixed(radius).tolist()):
            cv2.circle(lumen, (x, y), r, 255, -1, cv2.LINE_AA, 4)

    # -- stroma ---------------------------------------------------------------------------------
    def _stroma_cells(self, stroma: np.ndarray, tumour: np.ndarray, fibre_angle, nuclei):
        m, rng, size = self.m, self.rng, self.size
        area = stroma.sum() / 1000.0
        clusters = np.exp(1.6 * _noise_field(rng, size, 30))
        weight = stroma * clusters * np.where(tumour, 0.3, 1.0)
        xy = _sample_points(rng, weight, rng.poisson(m.lymphocytes * area))
        radius = 2.1 * np.exp(rng.normal(0, 0.08, len(xy)))
        nuclei.add(xy, radius, radius * 0.92, rng.uniform(0, 180, len(xy)), 0.85)
        weight = stroma * np.where(tumour, 1.0 + m.desmoplasia, 1.0)
        xy = _sample_points(rng, weight, rng.poisson(m.fibroblasts * area))
        plump = np.where(_lookup(tumour, xy), 1.4, 1.0)
        nuclei.add(
            xy, 4.2 * plump * rng.uniform(0.8, 1.2, len(xy)), 0.9 * plump,
            fibre_angle + rng.normal(0, 20, len(xy)), 0.55,
        )  # fmt: skip

    def _adipose_walls(self) -> np.ndarray:
        """Fat: thin walls of polygonal cells (Voronoi tiles of random seeds), HxW in 0..1."""
        rng, size = self.rng, self.size
        count = int(size * size / 1800)
        seeds = np.zeros((size, size), bool)
        seeds[rng.integers(0, size, count), rng.integers(0, size, count)] = True
        _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
        label = iy * size + ix
        walls = np.zeros((size, size), np.float32)
        walls[:-1] += label[:-1] != label[1:]
        walls[:, :-1] += label[:, :-1] != label[:, 1:]
        return np.minimum(cv2.GaussianBlur(walls, (0, 0), 0.5) * 1.3, 1.0)

    # -- assembly -------------------------------------------------------------------------------
    def build(self) -> tuple[np.ndarray, np.ndarray]:
        m, rng, size = self.m, self.rng, self.size
        region, tissue, stain_strength = self._layout()
        tumour_distance = cv2.distanceTransform(
            (~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        )
        fat = np.zeros((size, size), bool)
        if m.adipose > 0:
            field = _noise_field(rng, size, 70)
            fat = (field > np.quantile(field, 1 - m.adipose)) & (tumour_distance > 20) & tissue
            fat = cv2.morphologyEx(fat.astype(np.uint8), cv2.MORPH_OPEN, _DISK9).astype(bool)
        lobules = _noise_field(rng, size, 60)
        lobules = lobules >= np.quantile(lobules, 1 - min(m.gland_coverage, 1.0))
        normal = self._normal_glands(tissue & ~fat & lobules, tumour_distance)
        tumour = self._tumour_glands(region)
        glands = normal + tumour

        # Gland masks: outlines first, lumens on top, so that fused tumour glands keep lumens.
        epithelium, lumen, necrosis, tumour_epi, retraction = (
            np.zeros((size, size), np.uint8) for _ in range(5)
        )
        outlines = glands.outlines()
        _fill(epithelium, outlines)
        _fill(tumour_epi, outlines[len(normal) :])
        halo = rng.random(len(tumour)) < 0.6  # clear clefts around invasive nests
        halos = list(_fixed(outlines[len(normal) :][halo]))
        cv2.polylines(retraction, halos, True, 255, 3, cv2.LINE_AA, 4)
        hollow = glands.thickness < glands.radius
        cribriform = (
            glands.tumour & hollow & (glands.radius > 1.3 * m.tumour_gland_radius)
            & (rng.random(len(glands)) < 0.5)
        )  # fmt: skip
        holes = glands.outlines(inset=glands.thickness)
        _fill(lumen, holes[hollow & ~cribriform])
        self._cribriform(glands.subset(cribriform), lumen)
        _fill(necrosis, holes[glands.tumour & hollow & (rng.random(len(glands)) < m.necrosis)])

        nuclei = _Nuclei()
        vacuoles, vacuole_radius = self._normal_epithelium(normal, nuclei)
        self._tumour_epithelium(tumour, nuclei)

        epi = epithelium.astype(np.float32) / 255 * tissue
        lum = lumen.astype(np.float32) / 255 * epi
        nec = necrosis.astype(np.float32) / 255 * lum
        tum_epi = tumour_epi.astype(np.float32) / 255 * epi
        cell = epi - lum  # epithelial cytoplasm
        stroma = tissue & (epithelium < 128) & ~fat

        # Collagen: wavy bundles with clefts; pale, bluish and haphazard (desmoplastic) in tumour.
        fibre_angle = rng.uniform(0, 180)
        fibres = _fibres(rng, size, (7.0, 3.0))
        desmo = np.float32(m.desmoplasia) * cv2.GaussianBlur(region.astype(np.float32), (0, 0), 4)
        fib = (1 - desmo) * fibres[..., 0] + desmo * fibres[..., 1]
        collagen = m.stroma_eosin * (1 - 0.35 * desmo) * (1 + 0.12 * _noise_field(rng, size, 64))
        collagen *= np.clip(1 + 0.4 * m.fibre_contrast * fib, 0.15, None)
        collagen *= np.where(fib < -2.0, 0.3, 1.0)
        cleft = retraction.astype(np.float32) / 255 * (_noise_field(rng, size, 12) > 0)
        stroma_f = (tissue & ~fat).astype(np.float32) * (1 - epi) * (1 - 0.9 * cleft)
        h_map = stroma_f * (0.03 + 0.1 * desmo)
        e_map = stroma_f * collagen
        if m.adipose > 0:
            walls = self._adipose_walls() * fat
            e_map += walls * m.stroma_eosin * 0.9
            h_map += walls * 0.03

        # Epithelial cytoplasm (amphophilic in tumour) and goblet-cell mucin.
        texture = 1 + 0.15 * _fine_noise(rng, size, 1.2)
        h_map += cell * (m.cytoplasm_h + 0.08 * tum_epi) * texture
        e_map += cell * (m.cytoplasm_e * (1 - 0.1 * tum_epi)) * texture
        if len(vacuoles):
            vac = np.zeros((size, size), np.uint8)
            axes = _fixed(np.stack([vacuole_radius, vacuole_radius * 1.25], axis=1)).tolist()
            for centre, axis in zip(_fixed(vacuoles).tolist(), axes):
                cv2.ellipse(vac, centre, axis, 0, 0, 360, 255, -1, cv2.LINE_AA, 4)
            vac = vac.astype(np.float32) / 255 * cell
            h_map = h_map * (1 - vac) + vac * 0.07 * texture
            e_map = e_map * (1 - vac) + vac * 0.03
        # Necrotic debris: mottled eosinophilic mass with nuclear dust.
        e_map += nec * 0.35 * np.clip(1 + 0.5 * _fine_noise(rng, size, 2.0), 0.2, None)
        h_map += nec * 0.08

        self._stroma_cells(stroma, region & stroma, fibre_angle, nuclei)
        dust = _sample_points(rng, nec, int(nec.sum() / 40))
        nuclei.add(dust, 0.9, 0.8, 0.0, 0.9)
        nuc = nuclei.draw(size) * tissue
        chromatin = np.clip(1 + 0.22 * _fine_noise(rng, size, 0.7), 0.5, None)
        cover = np.minimum(nuc / 0.5, 1.0)
        h_map = h_map * (1 - cover) + nuc * chromatin
        e_map = e_map * (1 - 0.75 * cover) + 0.06 * cover

        conc = np.stack([h_map * stain_strength[0], e_map * stain_strength[1]], axis=-1)
        mask = ((region | (tumour_epi > 127)) & tissue).astype(np.uint8) * 255
        return conc.astype(np.float32), mask


# --------------------------------------------------------------------------------------------
# Writing a tree


def _check_arguments(tiles, size, shift, seed, tasks) -> tuple[str, ...]:
    def is_int(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not is_int(tiles) or tiles < 1:
        raise ValueError(f"tiles must be an integer >= 1 (tiles per domain), got {tiles!r}")
    if not is_int(size) or size < 64:
        raise ValueError(f"size must be an integer >= 64 (tile side in pixels), got {size!r}")
    if not isinstance(shift, numbers.Real) or not 0.0 <= shift <= 1.0:
        raise ValueError(f"shift must be a number in [0, 1], got {shift!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(tasks, str) or not tasks or not set(tasks) <= set(TASKS):
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks!r}")
    return tuple(task for task in TASKS if task in tasks)


def _read_parameters(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())["parameters"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: Path, payload: dict) -> None:
    """Write to a temporary name, then rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _write_png(path: Path, array: np.ndarray) -> None:
    image = array[..., ::-1] if array.ndim == 3 else array  # OpenCV writes BGR
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(buffer.tobytes())


def _write_tile(out: Path, split, task, domain, index, size, shift, seed) -> None:
    image_dir, mask_dir = pair_dirs(out, split, task, domain)
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    image, mask = synthesize(task, domain, index, size=size, shift=shift, seed=seed)
    name = tile_id(seed, task, domain, index) + ".png"
    _write_png(image_dir / name, image)
    _write_png(mask_dir / name, mask)


def generate(
    out: Path | str,
    tiles: int = 24,
    size: int = 256,
    shift: float = 0.5,
    seed: int = 0,
    tasks: tuple[str, ...] = ("task1", "task2"),
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write a synthetic COSAS tree to ``out`` and return ``out``.

    ``tiles`` tiles per domain (training and held-out domains alike) of ``size`` x ``size`` pixels,
    written by ``workers`` threads (default: one per CPU, at most 8; the bytes never depend on it).
    Training domains go to COSAS24-TrainingSet, unseen domains to COSAS24-TestSet;
    ``synthetic.json`` records the parameters and is written last. A folder made earlier with
    the same parameters is returned at once; any other non-empty folder is refused
    (FileExistsError), never overwritten.
    """
    tasks = _check_arguments(tiles, size, shift, seed, tasks)
    out = Path(out)
    parameters = {
        "tiles": int(tiles),
        "size": int(size),
        "shift": float(shift),
        "seed": int(seed),
        "tasks": list(tasks),
        "version": GENERATOR_VERSION,
    }
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        made_with = _read_parameters(out / MANIFEST)
        if made_with == parameters:
            return out
        if made_with is not None:
            raise FileExistsError(
                f"{out} holds a synthetic dataset made with other parameters ({made_with}); "
                "choose another folder or delete this one"
            )
        if _read_parameters(out / _INCOMPLETE) != parameters:  # else: our own interrupted run
            raise FileExistsError(
                f"{out} exists and is not empty; refusing to write a synthetic dataset into it"
            )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / _INCOMPLETE, {"parameters": parameters})

    jobs = [
        (split, task, domain, index)
        for split in SPLITS
        for task in tasks
        for domain in DOMAINS[task][split]
        for index in range(tiles)
    ]
    # Tiles are independent (each seeded by its own id) and numpy and OpenCV release the GIL in
    # their heavy parts: two threads wrote 1024² tiles 1.75x faster than one on two cores.
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(_write_tile, out, *job, size, shift, seed) for job in jobs]
        try:
            done = as_completed(futures)
            if progress:
                from tqdm import tqdm

                done = tqdm(done, total=len(jobs), desc="synthetic tiles", unit="tile")
            for future in done:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # an error or Ctrl-C: start no further tiles
            raise

    domains = {split: {task: list(DOMAINS[task][split]) for task in tasks} for split in SPLITS}
    profiles = {}
    for task in tasks:
        for domain in DOMAINS[task]["train"] + DOMAINS[task]["test"]:
            morph, acq = domain_profile(task, domain, shift)
            profiles[f"{task}/{domain}"] = {
                "morphology": {k: round(v, 4) for k, v in asdict(morph).items()},
                "acquisition": acq.to_dict(),
            }
    _write_json(
        out / MANIFEST,
        {
            "generator": "cosas_tutorial.data.synthetic",
            "parameters": parameters,
            "domains": domains,
            "empty_tile_fraction": EMPTY_TILE_FRACTION,
            "profiles": profiles,
        },
    )
    (out / _INCOMPLETE).unlink()
    return out
