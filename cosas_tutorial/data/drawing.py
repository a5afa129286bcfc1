"""Drawing primitives of the synthetic tissue: smooth random fields, collagen fibres, jittered
lattices, gland outlines (:class:`Glands`) and nuclei (:class:`Nuclei`).

Everything is vectorised over glands and nuclei and drawn with OpenCV at sub-pixel precision;
:mod:`cosas_tutorial.data.tissue` composes these pieces into a tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=4)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) pixel coordinates as float32 (read-only, cached per size)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def noise_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth random field, zero mean and unit std, with blobs about ``scale`` pixels wide."""
    cells = max(2, int(round(size / scale)) + 2)
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    field -= field.mean()
    return field / (field.std() + 1e-6)


def fine_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = cv2.GaussianBlur(rng.standard_normal((size, size), dtype=np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-6)


def fibres(rng: np.random.Generator, size: int, lengths: tuple[float, float]) -> np.ndarray:
    """Two layers (HxWx2) of wavy streaks (collagen bundles), unit std, random directions."""
    layers = []
    for length in lengths:
        noise = rng.standard_normal((size, size), dtype=np.float32)
        streaks = cv2.GaussianBlur(noise, (0, 0), sigmaX=length, sigmaY=0.8)
        rotation = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(0, 180), 1.0)
        layers.append(
            cv2.warpAffine(streaks, rotation, (size, size), borderMode=cv2.BORDER_REFLECT)
        )
    ys, xs = pixel_grid(size)
    dy, dx = (3.5 * noise_field(rng, size, 40) for _ in range(2))
    wavy = cv2.remap(np.dstack(layers), xs + dx, ys + dy, cv2.INTER_LINEAR, cv2.BORDER_REFLECT)
    return wavy / (wavy.std(axis=(0, 1)) + 1e-6)


def fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 with 4 fractional bits (OpenCV's ``shift=4``)."""
    return np.round(np.asarray(points) * 16).astype(np.int32)


def sample_points(rng, weight: np.ndarray, count: int) -> np.ndarray:
    """``count`` points (x, y) drawn with probability proportional to ``weight`` (HxW >= 0)."""
    flat = weight.ravel().astype(np.float64)
    total = flat.sum()
    if count <= 0 or total <= 0:
        return np.zeros((0, 2))
    cells = rng.choice(flat.size, size=count, p=flat / total)
    ys, xs = np.divmod(cells, weight.shape[1])
    return np.stack([xs, ys], axis=1) + rng.random((count, 2))


def lookup(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Values of ``image`` at points (x, y), clamped to the image."""
    h, w = image.shape[:2]
    xs = np.clip(xy[:, 0].astype(int), 0, w - 1)
    ys = np.clip(xy[:, 1].astype(int), 0, h - 1)
    return image[ys, xs]


def centres_inside(region: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The centres that lie in ``region``; a sliver of region that catches none gets one centre
    at its deepest point, so that every tumour region holds tumour cells."""
    if not region.any():
        return centres[:0]
    inside = centres[lookup(region, centres)]
    if len(inside):
        return inside
    depth = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(np.argmax(depth), region.shape)
    return np.array([[x, y]], float)


def lattice(rng, size: int, spacing: float, aspect: float, angle: float, jitter: float):
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


def segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For per-gland item counts: the gland index and the rank within its gland of every item."""
    owner = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, rank


def radial_degrees(xy: np.ndarray, centre: np.ndarray) -> np.ndarray:
    d = xy - centre
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


_ORDERS = np.arange(2, 7, dtype=float)  # harmonics of gland outlines


@dataclass
class Glands:
    """Glands as arrays, one row per gland; shapes are wobbly ellipses in polar form."""

    centre: np.ndarray  # (G, 2): x, y
    radius: np.ndarray  # mean outer radius
    aspect: np.ndarray  # long/short axis
    angle: np.ndarray  # orientation, radians
    amplitude: np.ndarray  # (G, 5): amplitudes of the shape harmonics
    phase: np.ndarray  # (G, 5)
    thickness: np.ndarray  # epithelium thickness (>= radius: solid nest)

    @classmethod
    def random(cls, rng, centre, radius, aspect, angle, irregularity, thickness) -> Glands:
        """Glands at ``centre`` whose outlines wobble by ``irregularity`` (random harmonics; one
        value, or one per gland like the other arguments)."""
        n = len(centre)
        wobble = np.broadcast_to(irregularity, (n,))[:, None]
        return cls(
            centre=np.asarray(centre, float).reshape(n, 2),
            radius=radius,
            aspect=aspect,
            angle=angle,
            amplitude=rng.normal(0, wobble, (n, _ORDERS.size)) / np.sqrt(_ORDERS - 1),
            phase=rng.uniform(0, 2 * np.pi, (n, _ORDERS.size)),
            thickness=np.broadcast_to(thickness, (n,)).astype(float),
        )

    def __len__(self) -> int:
        return len(self.radius)

    def subset(self, keep: np.ndarray) -> Glands:
        return Glands(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def __add__(self, other: Glands) -> Glands:
        return Glands(
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

    def hollow(self) -> np.ndarray:
        """Which glands have a lumen (an epithelium thinner than the gland)."""
        return self.thickness < self.radius

    def epithelial_points(self, rng, nucleus_radius: float, spacing: float):
        """Random nucleus centres filling each gland's epithelium, ``spacing`` nucleus radii
        apart on average; returns (owner gland of each point, image x, y)."""
        inner_ratio = np.clip(1 - self.thickness / self.radius, 0.0, None)
        band_area = np.pi * self.radius**2 * (1 - inner_ratio**2)
        owner, _ = segments((band_area / (np.pi * (spacing * nucleus_radius) ** 2)).astype(int) + 1)
        theta = rng.uniform(0, 2 * np.pi, owner.size)
        r_out = self.radius_at(owner, theta) - nucleus_radius * 0.9
        r_in = np.clip(r_out * inner_ratio[owner] + nucleus_radius * 0.9, 0, r_out)
        rho = np.sqrt(rng.uniform(r_in**2, r_out**2))
        return owner, self.to_image(owner, theta, rho)


class Nuclei:
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
            fixed(rows[:, :2]).tolist(),
            fixed(axes).tolist(),
            fixed(axes * 0.62).tolist(),
            fixed(np.maximum(axes[:, 1] * 0.3, 0.8)).tolist(),
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


def fill(canvas: np.ndarray, polygons: np.ndarray) -> None:
    """Fill each polygon (one call each: a joint call would XOR overlaps)."""
    for polygon in fixed(polygons):
        cv2.fillPoly(canvas, [polygon], 255, cv2.LINE_AA, 4)
