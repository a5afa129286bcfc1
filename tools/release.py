"""Cut a release: `make release VERSION=X.Y.Z`, or `python tools/release.py X.Y.Z`.

On a clean working tree only (so that no uncommitted work can be lost), it makes two commits
and one tag, and pushes nothing:
1. "Release X.Y.Z": `__version__`, CHANGELOG.md's Unreleased entries under `## [X.Y.Z] - date`,
   CITATION.cff's version and date-released, and every notebook's Colab badge and install cell
   at the tag `vX.Y.Z` (tools/notebook_links.py), so that the tag's notebooks run its own code;
   tagged `vX.Y.Z` (annotated);
2. the badges and install cells back at `main`, so that the branch opens and installs itself.
The last line it prints is the push command.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
from pathlib import Path

import notebook_links as links

VERSION_RE = re.compile(r"\d+\.\d+\.\d+")
UNRELEASED_RE = re.compile(r"^## \[Unreleased\][ \t]*\n", re.M)


class ReleaseError(Exception):
    """A reason not to go on, said to the user as it is."""


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if check and run.returncode:
        output = (run.stderr or run.stdout).strip()
        raise ReleaseError(f"`git {' '.join(args)}` failed: {output}")
    return run


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def _changelog(text: str, version: str, date: str) -> str:
    """The Unreleased entries moved under a heading of their own, above an empty Unreleased."""
    heading = UNRELEASED_RE.search(text)
    if not heading:
        raise ReleaseError("CHANGELOG.md has no '## [Unreleased]' section to release")
    rest = text[heading.end() :]
    following = re.search(r"^## ", rest, re.M)
    entries = rest[: following.start()] if following else rest
    if not entries.strip():
        raise ReleaseError("CHANGELOG.md: the Unreleased section is empty; say what changed first")
    return f"{text[: heading.end()]}\n## [{version}] - {date}\n{text[heading.end() :]}"


def _field(text: str, key: str, value: str, name: str) -> str:
    """``text`` with its top-level ``key:`` line set to ``value``."""
    new, found = re.subn(rf"^{key}:.*$", f'{key}: "{value}"', text, count=1, flags=re.M)
    if not found:
        raise ReleaseError(f"{name} has no top-level '{key}:' line")
    return new


def release_edits(root: Path, version: str, date: str) -> dict[Path, str]:
    """The new text of every file the release commit changes besides the notebooks' links,
    computed before anything is written: a refusal leaves the tree as it was."""
    init, changelog, citation = (
        root / "cosas_tutorial" / "__init__.py",
        root / "CHANGELOG.md",
        root / "CITATION.cff",
    )
    text = citation.read_text()
    text = _field(text, "version", version, "CITATION.cff")
    text = _field(text, "date-released", date, "CITATION.cff")
    return {
        init: re.sub(
            r"^__version__\s*=.*$", f'__version__ = "{version}"', init.read_text(), flags=re.M
        ),
        changelog: _changelog(changelog.read_text(), version, date),
        citation: text,
    }


def preflight(root: Path, version: str) -> str:
    """Refuse what cannot be released; return the branch to release from."""
    if not VERSION_RE.fullmatch(version):
        raise ReleaseError(f"bad version {version!r}: give X.Y.Z, e.g. 0.3.0 (without a 'v')")
    current = links.package_version(root)
    if _numbers(version) <= _numbers(current):
        raise ReleaseError(f"version {version} is not above the current version {current}")
    dirty = git(root, "status", "--porcelain").stdout.rstrip()
    if dirty:
        raise ReleaseError(
            "the working tree has uncommitted changes; commit or stash them first "
            f"(nothing was changed):\n{dirty}"
        )
    branch = git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip()
    if not branch:
        raise ReleaseError("HEAD is detached: check out the branch to release from (main)")
    if git(root, "rev-parse", "--quiet", "--verify", f"refs/tags/v{version}", check=False).stdout:
        raise ReleaseError(f"tag v{version} exists already")
    return branch


def release(root: Path, version: str, date: str) -> str:
    """Commit and tag the release, then point the branch back at itself; return the push
    command."""
    branch = preflight(root, version)
    edits = release_edits(root, version, date)
    start = git(root, "rev-parse", "HEAD").stdout.strip()
    tag = f"v{version}"
    try:
        for path, text in edits.items():
            path.write_text(text)
        _commit_links(root, tag, f"Release {version}")
        git(root, "tag", "-a", tag, "-m", f"Release {version}")
        _commit_links(root, links.BRANCH, f"Notebooks open and install {links.BRANCH} again")
    except ReleaseError as err:
        raise ReleaseError(
            f"{err}\nThe release stopped half-way. The tree was clean when it started; "
            f"`git reset --hard {start[:12]}` (and `git tag -d {tag}` if the tag was made) "
            "undoes it."
        ) from err
    return f"git push origin {branch} {tag}"


def _commit_links(root: Path, ref: str, message: str) -> None:
    """Point badges, install cells and the book at ``ref``, check, and commit."""
    links.write(root, ref)
    problems = links.check(root, ref)
    if problems:
        raise ReleaseError("tools/notebook_links.py --check:\n" + "\n".join(problems))
    git(root, "commit", "--all", "--quiet", "-m", message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="the new version, X.Y.Z")
    parser.add_argument("--root", type=Path, default=links.ROOT, help="repository root")
    args = parser.parse_args(argv)
    try:
        push = release(args.root, args.version, datetime.date.today().isoformat())
    except ReleaseError as err:
        print(f"release: {err}", file=sys.stderr)
        return 1
    print(
        f"Tagged v{args.version}: its notebooks open and install v{args.version}, and the "
        f"branch's open and install {links.BRANCH} again. Look at `git log -2 --stat`, "
        f"then push both:\n  {push}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
