"""Shared fixtures: the open-tissue files and a local mirror of them, tiny COSAS trees."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosas_tutorial.data.layout import pair_dirs

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
# the book's runner (tools/execute_book.py), which the notebook and book tests use too
sys.path.insert(0, str(ROOT / "tools"))


@pytest.fixture(scope="session")
def open_tissue_files() -> dict:
    """Every open-tissue file of the registry, as {entry: local path}.

    Fetched like the package fetches them (sha256-checked, written atomically): from
    $COSAS_OPEN_TISSUE_URL when it is set (CI points it at a local mirror), else from the public
    URLs; kept in the user's cache folder, so that later test runs fetch nothing.
    """
    from cosas_tutorial.data.open_tissue import ENV_VAR, DownloadError, download, registry
    from cosas_tutorial.notebook import data_home

    cache = data_home() / "open-tissue-downloads"
    try:
        return {entry: download(entry, cache) for entry in registry()}
    except DownloadError as err:
        raise DownloadError(
            f"{err} (the open-tissue tests need these files: connect to the internet once, or "
            f"set {ENV_VAR} to a mirror of them, as .ci/run does)"
        ) from err


@pytest.fixture(scope="session")
def open_tissue_mirror_url(open_tissue_files, tmp_path_factory) -> str:
    """file:// URL of a private mirror of the open-tissue files, laid out as the public host
    lays them out (``<base>/<raw_path>``), for tests of the downloader that must not touch the
    network."""
    mirror = tmp_path_factory.mktemp("open-tissue-mirror")
    for entry, path in open_tissue_files.items():
        (mirror / entry.raw_path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / entry.raw_path).symlink_to(path)
    return mirror.as_uri()


@dataclass(frozen=True)
class InstalledBook:
    """A copy of book/ outside the checkout and a Jupyter kernel that imports cosas_tutorial
    from a wheel of the checkout: what a Colab reader gets, less the GPU."""

    book: Path  # the copy of book/ the chapters run in
    kernel: str  # the kernel's name (its kernelspec is on JUPYTER_PATH)
    python: Path  # the kernel's interpreter
    wheel: Path  # the wheel it was installed from


def _build_wheel(dest: Path) -> Path:
    """A wheel of the checkout's tracked files (built from a clean copy, as a clone would be)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    source = dest / "source"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "-w", str(dest / "dist"), str(source)], check=True)
    (wheel,) = (dest / "dist").glob("cosas_tutorial-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed_book(tmp_path_factory) -> InstalledBook:
    """The chapters' environment of the notebook tests: the package installed from a wheel into
    a fresh virtual environment (not editable; the checkout is not on its sys.path), a kernel
    on that interpreter, and book/ copied elsewhere.

    A name a chapter imports that the wheel lacks, or package data left out of it, fails the
    chapter. The third-party dependencies are this environment's, reused through a .pth line
    (installing torch afresh would take minutes): tests/test_packaging.py checks that every
    module the package and the chapters import is declared.
    """
    from execute_book import copy_sources

    work = tmp_path_factory.mktemp("installed")
    wheel = _build_wheel(work)
    venv.create(work / "venv", with_pip=False)
    python = work / "venv" / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-compile", str(wheel)],
        check=True,
    )  # fmt: skip
    own_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # A plain path line: the folder goes on sys.path but its own .pth files (the editable
    # install of the checkout among them) are not read.
    Path(own_site, "cosas_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    kernels = work / "jupyter" / "kernels" / "cosas-installed"
    kernels.mkdir(parents=True)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cosas-tutorial (installed wheel)",
        "language": "python",
        "env": {"PYTHONPATH": ""},  # a developer's PYTHONPATH could hold the checkout
    }
    (kernels / "kernel.json").write_text(json.dumps(spec))
    book = copy_sources(BOOK, work / "book")
    return InstalledBook(book=book, kernel="cosas-installed", python=python, wheel=wheel)


@pytest.fixture(scope="session")
def book_out(tmp_path_factory, open_tissue_mirror_url, installed_book) -> Path:
    """The shared OUT folder of the notebook and book tests (test_notebooks.py, test_book.py);
    data trees are generated/downloaded into a temporary data home. The kernels are those of
    ``installed_book`` (found through JUPYTER_PATH).

    MPLBACKEND is unset for the kernels (the Makefile sets Agg), so that ipykernel's inline
    backend draws the figures into the executed notebooks the book test builds from.
    """
    patch = pytest.MonkeyPatch()
    patch.setenv("COSAS_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))
    patch.setenv("COSAS_OPEN_TISSUE_URL", open_tissue_mirror_url)
    patch.setenv("JUPYTER_PATH", str(installed_book.python.parents[2] / "jupyter"))
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
