"""Execute the book's notebooks with papermill, then build the HTML with Jupyter Book 1.x.

    python tools/execute_book.py                 # the `cpu` profile (what `make book` runs)
    python tools/execute_book.py --profile ci    # seconds per chapter, for a quick look
    python tools/execute_book.py --keep-runs     # reuse the training runs of the last build

1. The sources of book/ (markdown, notebooks, _config.yml, _toc.yml …) are copied into
   book/_build/source/, so that the committed notebooks stay without outputs.
2. Every notebook of _toc.yml is executed there in place, in book order, with papermill:
   PROFILE=<profile>, OUT=book/_build/runs (one folder for all chapters, so that a chapter
   reuses the runs of an earlier one) and PROGRESS=False where a notebook has that parameter.
3. jupyter-book builds book/_build/source into book/_build/html. _config.yml sets
   execute_notebooks: "off", so the pages show the outputs of step 2.

The kernels run without MPLBACKEND (the Makefile sets Agg for the command line), so that
figures are drawn inline into the pages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
BUILD = BOOK / "_build"
IGNORED = shutil.ignore_patterns("_build", ".ipynb_checkpoints", "__pycache__")


def toc_files(book: Path = BOOK) -> list[str]:
    """The files of _toc.yml in reading order (root first), as written there (no suffix)."""
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    return files


def toc_notebooks(book: Path = BOOK) -> list[str]:
    """The notebooks of _toc.yml in reading order, by name (``03_standard_training``)."""
    return [name for name in toc_files(book) if (book / f"{name}.ipynb").exists()]


def copy_sources(book: Path, dest: Path) -> Path:
    """A fresh copy of the book's sources in ``dest`` (its build folder left out)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(book, dest, ignore=IGNORED)
    return dest


def notebook_parameters(path: Path, wanted: dict) -> dict:
    """Those of ``wanted`` that the notebook's parameters cell declares (papermill would inject
    the others too, with a warning)."""
    import papermill

    declared = papermill.inspect_notebook(path)
    return {key: value for key, value in wanted.items() if key in declared}


def run_papermill(
    source: Path,
    target: Path,
    parameters: dict,
    cwd: Path | None = None,
    kernel_name: str = "python3",
) -> None:
    """Execute the notebook ``source`` into ``target`` with papermill, on ``kernel_name`` (this
    interpreter's python3 unless given), in ``cwd`` (the source's folder unless given).

    The kernel's messages are encrypted (CurveZMQ) where pyzmq supports it: ipykernel ≥ 7.3
    prints a warning at every kernel start when they go over TCP in plain text. The cell that
    papermill injects (this machine's paths) is tagged ``remove-cell``: the book shows the
    chapter's own ``parameters`` cell, not the build's.
    """
    import nbformat
    import papermill
    import zmq
    from traitlets.config import Config

    encryption = "auto" if zmq.has("curve") else "disabled"
    executed = papermill.execute_notebook(
        source,
        target,
        cwd=cwd or source.parent,
        kernel_name=kernel_name,
        progress_bar=False,
        parameters=parameters,
        config=Config({"KernelManager": {"transport_encryption": encryption}}),
    )
    for cell in executed.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(executed, target)


def execute(path: Path, profile: str, out: Path, **extra) -> float:
    """Execute one notebook in place (cwd: its folder) with papermill; return the seconds."""
    parameters = notebook_parameters(
        path, {"PROFILE": profile, "OUT": str(out), "PROGRESS": False, **extra}
    )
    started = time.perf_counter()
    run_papermill(path, path, parameters)
    return time.perf_counter() - started


def build(source: Path, output: Path) -> Path:
    """jupyter-book build ``source`` into ``output``/_build/html; return that folder."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book), "build", str(source), "--path-output", str(output)]
    subprocess.run(command, check=True)
    return output / "_build" / "html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="run profile of every chapter (cpu)")
    parser.add_argument(
        "--keep-runs",
        action="store_true",
        help="reuse book/_build/runs from the last build (finished runs are not trained again)",
    )
    args = parser.parse_args(argv)

    os.environ.pop("MPLBACKEND", None)  # inline figures in the executed notebooks
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    runs = BUILD / "runs"
    if runs.exists() and not args.keep_runs:
        shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)
    source = copy_sources(BOOK, BUILD / "source")

    started = time.perf_counter()
    for name in toc_notebooks(source):
        print(f"executing {name} (profile {args.profile}) …", flush=True)
        try:
            seconds = execute(source / f"{name}.ipynb", args.profile, runs.resolve())
        except Exception:
            print(f"{name} failed; its outputs so far: {source / name}.ipynb", file=sys.stderr)
            raise
        print(f"  {name}: {seconds:.0f} s", flush=True)
    executed = time.perf_counter() - started
    html = build(source, BOOK)
    total = time.perf_counter() - started
    print(
        f"book built: {html / 'index.html'} (notebooks {executed:.0f} s, "
        f"total {total:.0f} s, profile {args.profile})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
