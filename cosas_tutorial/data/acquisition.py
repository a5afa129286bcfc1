"""A small model of how a slide scanner turns stain on glass into RGB pixels.

A tile is described by stain *concentrations* per pixel (haematoxylin, eosin and optionally a
residual channel). A scanner renders them with the Beer-Lambert law: the optical density
``OD = concentrations @ stain_od`` absorbs the illumination, ``I = white * 10**(-OD)``; then the
optics blur the image, the camera applies a colour response (per-channel gamma) and adds noise,
and the file is JPEG-compressed. Scanners differ in every one of these steps, which is what the
cross-scanner task of COSAS is about.

The scanners of task 2 (:data:`SCANNERS`, :func:`scanner`) are profiles around
:data:`REFERENCE`. Compared parameter by parameter (:meth:`Acquisition.parameters`), each unseen
scanner lies outside the range of the three training scanners on every parameter, so no
strategy reaches it by interpolating between training scanners.

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

    @classmethod
    def with_stains(cls, h, e, **settings) -> Acquisition:
        """An acquisition whose stain matrix is :func:`stain_matrix` of the H and E vectors."""
        return cls(stain_od=stain_matrix(h, e), **settings)

    def parameters(self) -> dict[str, float]:
        """One number per parameter, by name: H and E vectors, gamma and white per channel (R, G,
        B), blur, noise and JPEG quality (lossless counts as 100). Profiles are interpolated,
        and compared in the tests, parameter by parameter."""
        per_channel = {"H": self.stain_od[0], "E": self.stain_od[1], "gamma": self.gamma,
                       "white": self.white}  # fmt: skip
        return {
            **{f"{name}_{c}": float(v) for name, values in per_channel.items()
               for c, v in zip("RGB", values)},
            "blur_sigma": self.blur_sigma,
            "noise_std": self.noise_std,
            "jpeg_quality": 100.0 if self.jpeg_quality is None else float(self.jpeg_quality),
        }  # fmt: skip

    def towards(self, other: Acquisition, shift: float) -> Acquisition:
        """Every parameter moved ``shift`` (0..1) of the way to ``other``'s: ``shift=0`` gives
        self, ``shift=1`` other. The stain vectors are renormalised, and JPEG stays off only
        where both are lossless."""
        if not 0.0 <= shift <= 1.0:
            raise ValueError(f"shift must be in [0, 1], got {shift}")
        if shift in (0.0, 1.0):
            return other if shift else self
        mine, theirs = self.parameters(), other.parameters()
        p = {name: (1.0 - shift) * mine[name] + shift * theirs[name] for name in mine}
        lossless = self.jpeg_quality is None and other.jpeg_quality is None
        return Acquisition.with_stains(
            h=[p[f"H_{c}"] for c in "RGB"],
            e=[p[f"E_{c}"] for c in "RGB"],
            gamma=[p[f"gamma_{c}"] for c in "RGB"],
            blur_sigma=p["blur_sigma"],
            noise_std=p["noise_std"],
            jpeg_quality=None if lossless else round(p["jpeg_quality"]),
            white=[p[f"white_{c}"] for c in "RGB"],
        )

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
# H&E pink. It is where every task-2 scanner lies at shift 0, and the matrix :func:`unmix` assumes.
REFERENCE = Acquisition.with_stains(
    h=RUIFROK_H,
    e=MACENKO_E,
    gamma=(1.0, 1.0, 1.0),
    blur_sigma=0.5,
    noise_std=0.008,
    jpeg_quality=None,
    white=(0.96, 0.96, 0.96),
)

# Each task-2 scanner at full shift (shift=1). Names follow COSAS: the training scanners of task 2
# and the unseen test scanners. The numbers are made up, not measured on devices: plausible,
# clearly different looks laid out on every parameter in one order, from one side to the other:
# task 1's scanners (data.synthetic.ORGAN_SCANNERS), REFERENCE and the training scanners in any
# order, then the unseen scanners, beyond every training scanner. The unseen ones absorb less red
# and more green and blue in H, more red and blue and less green in E; they have a higher gamma,
# a redder and less green and blue white, and more blur, noise and compression.
_SCANNERS_AT_FULL_SHIFT = {
    "3d-1000": Acquisition.with_stains(
        h=(0.62, 0.71, 0.33), e=(0.25, 0.78, 0.575), gamma=(1.07, 0.97, 0.95),
        blur_sigma=0.7, noise_std=0.012, jpeg_quality=85, white=(0.95, 0.95, 0.975),
    ),
    "kfbio-400": Acquisition.with_stains(
        h=(0.675, 0.69, 0.27), e=(0.19, 0.825, 0.53), gamma=(0.95, 1.08, 1.04),
        blur_sigma=1.0, noise_std=0.018, jpeg_quality=75, white=(0.97, 0.96, 0.93),
    ),
    "teksqray-600p": Acquisition.with_stains(
        h=(0.665, 0.68, 0.325), e=(0.23, 0.79, 0.56), gamma=(0.93, 0.94, 0.97),
        blur_sigma=0.55, noise_std=0.022, jpeg_quality=65, white=(0.955, 0.97, 0.95),
    ),
    "3d-250": Acquisition.with_stains(
        h=(0.58, 0.74, 0.35), e=(0.29, 0.75, 0.595), gamma=(1.1, 1.11, 1.07),
        blur_sigma=1.2, noise_std=0.026, jpeg_quality=60, white=(0.975, 0.945, 0.92),
    ),
    "leica-450": Acquisition.with_stains(
        h=(0.59, 0.745, 0.34), e=(0.32, 0.74, 0.59), gamma=(1.09, 1.1, 1.12),
        blur_sigma=1.35, noise_std=0.03, jpeg_quality=55, white=(0.98, 0.94, 0.9),
    ),
    "motic": Acquisition.with_stains(
        h=(0.55, 0.76, 0.36), e=(0.27, 0.76, 0.59), gamma=(1.12, 1.11, 1.07),
        blur_sigma=1.5, noise_std=0.034, jpeg_quality=50, white=(0.978, 0.942, 0.915),
    ),
}  # fmt: skip
SCANNERS = tuple(_SCANNERS_AT_FULL_SHIFT)


def scanner(name: str, shift: float) -> Acquisition:
    """The acquisition of task-2 scanner ``name`` moved ``shift`` (0..1) of the way from
    REFERENCE: ``shift=0`` gives REFERENCE for every scanner (no scanner shift at all),
    ``shift=1`` the full profile (:meth:`Acquisition.towards`)."""
    if name not in _SCANNERS_AT_FULL_SHIFT:
        raise ValueError(f"unknown scanner {name!r}; known: {', '.join(SCANNERS)}")
    return REFERENCE.towards(_SCANNERS_AT_FULL_SHIFT[name], shift)


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

    The inverse of :func:`render` without blur, noise and JPEG: the decadic optical density
    against the scanner's white, after undoing its colour response ``I ** gamma``. That is the
    natural-log :func:`~cosas_tutorial.stain.optical_density` against glass at
    ``255 * white ** gamma``, divided by ``gamma * ln 10``.
    """
    # Imported here: the synthetic generator renders without loading torch, which stain needs.
    from cosas_tutorial.stain import ODConvention, optical_density

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    gamma, white = np.asarray(acq.gamma), np.asarray(acq.white)
    glass = ODConvention(background=255.0 * white**gamma)
    od = optical_density(rgb, glass) / (gamma * np.log(10.0))
    return (od @ np.linalg.inv(acq.stain_od)).astype(np.float32)


def reacquire(rgb: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Simulate scanning a real tile with another scanner.

    The tile is unmixed with the REFERENCE H&E matrix (as if REFERENCE had scanned it) and
    re-rendered through ``acq``, residual channel included, so that REFERENCE without blur and
    noise gives the input back up to rounding.
    """
    return render(unmix(rgb, REFERENCE), acq, rng)
