"""Shared fixtures: the shared data folder, the open-tissue mirror, tiny COSAS trees."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosas_tutorial.data.layout import pair_dirs

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
OPEN_TISSUE_DIR = SHARED_DIR / "data" / "open-tissue"
# the book's runner (tools/execute_book.py), which the notebook and book tests use too
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED_DIR


@pytest.fixture(scope="session")
def open_tissue_mirror_url() -> str:
    """file:// URL of the local open-tissue mirror (the tests need it: no silent skip)."""
    mirror = OPEN_TISSUE_DIR / "mirror"
    assert mirror.is_dir(), f"open-tissue mirror not found at {mirror} (expected ../shared)"
    return mirror.as_uri()


@pytest.fixture(scope="session")
def book_out(tmp_path_factory, open_tissue_mirror_url) -> Path:
    """The shared OUT folder of the notebook and book tests (test_notebooks.py, test_book.py);
    data trees are generated/downloaded into a temporary data home.

    MPLBACKEND is unset for the kernels (the Makefile sets Agg), so that ipykernel's inline
    backend draws the figures into the executed notebooks the book test builds from.
    """
    patch = pytest.MonkeyPatch()
    patch.setenv("COSAS_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))
    patch.setenv("COSAS_OPEN_TISSUE_URL", open_tissue_mirror_url)
    patch.delenv("MPLBACKEND", raising=False)
    yield tmp_path_factory.mktemp("book-out")
    patch.undo()


def pytest_collection_modifyitems(items):
    """The book test builds the book from the notebook tests' executions: run it after them."""
    items.sort(key=lambda item: item.path.name == "test_book.py")


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A synthetic tree (both tasks, held-out domains) at the ``ci`` profile's size."""
    from cosas_tutorial.config import get_profile
    from cosas_tutorial.data.synthetic import generate

    config = get_profile("ci")
    return generate(
        tmp_path_factory.mktemp("synthetic"),
        tiles=config.synthetic_tiles,
        size=config.synthetic_size,
        seed=0,
    )


def write_pair(
    root: Path,
    task: str,
    domain: str,
    stem: str,
    size: tuple[int, int] = (32, 24),
    split: str = "train",
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write one random RGB tile and a 0/255 mask (a rectangle) of ``size`` (W, H) as PNG."""
    width, height = size
    rng = np.random.default_rng(seed)
    image_dir, mask_dir = pair_dirs(root, split, task, domain)
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 : height // 2, width // 4 : width // 2] = 255
    image_path, mask_path = image_dir / f"{stem}.png", mask_dir / f"{stem}.png"
    Image.fromarray(image).save(image_path)
    Image.fromarray(mask).save(mask_path)
    return image_path, mask_path


@pytest.fixture
def make_cosas_tree(tmp_path):
    """Factory: ``make_cosas_tree({"task1": {"colorectum": 2}}, size=(W, H), split="train")``.

    Writes ``n`` pairs (ids ``tile00``, ``tile01`` …) per domain under ``tmp_path / "cosas"``
    (or ``root``) in the COSAS layout and returns the root. Calls may add to the same tree.
    """

    def make(
        spec: dict[str, dict[str, int]] | None = None,
        size: tuple[int, int] = (32, 24),
        split: str = "train",
        root: Path | None = None,
    ) -> Path:
        root = root or tmp_path / "cosas"
        spec = spec or {"task1": {"colorectum": 2, "pancreas": 2, "stomach": 2}}
        for task, domains in spec.items():
            for domain, count in domains.items():
                for i in range(count):
                    write_pair(root, task, domain, f"tile{i:02d}", size, split, seed=i)
        return root

    return make
