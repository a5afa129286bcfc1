"""Keep every link to the repository derived from one address and one ref.

The canonical address is `[project.urls] Repository` in pyproject.toml; the book's ref is
`repository.branch` in book/_config.yml: `main` on the main branch, `vX.Y.Z` in a release
commit (tools/release.py). From them follow:
- each notebook's Colab badge (first markdown cell), opening that notebook at the ref;
- each notebook's install cell (second cell), installing the package at the same ref, so that
  a notebook opened from Colab never runs against code from another version;
- `repository.url` in book/_config.yml and `repository-code` in CITATION.cff.
A release tag must equal `__version__` in cosas_tutorial/__init__.py.

    python tools/notebook_links.py --check               # list every problem, exit 1 if any
    python tools/notebook_links.py --write [--ref REF]   # point everything at REF (main)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BRANCH = "main"
COLAB = "https://colab.research.google.com/github"
BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
# Any Colab badge: [![...](...colab-badge.svg)](target)
BADGE_RE = re.compile(r"\[!\[[^\]]*\]\([^)]*colab-badge\.svg\)\]\(([^)\s]*)\)")
# The package spec of an install cell: "cosas-tutorial @ git+<url>@<ref>"
INSTALL_RE = re.compile(r"cosas[-_]tutorial\s*@\s*git\+(\S+?)(?:@([^\s\"']+))?[\"'\s]")
TAG_RE = re.compile(r"^v\d+\.\d+\.\d+(?:[-.]?\w+)?$")  # a ref that names a release
REF_RE = re.compile(r"[\w][\w.+-]*(?:/[\w.+-]+)*")  # a branch, tag or commit name


def repository_url(root: Path = ROOT) -> str:
    """The canonical address, from pyproject.toml (no trailing slash, no .git)."""
    with open(root / "pyproject.toml", "rb") as f:
        url = tomllib.load(f)["project"]["urls"]["Repository"]
    url = url.rstrip("/").removesuffix(".git")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"[project.urls] Repository must be https://github.com/OWNER/NAME: {url}")
    return url


def package_version(root: Path = ROOT) -> str:
    """`__version__` of the package, read as text (importing would pull in torch)."""
    text = (root / "cosas_tutorial" / "__init__.py").read_text()
    match = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.M)
    if not match:
        raise ValueError("no __version__ in cosas_tutorial/__init__.py")
    return match.group(1)


def git_ref(ref: str) -> str:
    """``ref`` if it can name a branch, tag or commit in a URL (so it can be parsed back)."""
    if not REF_RE.fullmatch(ref) or ".." in ref:
        raise ValueError(f"{ref!r} is not a branch, tag or commit name")
    return ref


def book_ref(root: Path = ROOT) -> str | None:
    """The ref the book points at: `repository.branch` in book/_config.yml."""
    repo = (yaml.safe_load((root / "book" / "_config.yml").read_text()) or {}).get("repository")
    branch = (repo or {}).get("branch")
    return None if branch is None else str(branch)


def ref_problems(ref: str, version: str) -> list[str]:
    """A release tag other than the package's version would install other code than it says."""
    if TAG_RE.match(ref) and ref != f"v{version}":
        return [
            f"the book's ref {ref} is a release tag, but __version__ in cosas_tutorial/__init__.py "
            f"is {version} (expected v{version}, or a branch such as {BRANCH})"
        ]
    return []


def colab_url(url: str, relpath: str, ref: str = BRANCH) -> str:
    slug = url.removeprefix("https://github.com/")
    return f"{COLAB}/{slug}/blob/{ref}/{relpath}"


def badge(url: str, relpath: str, ref: str = BRANCH) -> str:
    return f"[![Open In Colab]({BADGE_SVG})]({colab_url(url, relpath, ref)})"


def install_source(url: str, ref: str = BRANCH) -> str:
    return (
        "# Colab only: install the package at this notebook's own ref; "
        "elsewhere this cell does nothing.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "cosas-tutorial @ git+{url}@{ref}"'
    )


def _badge_ref(target: str, url: str, relpath: str) -> str | None:
    """The ref a badge opens, or None when it opens another notebook or repository."""
    slug = url.removeprefix("https://github.com/")
    pattern = rf"{re.escape(COLAB)}/{re.escape(slug)}/blob/(.+)/{re.escape(relpath)}"
    match = re.fullmatch(pattern, target)
    return match.group(1) if match else None


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell: dict, text: str) -> None:
    """Set a cell's text, stored as the notebook stored it (one string or a list of lines), so
    that a release's diff shows the changed line only."""
    if "source" not in cell or _source(cell) != text:
        as_one = isinstance(cell.get("source"), str)
        cell["source"] = text if as_one else text.splitlines(keepends=True)


def _is_install_cell(cell: dict) -> bool:
    src = _source(cell)
    return cell.get("cell_type") == "code" and "pip install" in src and "cosas" in src


def _relpath(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def notebook_problems(path: Path, url: str, ref: str, root: Path = ROOT) -> list[str]:
    """Everything wrong with one notebook's badge and install cell, for the book's ``ref``."""
    rel = _relpath(path, root)
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    problems = []

    first = cells[0] if cells else {}
    if first.get("cell_type") != "markdown":
        problems.append(f"{rel}: the first cell must be markdown with the Colab badge")
    elif not BADGE_RE.search(_source(first)):
        problems.append(f"{rel}: no Colab badge in the first markdown cell")
    badge_refs = []
    for i, cell in enumerate(cells):
        if cell.get("cell_type") != "markdown":
            continue
        for match in BADGE_RE.finditer(_source(cell)):
            opened = _badge_ref(match.group(1), url, rel)
            if opened is None:
                problems.append(
                    f"{rel}: cell {i}: Colab badge points at {match.group(1)}, "
                    f"not at {rel} in {url}"
                )
            elif match.group(0) != badge(url, rel, opened):
                problems.append(f"{rel}: cell {i}: Colab badge differs from the canonical markdown")
            else:
                badge_refs.append(opened)

    installs = [i for i, cell in enumerate(cells) if _is_install_cell(cell)]
    if not installs:
        problems.append(f"{rel}: no install cell (expected as the second cell)")
        return problems
    i = installs[0]
    if i != 1:
        problems.append(f"{rel}: the install cell is cell {i}, expected cell 1 (the second)")
    src = _source(cells[i])
    match = INSTALL_RE.search(src + "\n")
    if not match:
        return problems + [f"{rel}: install cell does not install cosas-tutorial from git"]
    got, installed = match.group(1).removesuffix(".git"), match.group(2)
    if got != url:
        problems.append(f"{rel}: install cell installs from {got}, not {url}")
    if installed is None:
        return problems + [f"{rel}: install cell names no ref (expected @{ref})"]
    if got == url and src.rstrip() != install_source(url, installed):
        problems.append(f"{rel}: install cell differs from the canonical text")

    if any(opened != installed for opened in badge_refs):
        opened = ", ".join(sorted(set(badge_refs)))
        problems.append(
            f"{rel}: the Colab badge opens {opened} but the install cell installs {installed}: "
            "a notebook must install the package at the ref it is opened at"
        )
    elif installed != ref:
        problems.append(f"{rel}: badge and install cell point at {installed}, expected {ref}")
    return problems


def fix_notebook(path: Path, url: str, ref: str = BRANCH, root: Path = ROOT) -> bool:
    """Point the badge and the install cell at ``ref`` in place; other cells stay as they are."""
    rel = _relpath(path, root)
    raw = path.read_text(encoding="utf-8")
    nb = json.loads(raw)
    cells = nb.setdefault("cells", [])
    want = badge(url, rel, ref)
    new_ids = (nb.get("nbformat", 4), nb.get("nbformat_minor", 0)) >= (4, 5)

    def new_cell(kind: str, text: str) -> dict:
        cell = {"cell_type": kind, "metadata": {}, "source": []}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        if new_ids:
            cell["id"] = uuid.uuid4().hex[:8]
        _set_source(cell, text)
        return cell

    for cell in cells:
        if cell.get("cell_type") == "markdown" and BADGE_RE.search(_source(cell)):
            _set_source(cell, BADGE_RE.sub(lambda m: want, _source(cell)))
    if not cells or cells[0].get("cell_type") != "markdown":
        cells.insert(0, new_cell("markdown", want))
    elif not BADGE_RE.search(_source(cells[0])):
        lines = _source(cells[0]).splitlines()
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith("#")), 0)
        lines[at:at] = ["", want, ""] if at else [want, ""]
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
        _set_source(cells[0], text.strip("\n"))

    installs = [i for i, cell in enumerate(cells) if _is_install_cell(cell)]
    if installs:
        cell = cells.pop(installs[0])
        _set_source(cell, install_source(url, ref))
        if cell.get("outputs") or cell.get("execution_count") is not None:
            cell.update(execution_count=None, outputs=[])
    else:
        cell = new_cell("code", install_source(url, ref))
    cells.insert(1, cell)

    if nb == json.loads(raw):
        return False
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")
    return True


_REPO_BLOCK = re.compile(r"^repository:[ \t]*\n((?:[ \t]+.*\n?|[ \t]*\n)*)", re.M)


def _yaml_scalar(value: str) -> str:
    """``value`` as YAML reads it back as the same string (a ref like 1.0 needs quotes)."""
    return value if yaml.safe_load(value) == value else json.dumps(value)


def config_problems(root: Path = ROOT, url: str | None = None, ref: str = BRANCH) -> list[str]:
    url = url or repository_url(root)
    repo = (yaml.safe_load((root / "book" / "_config.yml").read_text()) or {}).get("repository")
    repo = repo or {}
    problems = []
    if str(repo.get("url", "")).rstrip("/") != url:
        problems.append(f"book/_config.yml: repository.url is {repo.get('url')!r}, not {url}")
    if book_ref(root) != ref:
        problems.append(f"book/_config.yml: repository.branch is {repo.get('branch')!r}, not {ref}")
    return problems


def fix_config(root: Path = ROOT, url: str | None = None, ref: str = BRANCH) -> bool:
    """Set repository.url and .branch in book/_config.yml, keeping every other line."""
    url = url or repository_url(root)
    path = root / "book" / "_config.yml"
    text = path.read_text()
    block = _REPO_BLOCK.search(text)
    if not block:
        new = text.rstrip("\n") + f"\n\nrepository:\n  url: {url}\n  path_to_book: book\n"
        new += f"  branch: {_yaml_scalar(ref)}\n"
    else:
        body = block.group(1)
        for key, value in (("url", url), ("branch", _yaml_scalar(ref))):
            line = re.compile(rf"^([ \t]+){key}:.*$", re.M)
            if line.search(body):
                body = line.sub(lambda m, k=key, v=value: f"{m.group(1)}{k}: {v}", body, count=1)
            else:
                body = f"  {key}: {value}\n" + body
        new = text[: block.start(1)] + body + text[block.end(1) :]
    if new == text:
        return False
    path.write_text(new)
    return True


def citation_problems(root: Path = ROOT, url: str | None = None) -> list[str]:
    url = url or repository_url(root)
    path = root / "CITATION.cff"
    if not path.exists():
        return ["CITATION.cff: missing"]
    got = (yaml.safe_load(path.read_text()) or {}).get("repository-code")
    return [] if got == url else [f"CITATION.cff: repository-code is {got!r}, not {url}"]


def fix_citation(root: Path = ROOT, url: str | None = None) -> bool:
    url = url or repository_url(root)
    path = root / "CITATION.cff"
    if not path.exists():
        return False
    text = path.read_text()
    new = re.sub(r"^repository-code:.*$", f'repository-code: "{url}"', text, count=1, flags=re.M)
    if new == text:
        return False
    path.write_text(new)
    return True


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book").glob("*.ipynb"))


def check(root: Path = ROOT, ref: str | None = None) -> list[str]:
    """Every problem in the repository, as one line each; ``ref`` defaults to the book's."""
    url, version = repository_url(root), package_version(root)
    ref = ref or book_ref(root) or BRANCH
    problems = ref_problems(ref, version) + config_problems(root, url, ref)
    problems += citation_problems(root, url)
    for path in notebooks(root):
        problems += notebook_problems(path, url, ref, root)
    return problems


def write(root: Path = ROOT, ref: str = BRANCH) -> list[str]:
    """Point the book at ``ref`` and fix what `check` would report; returns the files changed."""
    url, ref = repository_url(root), git_ref(ref)
    changed = []
    if fix_config(root, url, ref):
        changed.append("book/_config.yml")
    if fix_citation(root, url):
        changed.append("CITATION.cff")
    for path in notebooks(root):
        if fix_notebook(path, url, ref, root):
            changed.append(_relpath(path, root))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report problems, exit 1 if any")
    mode.add_argument("--write", action="store_true", help="rewrite badges, install cells, urls")
    parser.add_argument(
        "--ref",
        type=git_ref,
        help=f"--write: the branch or tag to point at ({BRANCH}); "
        "--check: the one expected (default: repository.branch in book/_config.yml)",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    ref = (args.ref or BRANCH) if args.write else args.ref
    if args.write:
        for name in write(args.root, ref):
            print(f"rewrote {name}")
    problems = check(args.root, ref)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(
            f"{len(problems)} problem(s); `python tools/notebook_links.py --write` points "
            f"everything at {BRANCH} and fixes them (`--write --ref vX.Y.Z`: at a release tag)"
        )
        return 1
    print(f"links OK: {repository_url(args.root)} @ {ref or book_ref(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
