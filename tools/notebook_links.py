"""Keep every link to the repository derived from one address.

The canonical address is `[project.urls] Repository` in pyproject.toml; the release is
`__version__` in cosas_tutorial/__init__.py. From them follow:
- each notebook's Colab badge (first markdown cell), pointing at that notebook on `main`;
- each notebook's install cell (second cell), installing the release tag `v<version>`;
- `repository.url` and `repository.branch` in book/_config.yml;
- `repository-code` in CITATION.cff.

    python tools/notebook_links.py --check   # list every problem, exit 1 if any
    python tools/notebook_links.py --write   # rewrite only those parts, in place
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
BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
# Any Colab badge: [![...](...colab-badge.svg)](target)
BADGE_RE = re.compile(r"\[!\[[^\]]*\]\([^)]*colab-badge\.svg\)\]\(([^)\s]*)\)")
# The package spec of an install cell: "cosas-tutorial @ git+<url>@<ref>"
INSTALL_RE = re.compile(r"cosas[-_]tutorial\s*@\s*git\+(\S+?)(?:@([^\s\"']+))?[\"'\s]")
TAG_RE = re.compile(r"^v\d+\.\d+\.\d+(?:[-.]?\w+)?$")


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


def colab_url(url: str, relpath: str) -> str:
    slug = url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{slug}/blob/{BRANCH}/{relpath}"


def badge(url: str, relpath: str) -> str:
    return f"[![Open In Colab]({BADGE_SVG})]({colab_url(url, relpath)})"


def install_source(url: str, version: str) -> str:
    return (
        "# Colab only: install this tutorial's package (a pinned release); "
        "elsewhere this cell does nothing.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "cosas-tutorial @ git+{url}@v{version}"'
    )


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell: dict, text: str) -> None:
    if "source" not in cell or _source(cell) != text:
        cell["source"] = text.splitlines(keepends=True)


def _is_install_cell(cell: dict) -> bool:
    src = _source(cell)
    return cell.get("cell_type") == "code" and "pip install" in src and "cosas" in src


def _relpath(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def _install_diagnosis(src: str, url: str, version: str) -> list[str]:
    """Why an install cell is not the canonical one."""
    match = INSTALL_RE.search(src + "\n")
    if not match:
        return ["install cell does not install cosas-tutorial from git"]
    tag, got, ref = f"v{version}", match.group(1).removesuffix(".git"), match.group(2)
    found = []
    if got != url:
        found.append(f"install cell installs from {got}, not {url}")
    if ref is None:
        found.append(f"install cell pins no release (expected @{tag})")
    elif not TAG_RE.match(ref):
        found.append(f"install cell pins '{ref}', a branch or commit, not the release tag {tag}")
    elif ref != tag:
        found.append(f"install cell pins {ref}, expected {tag}")
    return found or ["install cell differs from the canonical text"]


def notebook_problems(path: Path, url: str, version: str, root: Path = ROOT) -> list[str]:
    """Everything wrong with one notebook's badge and install cell."""
    rel = _relpath(path, root)
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    problems = []
    want = colab_url(url, rel)

    first = cells[0] if cells else {}
    if first.get("cell_type") != "markdown":
        problems.append(f"{rel}: the first cell must be markdown with the Colab badge")
    elif not BADGE_RE.search(_source(first)):
        problems.append(f"{rel}: no Colab badge in the first markdown cell")
    for i, cell in enumerate(cells):
        if cell.get("cell_type") != "markdown":
            continue
        for match in BADGE_RE.finditer(_source(cell)):
            if match.group(1) != want:
                problems.append(
                    f"{rel}: cell {i}: Colab badge points at {match.group(1)}, not {want}"
                )
            elif match.group(0) != badge(url, rel):
                problems.append(f"{rel}: cell {i}: Colab badge differs from the canonical markdown")

    installs = [i for i, cell in enumerate(cells) if _is_install_cell(cell)]
    if not installs:
        problems.append(f"{rel}: no install cell (expected as the second cell)")
        return problems
    i = installs[0]
    if i != 1:
        problems.append(f"{rel}: the install cell is cell {i}, expected cell 1 (the second)")
    src = _source(cells[i])
    if src.rstrip() != install_source(url, version):
        problems += [f"{rel}: {p}" for p in _install_diagnosis(src, url, version)]
    return problems


def fix_notebook(path: Path, url: str, version: str, root: Path = ROOT) -> bool:
    """Rewrite the badge and the install cell in place; other cells stay as they are."""
    rel = _relpath(path, root)
    raw = path.read_text(encoding="utf-8")
    nb = json.loads(raw)
    cells = nb.setdefault("cells", [])
    want = badge(url, rel)
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
        _set_source(cell, install_source(url, version))
        if cell.get("outputs") or cell.get("execution_count") is not None:
            cell.update(execution_count=None, outputs=[])
    else:
        cell = new_cell("code", install_source(url, version))
    cells.insert(1, cell)

    if nb == json.loads(raw):
        return False
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")
    return True


_REPO_BLOCK = re.compile(r"^repository:[ \t]*\n((?:[ \t]+.*\n?|[ \t]*\n)*)", re.M)


def config_problems(root: Path = ROOT, url: str | None = None) -> list[str]:
    url = url or repository_url(root)
    repo = (yaml.safe_load((root / "book" / "_config.yml").read_text()) or {}).get("repository")
    repo = repo or {}
    problems = []
    if str(repo.get("url", "")).rstrip("/") != url:
        problems.append(f"book/_config.yml: repository.url is {repo.get('url')!r}, not {url}")
    if repo.get("branch") != BRANCH:
        problems.append(f"book/_config.yml: repository.branch is {repo.get('branch')!r}, not main")
    return problems


def fix_config(root: Path = ROOT, url: str | None = None) -> bool:
    """Set repository.url and .branch in book/_config.yml, keeping every other line."""
    url = url or repository_url(root)
    path = root / "book" / "_config.yml"
    text = path.read_text()
    block = _REPO_BLOCK.search(text)
    if not block:
        new = text.rstrip("\n") + f"\n\nrepository:\n  url: {url}\n  path_to_book: book\n"
        new += f"  branch: {BRANCH}\n"
    else:
        body = block.group(1)
        for key, value in (("url", url), ("branch", BRANCH)):
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


def check(root: Path = ROOT) -> list[str]:
    """Every problem in the repository, as one line each."""
    url, version = repository_url(root), package_version(root)
    problems = config_problems(root, url) + citation_problems(root, url)
    for path in notebooks(root):
        problems += notebook_problems(path, url, version, root)
    return problems


def write(root: Path = ROOT) -> list[str]:
    """Rewrite what `check` would report; returns the files changed."""
    url, version = repository_url(root), package_version(root)
    changed = []
    if fix_config(root, url):
        changed.append("book/_config.yml")
    if fix_citation(root, url):
        changed.append("CITATION.cff")
    for path in notebooks(root):
        if fix_notebook(path, url, version, root):
            changed.append(_relpath(path, root))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report problems, exit 1 if any")
    mode.add_argument("--write", action="store_true", help="rewrite badges, install cells, urls")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    if args.write:
        for name in write(args.root):
            print(f"rewrote {name}")
    problems = check(args.root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); `python tools/notebook_links.py --write` fixes them")
        return 1
    print(f"links OK: {repository_url(args.root)} @ v{package_version(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
