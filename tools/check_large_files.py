"""Refuse large files in the repository (data, weights and outputs stay out of commits).

    python tools/check_large_files.py [--max-kb 500] [FILE ...]

Without FILEs it checks every file git would commit (tracked, or untracked and not ignored).
Exit 1 if any is larger than the limit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_KB = 500


def candidate_files(root: Path = ROOT) -> list[Path]:
    """Files git would commit; without git, every file outside hidden and build folders."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
        return [root / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skip = {"_build", "runs", "__pycache__", "node_modules"}
        return [
            p
            for p in root.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") or part in skip for part in p.relative_to(root).parts)
        ]


def large_files(paths: list[Path], max_kb: int = MAX_KB) -> list[tuple[Path, int]]:
    """(path, size in KB) of each existing file above `max_kb`."""
    found = []
    for path in paths:
        if path.is_file() and not path.is_symlink():
            kb = path.stat().st_size // 1024
            if kb > max_kb:
                found.append((path, kb))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--max-kb", type=int, default=MAX_KB)
    args = parser.parse_args(argv)
    found = large_files(args.files or candidate_files(), args.max_kb)
    for path, kb in found:
        path = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"{path}: {kb} KB > {args.max_kb} KB; keep it out of git", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
