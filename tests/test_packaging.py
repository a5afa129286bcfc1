"""What a reader outside this repository installs: the wheel, its data files and its declared
dependencies (the chapters themselves run on the installed wheel in test_notebooks.py)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Imported only inside Colab (Google Drive), where it is always there.
COLAB_ONLY = {"google"}


def requirement_name(spec: str) -> str:
    """The normalised distribution name of a requirement ("scipy>=1.15" → "scipy")."""
    return re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower().replace("_", "-")


def declared(*extras: str) -> set[str]:
    specs = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        specs += PYPROJECT["project"]["optional-dependencies"][extra]
    return {requirement_name(spec) for spec in specs}


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (IPython magics read as ``pass``)."""
    lines = [re.sub(r"^(\s*)[%!].*", r"\1pass", line) for line in source.splitlines()]
    code = "\n".join(lines)
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def undeclared(modules: set[str], allowed: set[str]) -> dict[str, list[str]]:
    """The third-party modules of ``modules`` that no distribution of ``allowed`` provides, with
    the distributions that do provide them here."""
    providers = packages_distributions()
    missing = {}
    for module in sorted(modules - set(sys.stdlib_module_names) - {"cosas_tutorial"}):
        names = {name.lower().replace("_", "-") for name in providers.get(module, [])}
        if not names & allowed:
            missing[module] = sorted(names) or ["(not installed)"]
    return missing


def test_the_package_imports_only_what_it_declares():
    modules = set()
    for path in (ROOT / "cosas_tutorial").rglob("*.py"):
        modules |= imported_modules(path.read_text())
    assert "torch" in modules  # the scan sees the package's imports
    missing = undeclared(modules - COLAB_ONLY, declared())
    assert not missing, f"imported by cosas_tutorial but not in [project] dependencies: {missing}"


def test_the_chapters_import_only_what_the_book_extra_declares():
    modules = set()
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                modules |= imported_modules(cell.source)
    assert "cosas_tutorial" in modules
    missing = undeclared(modules - COLAB_ONLY, declared("book"))
    assert not missing, f"imported by the chapters but declared nowhere: {missing}"


def test_the_scan_catches_an_import_that_arrives_only_through_another_package():
    # OpenCV comes with albumentations, but a package that imports cv2 must declare it itself.
    assert undeclared({"cv2", "numpy"}, {"numpy", "albumentations"}) == {
        "cv2": ["opencv-python-headless"]
    }


def test_declared_dependencies_are_imported_somewhere():
    """A declared dependency nothing imports (kornia, once) is dead weight for every reader."""
    used = set()
    for path in [*(ROOT / "cosas_tutorial").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        used |= imported_modules(path.read_text())
    providers = packages_distributions()
    provided = {
        name.lower().replace("_", "-") for module in used for name in providers.get(module, [])
    }
    # Used without an import statement: torchvision by timm and smp (their versions must
    # match torch's), huggingface-hub is imported (model.py), tabulate by pandas.to_markdown.
    indirect = {"torchvision", "tabulate"}
    assert not declared() - provided - indirect


def test_the_wheel_holds_every_package_file(installed_book):
    tracked = subprocess.run(
        ["git", "ls-files", "cosas_tutorial"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    with zipfile.ZipFile(installed_book.wheel) as wheel:
        names = set(wheel.namelist())
    assert any(name.endswith(".tsv") for name in tracked)  # package data is among them
    assert set(tracked) <= names, sorted(set(tracked) - names)


def test_the_chapters_kernel_imports_the_wheel_not_the_checkout(installed_book):
    probe = "import json, sys, cosas_tutorial as c; print(json.dumps([c.__file__, sys.path]))"
    result = subprocess.run(
        [str(installed_book.python), "-c", probe],
        cwd=installed_book.book,
        check=True,
        capture_output=True,
        text=True,
    )
    location, path = json.loads(result.stdout)
    assert Path(location).is_relative_to(installed_book.python.parents[1])
    assert str(ROOT) not in path and "" not in path[1:]
    holders = [entry for entry in path if entry and Path(entry, "cosas_tutorial").is_dir()]
    assert holders == [str(Path(location).parent.parent)]  # the wheel's copy only
