"""The book, built with Jupyter Book from the notebook executions of ``test_notebooks.py``
(``ci`` profile), checked page by page and rendered in headless Chromium.

The notebooks are not executed twice: ``conftest.py`` runs this file after
``test_notebooks.py`` and both share the session's ``book_out`` folder, where every notebook
test leaves ``<name>.executed.ipynb``. A chapter without such a file (this file run alone, or a
notebook without a test) is executed here with the same runner. The build itself is the one of
``make book`` (``tools/execute_book.py``): the sources copied, the executed notebooks put in
place, ``jupyter-book build``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import execute_book
import nbformat
import numpy as np
import pytest
from PIL import Image
from test_notebooks import run_notebook

BOOK_TITLE = "Domain generalisation for adenocarcinoma segmentation"
CHAPTER = "03_standard_training"  # the chapter opened in Chromium besides the index
CHAPTER_TITLE = "Standard training"


class Page(HTMLParser):
    """What the checks need from a built page: its images, its cell outputs' classes and text."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.output_classes: list[str] = []
        self.stderr_text: list[str] = []
        self._stderr_depth = 0
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = attrs.get("class") or ""
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag in ("div", "pre"):
            self._depth += 1
            if "output" in classes.split():
                self.output_classes.append(classes)
                if "stderr" in classes.split() and not self._stderr_depth:
                    self._stderr_depth = self._depth

    def handle_endtag(self, tag):
        if tag in ("div", "pre"):
            if self._stderr_depth == self._depth:
                self._stderr_depth = 0
            self._depth -= 1

    def handle_data(self, data):
        if self._stderr_depth:
            self.stderr_text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="session")
def built_book(book_out, installed_book, tmp_path_factory) -> dict:
    """Build the book from the executed notebooks in ``book_out``; return the paths needed."""
    site = tmp_path_factory.mktemp("book-site")
    source = execute_book.copy_sources(execute_book.BOOK, site / "source")
    executed = {}
    for name in execute_book.toc_notebooks(source):
        path = book_out / f"{name}.executed.ipynb"
        if not path.exists():  # not run by test_notebooks.py in this session
            wanted = execute_book.notebook_parameters(source / f"{name}.ipynb", {"PROGRESS": False})
            run_notebook(name, book_out, installed_book, **wanted)
        shutil.copy(path, source / f"{name}.ipynb")
        executed[name] = nbformat.read(path, as_version=4)
    html = execute_book.build(source, site)
    return {"html": html, "executed": executed, "files": execute_book.toc_files(source)}


def image_outputs(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


def test_every_page_is_built(built_book):
    html = built_book["html"]
    assert (html / "index.html").is_file(), "no index.html"
    missing = [name for name in built_book["files"] if not (html / f"{name}.html").is_file()]
    assert not missing, f"pages missing from the built book: {missing}"


def test_chapters_show_their_figures_and_no_errors(built_book):
    html = built_book["html"]
    for name, notebook in built_book["executed"].items():
        page = parse(html / f"{name}.html")
        figures = image_outputs(notebook)
        assert figures >= 1, f"{name}: the executed notebook draws no figure"
        shown = [  # cell outputs: copied to _images/ (or embedded); not the theme's logos
            src
            for src in page.images
            if src.startswith("data:image/png")
            or (src.startswith("_images/") and (html / src).is_file())
        ]
        assert len(shown) >= figures, (
            f"{name}: {figures} figures in the notebook, {len(shown)} PNG images on the page"
        )
        tracebacks = [c for c in page.output_classes if "traceback" in c.split()]
        assert not tracebacks, f"{name}: error output on the page ({tracebacks[0]})"
        stderr = "".join(page.stderr_text)
        assert "Traceback" not in stderr, f"{name}: a traceback in the page's stderr output"
        assert not re.search(r"\b\w*Error: ", stderr), f"{name}: an error in stderr: {stderr!r}"


def test_pages_show_the_chapters_parameters_not_the_builds(built_book):
    for name in built_book["executed"]:
        text = (built_book["html"] / f"{name}.html").read_text(encoding="utf-8")
        assert "# Parameters" not in text, f"{name}: papermill's injected cell is on the page"
        assert "PROFILE" in text, f"{name}: the chapter's parameters cell is missing"


def test_the_bibliography_lists_the_works_the_chapters_cite(built_book):
    html = built_book["html"]
    entries = (html / "bibliography.html").read_text(encoding="utf-8").count("doc-biblioentry")
    assert entries >= 10, f"{entries} works in the bibliography"
    citing = [
        name
        for name in built_book["executed"]
        if "bibliography.html#" in (html / f"{name}.html").read_text(encoding="utf-8")
    ]
    assert len(citing) >= 5, f"chapters that cite a work: {citing}"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable; the test fails (never skips) without one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "Chromium not found: the book test renders pages in headless Chromium. "
        "Install it (Debian/Ubuntu: `apt-get install -y chromium`; .ci/run does this)."
    )


def headless(chromium: str, url: str, *action: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "--virtual-time-budget=5000",
                *action,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )


@pytest.mark.parametrize(
    "page, title",
    [("index", BOOK_TITLE), (CHAPTER, CHAPTER_TITLE), ("bibliography", "References")],
    ids=["index", "chapter", "bibliography"],
)
def test_pages_render_in_chromium(built_book, chromium, book_out, page, title):
    url = (built_book["html"] / f"{page}.html").as_uri()
    shots = book_out / "screenshots"
    shots.mkdir(exist_ok=True)
    shot = shots / f"{page}.png"
    shot.unlink(missing_ok=True)
    done = headless(chromium, url, f"--screenshot={shot}")
    assert shot.is_file(), f"no screenshot of {url}: {done.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (900, 1280), f"screenshot of {page} is {pixels.shape}"
    assert pixels.std() > 10, f"{shot} looks blank (pixel std {pixels.std():.1f})"
    assert (pixels < 200).mean() > 0.01, f"{shot}: almost nothing drawn on the page"

    dom = headless(chromium, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert title in dom.stdout, f"{page}: {title!r} not in the rendered DOM"
