"""A small model of how a slide scanner turns stain on glass into RGB pixels.

A tile is described by stain *concentrations* per pixel (haematoxylin, eosin and optionally a
residual channel). A scanner renders them with the Beer-Lambert law: the optical density
``OD = concentrations @ stain_od`` absorbs the illumination, ``I = white * 10**(-OD)``; then the
optics blur the image, the camera applies a colour response (per-channel gamma) and adds noise,
and the file is JPEG-compressed. Scanners differ in every one of these steps, which is what the
cross-scanner task of COSAS is about.

The same model works backwards on real tiles: :func:`unmix` recovers concentrations with the
reference H&E matrix (colour deconvolution) and :func:`reacquire` re-renders them through another
scanner, which simulates scanner shift on real tissue.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def stain_matrix(haematoxylin, eosin) -> np.ndarray:
    """Rows H, E, residual as unit OD vectors; the residual completes the basis.

    The residual follows Ruifrok & Johnston (2001) and ImageJ's colour deconvolution for
    two-stain matrices: per channel ``sqrt(max(0, 1 - h**2 - e**2))``, then normalised.
    """
    h, e = _unit(haematoxylin), _unit(eosin)
    residual = _unit(np.sqrt(np.clip(1.0 - h**2 - e**2, 0.0, None)))
    return np.stack([h, e, residual])


@dataclass(frozen=True, eq=False)
class Acquisition:
    """One scanner's rendering of stain concentrations into RGB."""

    stain_od: np.ndarray  # 3x3, rows = H, E, residual unit optical-density vectors (R, G, B)
    gamma: tuple[float, float, float]  # colour response: I_out = I_in ** gamma per channel
    blur_sigma: float  # optical blur, Gaussian sigma in pixels
    noise_std: float  # additive sensor noise, std on the 0..1 intensity scale
    jpeg_quality: int | None  # JPEG compression quality (1..100), None = lossless
    white: tuple[float, float, float]  # background/illumination RGB in (0, 1]

    def __post_init__(self):
        stain_od = np.array(self.stain_od, dtype=np.float64)
        if stain_od.shape != (3, 3) or abs(np.linalg.det(stain_od)) < 1e-6:
            raise ValueError("stain_od must be an invertible 3x3 matrix (rows H, E, residual)")
        stain_od.setflags(write=False)
        object.__setattr__(self, "stain_od", stain_od)
        object.__setattr__(self, "gamma", tuple(float(g) for g in self.gamma))
        object.__setattr__(self, "white", tuple(float(w) for w in self.white))
        if len(self.gamma) != 3 or min(self.gamma) <= 0:
            raise ValueError(f"gamma must be three positive numbers, got {self.gamma}")
        if len(self.white) != 3 or not all(0 < w <= 1 for w in self.white):
            raise ValueError(f"white must be three numbers in (0, 1], got {self.white}")
        if self.blur_sigma < 0 or self.noise_std < 0:
            raise ValueError("blur_sigma and noise_std must be >= 0")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100 or None, got {self.jpeg_quality}")

    def __eq__(self, other) -> bool:
        if not isinstance(other, Acquisition):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
        )

    def __hash__(self) -> int:
        return hash((self.stain_od.tobytes(), self.gamma, self.blur_sigma, self.noise_std,
                     self.jpeg_quality, self.white))  # fmt: skip

    def to_dict(self) -> dict:
        """JSON-friendly description (for run records and ``synthetic.json``)."""
        return {
            "stain_od": np.round(self.stain_od, 4).tolist(),
            "gamma": list(self.gamma),
            "blur_sigma": self.blur_sigma,
            "noise_std": self.noise_std,
            "jpeg_quality": self.jpeg_quality,
            "white": list(self.white),
        }


# Haematoxylin OD vector (R, G, B) of Ruifrok & Johnston (2001), table 1, and the eosin vector of
# the reference matrix of Macenko et al. (2009) as shipped by torchstain (HERef).
RUIFROK_H = (0.650, 0.704, 0.286)
MACENKO_E = (0.2159, 0.8012, 0.5581)

# The reference scanner renders with Ruifrok-Johnston haematoxylin and Macenko's eosin: Ruifrok's
# eosin vector (0.072, 0.990, 0.105) absorbs almost no blue and renders stroma magenta rather than
# H&E pink.
REFERENCE = Acquisition(
    stain_od=stain_matrix(RUIFROK_H, MACENKO_E),
    gamma=(1.0, 1.0, 1.0),
    blur_sigma=0.5,
    noise_std=0.008,
    jpeg_quality=None,
    white=(0.96, 0.96, 0.96),
)

# Each scanner at full shift (shift=1). Names follow COSAS: the training scanners of task 2 and
# the unseen test scanners. The numbers are made up to give plausible, clearly different looks
# (cool/violet, warm/pink, pale/low-contrast, yellowish, blurry/noisy), not measured on devices.
_SCANNERS_AT_FULL_SHIFT = {
    "3d-1000": dict(
        h=(0.58, 0.74, 0.34), e=(0.30, 0.76, 0.58), gamma=(0.95, 1.0, 0.85),
        blur_sigma=0.7, noise_std=0.012, jpeg_quality=80, white=(0.94, 0.95, 0.99),
    ),
    "kfbio-400": dict(
        h=(0.74, 0.64, 0.21), e=(0.10, 0.88, 0.46), gamma=(0.9, 1.05, 1.0),
        blur_sigma=1.1, noise_std=0.018, jpeg_quality=70, white=(0.99, 0.95, 0.92),
    ),
    "teksqray-600p": dict(
        h=(0.62, 0.72, 0.31), e=(0.22, 0.84, 0.50), gamma=(0.72, 0.70, 0.75),
        blur_sigma=0.5, noise_std=0.028, jpeg_quality=60, white=(0.93, 0.96, 0.97),
    ),
    "3d-250": dict(
        h=(0.60, 0.74, 0.30), e=(0.28, 0.78, 0.56), gamma=(1.05, 1.1, 0.92),
        blur_sigma=0.9, noise_std=0.015, jpeg_quality=75, white=(0.95, 0.94, 0.98),
    ),
    "leica-450": dict(
        h=(0.70, 0.69, 0.20), e=(0.15, 0.85, 0.50), gamma=(0.92, 0.95, 1.15),
        blur_sigma=0.4, noise_std=0.010, jpeg_quality=90, white=(0.98, 0.97, 0.88),
    ),
    "motic": dict(
        h=(0.52, 0.78, 0.36), e=(0.32, 0.74, 0.59), gamma=(1.2, 1.2, 1.1),
        blur_sigma=1.6, noise_std=0.030, jpeg_quality=65, white=(0.96, 0.93, 0.98),
    ),
}  # fmt: skip
SCANNERS = tuple(_SCANNERS_AT_FULL_SHIFT)


def scanner(name: str, shift: float) -> Acquisition:
    """The acquisition of scanner ``name`` moved ``shift`` (0..1) of the way from REFERENCE.

    ``shift=0`` gives REFERENCE for every scanner (no scanner shift at all); ``shift=1`` the full
    profile. Stain vectors, gamma, blur, noise, white point and JPEG quality are interpolated.
    """
    if name not in _SCANNERS_AT_FULL_SHIFT:
        raise ValueError(f"unknown scanner {name!r}; known: {', '.join(SCANNERS)}")
    if not 0.0 <= shift <= 1.0:
        raise ValueError(f"shift must be in [0, 1], got {shift}")
    if shift == 0:
        return REFERENCE
    full = _SCANNERS_AT_FULL_SHIFT[name]

    def lerp(reference, target):
        return (1.0 - shift) * np.asarray(reference, float) + shift * np.asarray(target, float)

    quality = full["jpeg_quality"]
    return Acquisition(
        stain_od=stain_matrix(lerp(REFERENCE.stain_od[0], _unit(full["h"])),
                              lerp(REFERENCE.stain_od[1], _unit(full["e"]))),
        gamma=tuple(lerp(REFERENCE.gamma, full["gamma"])),
        blur_sigma=float(lerp(REFERENCE.blur_sigma, full["blur_sigma"])),
        noise_std=float(lerp(REFERENCE.noise_std, full["noise_std"])),
        jpeg_quality=None if quality is None else int(round(100 - shift * (100 - quality))),
        white=tuple(lerp(REFERENCE.white, full["white"])),
    )  # fmt: skip


def render(concentrations: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Render HxWx2 (H, E) or HxWx3 (H, E, residual) stain densities to uint8 RGB via Beer-Lambert.

    Densities are in OD units (log10). ``rng`` draws the sensor noise.
    """
    conc = np.asarray(concentrations, dtype=np.float32)
    if conc.ndim != 3 or conc.shape[2] not in (2, 3):
        raise ValueError(f"concentrations must be HxWx2 or HxWx3, got shape {conc.shape}")
    od = conc @ acq.stain_od[: conc.shape[2]].astype(np.float32)
    intensity = np.asarray(acq.white, np.float32) * np.power(np.float32(10.0), -od)
    if acq.blur_sigma > 0:
        intensity = cv2.GaussianBlur(intensity, (0, 0), acq.blur_sigma)
    intensity = np.clip(intensity, 0.0, 1.0) ** np.asarray(acq.gamma, np.float32)
    if acq.noise_std > 0:
        noise = rng.standard_normal(intensity.shape, dtype=np.float32)
        intensity += np.float32(acq.noise_std) * noise
    rgb = np.clip(intensity * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if acq.jpeg_quality is not None:
        rgb = jpeg_roundtrip(rgb, acq.jpeg_quality)
    return rgb


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode an RGB uint8 image as JPEG (libjpeg through OpenCV)."""
    ok, buffer = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1])


def unmix(rgb: np.ndarray, acq: Acquisition = REFERENCE) -> np.ndarray:
    """Colour deconvolution: uint8 RGB -> HxWx3 float32 densities (H, E, residual) under ``acq``.

    The inverse of :func:`render` without blur, noise and JPEG. skimage's ``rgb2hed`` does the
    same for a fixed white of 1.0, natural-log densities and DAB as third stain; scikit-image is
    not a dependency of this package and the inverse must match our own white point and gamma,
    so the few lines are written here.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    intensity = np.maximum(rgb.astype(np.float32), 0.5) / np.float32(255.0)
    intensity = intensity ** (1.0 / np.asarray(acq.gamma, np.float32))
    od = -np.log10(intensity / np.asarray(acq.white, np.float32))
    return od @ np.linalg.inv(acq.stain_od).astype(np.float32)


def reacquire(rgb: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Simulate scanning a real tile with another scanner.

    The tile is unmixed with the REFERENCE H&E matrix (as if REFERENCE had scanned it) and
    re-rendered through ``acq``, residual channel included, so that REFERENCE without blur and
    noise gives the input back up to rounding.
    """
    return render(unmix(rgb, REFERENCE), acq, rng)
