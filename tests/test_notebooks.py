"""Every notebook of the book, executed with papermill on the ``ci`` profile, and what it made.

Notebooks run in book order and share one output folder (``OUT``), as in ``make book``: a later
chapter reuses the runs of an earlier one when they are there and trains them when they are not.
Each test asserts on the files a notebook wrote, not only that it ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"


@pytest.fixture(scope="session")
def book_out(tmp_path_factory, open_tissue_mirror_url) -> Path:
    """The shared OUT folder; data trees are generated/downloaded into a temporary data home."""
    patch = pytest.MonkeyPatch()
    patch.setenv("COSAS_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))
    patch.setenv("COSAS_OPEN_TISSUE_URL", open_tissue_mirror_url)
    patch.setenv("MPLBACKEND", "Agg")
    yield tmp_path_factory.mktemp("book-out")
    patch.undo()


def run_notebook(name: str, out: Path, **parameters) -> nbformat.NotebookNode:
    """Execute ``book/<name>.ipynb`` with PROFILE="ci" and OUT=out; return the executed notebook."""
    executed = out / f"{name}.executed.ipynb"
    papermill.execute_notebook(
        BOOK / f"{name}.ipynb",
        executed,
        cwd=BOOK,
        kernel_name="python3",
        progress_bar=False,
        parameters={"PROFILE": "ci", "OUT": str(out), **parameters},
    )
    notebook = nbformat.read(executed, as_version=4)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"{name}: {output.get('ename')}"
    return notebook


def text_output(notebook: nbformat.NotebookNode) -> str:
    """All stdout and text/plain output of a notebook, joined."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_figures(out: Path, *names: str) -> None:
    for name in names:
        path = out / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 5_000, f"figure {path} missing or empty"


# --- one test per notebook, in book order -------------------------------------------------------
