"""Make the committed figures of docs/ (run from anywhere: python docs/make_figures.py).

synthetic_domains.png: one synthetic tile per domain (training and held-out, both tasks) with its
tumour mask outlined, at the default shift.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from PIL import Image  # noqa: E402

from cosas_tutorial.data.synthetic import generate  # noqa: E402
from cosas_tutorial.viz import plot_domain_gallery  # noqa: E402

DOCS = Path(__file__).resolve().parent


def save_png(fig, path: Path, dpi: int = 100) -> None:
    """Save with a 256-colour palette: the tiles are noisy, and full RGB would weigh megabytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "synthetic", tiles=1, size=256, shift=0.5, seed=0)
        fig = plot_domain_gallery(root)
        out = DOCS / "synthetic_domains.png"
        save_png(fig, out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
