"""What a synthetic tile's tissue looks like: a domain's :class:`Morphology`, its carcinoma
recipe, and the painter (:class:`Tissue`) that turns them into stain concentrations and a mask.

* stroma: pink collagen fibres with clefts, fibroblasts, lymphocytes, sometimes fat (breast);
* normal glands: regular, evenly spaced, a lumen lined by one row of small basal nuclei,
  goblet-cell mucin (colon), acini without lumen (pancreas), a myoepithelial layer (breast);
* tumour: a blob-shaped region (the mask) filled by one of two recipes, each with its own
  architecture and cytology: :class:`GlandularCarcinoma` (the organs of task 1) and
  :class:`BreastCarcinoma` (task 2), in pale desmoplastic stroma. A recipe draws its tumour
  units (``glands``), their ``lumens`` and their ``nuclei``, and tints their cytoplasm.

The painter works in stain concentrations (haematoxylin, eosin); a scanner model
(:mod:`cosas_tutorial.data.acquisition`) renders them to RGB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import ClassVar

import cv2
import numpy as np
from scipy import ndimage

from cosas_tutorial.data.drawing import (
    Glands,
    Nuclei,
    centres_inside,
    fibres,
    fill,
    fine_noise,
    fixed,
    lattice,
    lookup,
    noise_field,
    pixel_grid,
    radial_degrees,
    sample_points,
    segments,
)

EMPTY_TILE_FRACTION = 0.2  # share of tumour-free tiles
_DISK9 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))


def blend(recipes: Sequence, weights: Sequence[float]):
    """Weighted mean, field by field, of recipes of one type (dataclasses of numbers, nested)."""
    first = recipes[0]
    if not is_dataclass(first):
        return sum(w * value for w, value in zip(weights, recipes))
    if any(type(recipe) is not type(first) for recipe in recipes):
        raise TypeError(f"cannot blend recipes of different types: {recipes}")
    return type(first)(
        **{f.name: blend([getattr(r, f.name) for r in recipes], weights) for f in fields(first)}
    )


def tumour_nuclei(
    rng,
    glands: Glands,
    radius: float,
    nuclei: Nuclei,
    spacing: float,
    size_sd: float,
    elongation: tuple[float, float],
    darkness: tuple[float, float],
    vesicular: float,
    angles,
) -> None:
    """Add the nuclei of a tumour recipe in the epithelium of ``glands``: log-normal sizes
    around ``radius``, elongations drawn from ``elongation``, orientations from
    ``angles(xy, owner, n)`` (degrees), darkness from ``darkness``, a ``vesicular`` share."""
    owner, xy = glands.epithelial_points(rng, radius, spacing=spacing)
    n = owner.size
    size = radius * np.exp(rng.normal(0, size_sd, n))
    elong = rng.uniform(*elongation, n)
    orientation = angles(xy, owner, n)
    nuclei.add(
        xy, size * np.sqrt(elong), size / np.sqrt(elong), orientation,
        rng.uniform(*darkness, n), rng.random(n) < vesicular,
    )  # fmt: skip


@dataclass(frozen=True)
class GlandularCarcinoma:
    """Adenocarcinoma of the gut and pancreas: crowded, irregular, fused or cribriform glands lined
    by stratified, elongated, pleomorphic nuclei, with dirty necrosis in their lumens."""

    gland_radius: float  # median radius of a tumour gland
    spacing: float  # centre spacing of tumour glands, in radii (small: crowded)
    irregularity: float  # amplitude of the shape harmonics of tumour glands
    solid: float  # chance that a tumour gland is a solid nest without lumen
    nucleus_scale: float  # tumour / normal nuclear size
    necrosis: float  # chance of necrotic debris in a tumour lumen
    desmoplasia: float  # how pale, bluish and haphazard the tumour stroma is

    cytoplasm_h_added: ClassVar[float] = 0.08  # amphophilic cytoplasm: bluer ...
    cytoplasm_e_factor: ClassVar[float] = 0.9  # ... and a little less pink than normal

    def glands(self, rng, size: int, region: np.ndarray) -> Glands:
        """Crowded glands of varied size filling the tumour region, some solid."""
        spacing = self.spacing * self.gland_radius
        centres = lattice(rng, size, spacing, 1.0, rng.uniform(0, np.pi), 0.35)
        centres = centres_inside(region, centres)
        n = len(centres)
        radius = self.gland_radius * np.exp(rng.normal(0, 0.3, n))
        solid = rng.random(n) < self.solid
        thickness = np.where(solid, 2 * radius, radius * rng.uniform(0.35, 0.7, n))
        return Glands.random(
            rng, centres, radius, rng.uniform(1.0, 1.8, n), rng.uniform(0, np.pi, n),
            self.irregularity, thickness,
        )  # fmt: skip

    def lumens(self, rng, glands: Glands, lumen: np.ndarray, necrosis: np.ndarray) -> None:
        """Lumens (several punched-out ones in large cribriform glands) and necrotic debris."""
        hollow = glands.hollow()
        cribriform = (
            hollow & (glands.radius > 1.3 * self.gland_radius) & (rng.random(len(glands)) < 0.5)
        )
        holes = glands.outlines(inset=glands.thickness)
        fill(lumen, holes[hollow & ~cribriform])
        sieves = glands.subset(cribriform)
        owner, _ = segments(rng.integers(3, 7, len(sieves)))
        theta = rng.uniform(0, 2 * np.pi, owner.size)
        rho = sieves.radius_at(owner, theta) * np.sqrt(rng.uniform(0, 0.4, owner.size))
        radius = sieves.radius[owner] * rng.uniform(0.12, 0.25, owner.size)
        centres = fixed(sieves.to_image(owner, theta, rho)).tolist()
        for (x, y), r in zip(centres, fixed(radius).tolist()):
            cv2.circle(lumen, (x, y), r, 255, -1, cv2.LINE_AA, 4)
        fill(necrosis, holes[hollow & (rng.random(len(glands)) < self.necrosis)])

    def nuclei(self, rng, glands: Glands, nucleus_radius: float, nuclei: Nuclei) -> None:
        """Crowded, stratified, pleomorphic nuclei, long axes across the epithelium."""
        tumour_nuclei(
            rng, glands, nucleus_radius * self.nucleus_scale, nuclei, spacing=1.9, size_sd=0.22,
            elongation=(1.1, 2.1), darkness=(0.55, 1.0), vesicular=0.45,
            angles=lambda xy, owner, n: radial_degrees(xy, glands.centre[owner])
            + rng.normal(0, 25, n),
        )  # fmt: skip


@dataclass(frozen=True)
class BreastCarcinoma:
    """Invasive breast carcinoma of no special type: solid nests, small tubules and thin cords of
    cells with round, vesicular nuclei spread evenly (not stratified, no polarity) and pink
    cytoplasm; no luminal necrosis."""

    nest_radius: float  # median radius of a solid nest
    spacing: float  # centre spacing of tumour units, in nest radii
    irregularity: float  # amplitude of the shape harmonics of nests and tubules
    tubule_share: float  # share of tumour units that are tubules (small, with a lumen)
    cord_share: float  # share that are cords (thin, elongated strands of cells)
    nucleus_scale: float  # tumour / normal nuclear size
    desmoplasia: float  # how pale, bluish and haphazard the tumour stroma is

    cytoplasm_h_added: ClassVar[float] = 0.02  # eosinophilic cytoplasm: hardly bluer ...
    cytoplasm_e_factor: ClassVar[float] = 1.3  # ... and pinker than normal

    def glands(self, rng, size: int, region: np.ndarray) -> Glands:
        """Nests, tubules and cords (very elongated, smooth) scattered in the tumour region."""
        spacing = self.spacing * self.nest_radius
        centres = lattice(rng, size, spacing, 1.0, rng.uniform(0, np.pi), 0.4)
        centres = centres_inside(region, centres)
        n = len(centres)
        nest_share = 1.0 - self.tubule_share - self.cord_share
        kind = rng.choice(3, n, p=[nest_share, self.tubule_share, self.cord_share])
        tubule, cord = kind == 1, kind == 2
        radius = self.nest_radius * np.exp(rng.normal(0, 0.35, n))
        radius *= np.where(tubule, 0.6, 1.0)
        aspect = np.where(cord, rng.uniform(4.0, 9.0, n), rng.uniform(1.0, 1.6, n))
        thickness = np.where(tubule, radius * rng.uniform(0.45, 0.6, n), 2 * radius)
        return Glands.random(
            rng, centres, radius, aspect, rng.uniform(0, np.pi, n),
            np.where(cord, 0.03, self.irregularity), thickness,
        )  # fmt: skip

    def lumens(self, rng, glands: Glands, lumen: np.ndarray, necrosis: np.ndarray) -> None:
        """Open lumens of the tubules only."""
        fill(lumen, glands.outlines(inset=glands.thickness)[glands.hollow()])

    def nuclei(self, rng, glands: Glands, nucleus_radius: float, nuclei: Nuclei) -> None:
        """Round-to-oval, mostly vesicular nuclei, evenly spread, randomly oriented."""
        tumour_nuclei(
            rng, glands, nucleus_radius * self.nucleus_scale, nuclei, spacing=1.6, size_sd=0.25,
            elongation=(1.0, 1.35), darkness=(0.55, 0.9), vesicular=0.6,
            angles=lambda xy, owner, n: rng.uniform(0, 180, n),
        )  # fmt: skip


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
    tumour: GlandularCarcinoma | BreastCarcinoma  # the carcinoma recipe and its parameters

    def towards(self, other: Morphology, shift: float) -> Morphology:
        """Linear interpolation: ``shift=0`` gives self, ``shift=1`` gives other."""
        return blend([self, other], [1 - shift, shift])

    def to_dict(self) -> dict:
        """JSON-friendly description (for ``synthetic.json``), the tumour recipe named."""
        values = {
            f.name: round(getattr(self, f.name), 4) for f in fields(self) if f.name != "tumour"
        }
        tumour = {f.name: round(getattr(self.tumour, f.name), 4) for f in fields(self.tumour)}
        return {**values, "tumour": {"recipe": type(self.tumour).__name__, **tumour}}


class Tissue:
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
        ys, xs = pixel_grid(size)
        xx, yy = xs / size - 0.5, ys / size - 0.5
        ramp = xx * math.cos(ramp_angle) + yy * math.sin(ramp_angle)
        field = noise_field(rng, size, size / 2.5) + 2.5 * ramp
        glass_field = 3.0 * (xx * math.cos(glass_angle) + yy * math.sin(glass_angle))
        glass_field += 0.3 * noise_field(rng, size, size / 8)
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

    # -- normal glands --------------------------------------------------------------------------
    def _normal_glands(self, allowed: np.ndarray, tumour_distance: np.ndarray) -> Glands:
        m, rng = self.m, self.rng
        angle = rng.uniform(0, np.pi)
        spacing = m.gland_spacing * m.gland_radius
        centres = lattice(rng, self.size, spacing, m.gland_aspect, angle, 0.12)
        n = len(centres)
        radius = m.gland_radius * np.exp(rng.normal(0, 0.12, n))
        keep = lookup(allowed, centres) & (
            lookup(tumour_distance, centres) >= radius * math.sqrt(m.gland_aspect) + 4
        )
        glands = Glands.random(
            rng, centres, radius, m.gland_aspect * rng.uniform(0.85, 1.15, n),
            angle + rng.normal(0, 0.15, n), 0.05,
            radius * (1 - m.lumen_ratio) * rng.uniform(0.9, 1.1, n),
        )  # fmt: skip
        return glands.subset(keep)

    def _normal_epithelium(self, glands: Glands, nuclei: Nuclei) -> tuple[np.ndarray, np.ndarray]:
        """Basal nuclei (plus myoepithelial cells); returns mucin vacuoles (centres, radii)."""
        m, rng = self.m, self.rng
        nr, elong = m.nucleus_radius, m.nucleus_elongation
        perimeter = 2 * np.pi * glands.radius * (1 + 0.25 * (glands.aspect - 1))
        counts = np.maximum(6, (perimeter / (2.1 * nr / math.sqrt(elong) + 1.2)).astype(int))
        owner, rank = segments(counts)
        step = 2 * np.pi / counts[owner]
        theta = (rank + rng.uniform(0, 1, len(glands))[owner]) * step
        theta += rng.normal(0, 0.12, owner.size) * step
        rho = glands.radius_at(owner, theta) - nr * elong * 0.8 + rng.normal(0, 0.4, owner.size)
        xy = glands.to_image(owner, theta, np.maximum(rho, 0))
        e = elong * rng.uniform(0.85, 1.15, owner.size)
        nuclei.add(
            xy, nr * np.sqrt(e), nr / np.sqrt(e),
            radial_degrees(xy, glands.centre[owner]) + rng.normal(0, 8, owner.size),
            rng.uniform(0.45, 0.6, owner.size),
        )  # fmt: skip

        goblet = (rng.random(owner.size) < m.mucin) & (glands.thickness[owner] > 2.5 * nr)
        t = theta[goblet] + step[goblet] / 2
        depth = glands.thickness[owner[goblet]]
        r = glands.radius_at(owner[goblet], t) - 0.7 * depth
        vacuoles = glands.to_image(owner[goblet], t, np.maximum(r, 0))
        vacuole_radius = 0.26 * depth * rng.uniform(0.8, 1.2, depth.size)

        layered = rng.random(len(glands)) < m.myoepithelium
        owner, _ = segments(np.where(layered, counts // 2, 0))
        t = rng.uniform(0, 2 * np.pi, owner.size)
        xy = glands.to_image(owner, t, glands.radius_at(owner, t) - 0.6)
        tangent = radial_degrees(xy, glands.centre[owner]) + 90
        nuclei.add(xy, nr * 1.3, nr * 0.5, tangent, 0.5)
        return vacuoles, vacuole_radius

    # -- stroma ---------------------------------------------------------------------------------
    def _stroma_cells(self, stroma: np.ndarray, tumour: np.ndarray, fibre_angle, nuclei):
        m, rng, size = self.m, self.rng, self.size
        area = stroma.sum() / 1000.0
        clusters = np.exp(1.6 * noise_field(rng, size, 30))
        weight = stroma * clusters * np.where(tumour, 0.3, 1.0)
        xy = sample_points(rng, weight, rng.poisson(m.lymphocytes * area))
        radius = 2.1 * np.exp(rng.normal(0, 0.08, len(xy)))
        nuclei.add(xy, radius, radius * 0.92, rng.uniform(0, 180, len(xy)), 0.85)
        weight = stroma * np.where(tumour, 1.0 + m.tumour.desmoplasia, 1.0)
        xy = sample_points(rng, weight, rng.poisson(m.fibroblasts * area))
        plump = np.where(lookup(tumour, xy), 1.4, 1.0)
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
        """(HxWx2 float32 H and E densities, HxW uint8 tumour mask with 0/255)."""
        m, rng, size = self.m, self.rng, self.size
        recipe = m.tumour
        region, tissue, stain_strength = self._layout()
        tumour_distance = cv2.distanceTransform(
            (~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        )
        fat = np.zeros((size, size), bool)
        if m.adipose > 0:
            field = noise_field(rng, size, 70)
            fat = (field > np.quantile(field, 1 - m.adipose)) & (tumour_distance > 20) & tissue
            fat = cv2.morphologyEx(fat.astype(np.uint8), cv2.MORPH_OPEN, _DISK9).astype(bool)
        lobules = noise_field(rng, size, 60)
        lobules = lobules >= np.quantile(lobules, 1 - min(m.gland_coverage, 1.0))
        normal = self._normal_glands(tissue & ~fat & lobules, tumour_distance)
        tumour = recipe.glands(rng, size, region)

        # Gland masks: outlines first, lumens on top, so that fused tumour glands keep lumens.
        epithelium, lumen, necrosis, tumour_epi, retraction = (
            np.zeros((size, size), np.uint8) for _ in range(5)
        )
        fill(epithelium, (normal + tumour).outlines())
        tumour_outlines = tumour.outlines()
        fill(tumour_epi, tumour_outlines)
        halo = rng.random(len(tumour)) < 0.6  # clear clefts around invasive nests
        cv2.polylines(retraction, list(fixed(tumour_outlines[halo])), True, 255, 3, cv2.LINE_AA, 4)
        fill(lumen, normal.outlines(inset=normal.thickness)[normal.hollow()])
        recipe.lumens(rng, tumour, lumen, necrosis)

        nuclei = Nuclei()
        vacuoles, vacuole_radius = self._normal_epithelium(normal, nuclei)
        recipe.nuclei(rng, tumour, m.nucleus_radius, nuclei)

        epi = epithelium.astype(np.float32) / 255 * tissue
        lum = lumen.astype(np.float32) / 255 * epi
        nec = necrosis.astype(np.float32) / 255 * lum
        tum_epi = tumour_epi.astype(np.float32) / 255 * epi
        cell = epi - lum  # epithelial cytoplasm
        stroma = tissue & (epithelium < 128) & ~fat

        # Collagen: wavy bundles with clefts; pale, bluish and haphazard (desmoplastic) in tumour.
        fibre_angle = rng.uniform(0, 180)
        fibre_layers = fibres(rng, size, (7.0, 3.0))
        desmo = np.float32(recipe.desmoplasia) * cv2.GaussianBlur(
            region.astype(np.float32), (0, 0), 4
        )
        fib = (1 - desmo) * fibre_layers[..., 0] + desmo * fibre_layers[..., 1]
        collagen = m.stroma_eosin * (1 - 0.35 * desmo) * (1 + 0.12 * noise_field(rng, size, 64))
        collagen *= np.clip(1 + 0.4 * m.fibre_contrast * fib, 0.15, None)
        collagen *= np.where(fib < -2.0, 0.3, 1.0)
        cleft = retraction.astype(np.float32) / 255 * (noise_field(rng, size, 12) > 0)
        stroma_f = (tissue & ~fat).astype(np.float32) * (1 - epi) * (1 - 0.9 * cleft)
        h_map = stroma_f * (0.03 + 0.1 * desmo)
        e_map = stroma_f * collagen
        if m.adipose > 0:
            walls = self._adipose_walls() * fat
            e_map += walls * m.stroma_eosin * 0.9
            h_map += walls * 0.03

        # Epithelial cytoplasm (the recipe's tint in tumour) and goblet-cell mucin.
        texture = 1 + 0.15 * fine_noise(rng, size, 1.2)
        h_map += cell * (m.cytoplasm_h + recipe.cytoplasm_h_added * tum_epi) * texture
        e_map += cell * (m.cytoplasm_e * (1 + (recipe.cytoplasm_e_factor - 1) * tum_epi)) * texture
        if len(vacuoles):
            vac = np.zeros((size, size), np.uint8)
            axes = fixed(np.stack([vacuole_radius, vacuole_radius * 1.25], axis=1)).tolist()
            for centre, axis in zip(fixed(vacuoles).tolist(), axes):
                cv2.ellipse(vac, centre, axis, 0, 0, 360, 255, -1, cv2.LINE_AA, 4)
            vac = vac.astype(np.float32) / 255 * cell
            h_map = h_map * (1 - vac) + vac * 0.07 * texture
            e_map = e_map * (1 - vac) + vac * 0.03
        # Necrotic debris: mottled eosinophilic mass with nuclear dust.
        e_map += nec * 0.35 * np.clip(1 + 0.5 * fine_noise(rng, size, 2.0), 0.2, None)
        h_map += nec * 0.08

        self._stroma_cells(stroma, region & stroma, fibre_angle, nuclei)
        dust = sample_points(rng, nec, int(nec.sum() / 40))
        nuclei.add(dust, 0.9, 0.8, 0.0, 0.9)
        nuc = nuclei.draw(size) * tissue
        chromatin = np.clip(1 + 0.22 * fine_noise(rng, size, 0.7), 0.5, None)
        cover = np.minimum(nuc / 0.5, 1.0)
        h_map = h_map * (1 - cover) + nuc * chromatin
        e_map = e_map * (1 - 0.75 * cover) + 0.06 * cover

        conc = np.stack([h_map * stain_strength[0], e_map * stain_strength[1]], axis=-1)
        mask = ((region | (tumour_epi > 127)) & tissue).astype(np.uint8) * 255
        return conc.astype(np.float32), mask
