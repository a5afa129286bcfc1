"""Discover, validate and load a COSAS-layout tree (real COSAS, synthetic or open-tissue tier).

Every tier is written in the layout of :mod:`cosas_tutorial.data.layout`, so one code path reads
them all. :func:`discover` lists the image/mask pairs; :func:`fingerprint` sums them up as a run
records its data; :func:`check` opens every pair and reports everything that would break
training, so that a user learns about a bad file before a run, not hours into it.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .layout import (
    IMAGE_DIR,
    IMAGE_SUFFIXES,
    MASK_DIR,
    TASKS,
    TEST_DIR,
    TRAIN_DIR,
    Sample,
    split_dir,
)

EXPECTED_LAYOUT = f"""expected layout:
  <root>/{TRAIN_DIR}/task1/<domain>/{{{IMAGE_DIR},{MASK_DIR}}}/<id>.png
  <root>/{TRAIN_DIR}/task2/<domain>/{{{IMAGE_DIR},{MASK_DIR}}}/<id>.png
  <root>/{TEST_DIR}/...  (optional, same shape)
where <root> is the folder you pass (or pass {TRAIN_DIR} itself)"""

SPLITS = ("train", "test")


class DataError(ValueError):
    """Data that cannot be used. The message names the path and the problem; raised here, the
    two parts are also kept apart in ``path`` and ``problem``."""

    def __init__(self, message: str, *, path: Path | str | None = None, problem: str = ""):
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.problem = problem or message

    @classmethod
    def at(cls, path: Path | str, problem: str) -> DataError:
        return cls(f"{path}: {problem}", path=path, problem=problem)


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode a file, so that truncated files fail here and not later."""
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError.at(path, f"cannot read {what} ({exc})") from exc
    return image


def _has_transparency(rgba: Image.Image) -> bool:
    alpha_min, _ = rgba.getchannel("A").getextrema()
    return alpha_min < 255


def _load_image(path: Path) -> tuple[np.ndarray, str | None]:
    """The image as HxWx3 uint8 and an optional note about a conversion that was made."""
    image = _open(path, "image")
    note = None
    if image.mode == "P":
        rgba = image.convert("RGBA")
        if not _has_transparency(rgba):
            rgb = rgba.convert("RGB")
            r, g, b = rgb.split()
            if r.tobytes() == g.tobytes() == b.tobytes():
                raise DataError.at(path, "palette image without colour (grey palette); need RGB")
            return np.array(rgb), "palette image converted to RGB"
        image = rgba
    if image.mode in ("RGBA", "PA"):
        rgba = image.convert("RGBA")
        if _has_transparency(rgba):
            raise DataError.at(
                path, "RGBA image with transparency; need RGB (alpha is not all 255)"
            )
        image = rgba.convert("RGB")
        note = "RGBA image with fully opaque alpha; alpha dropped, read as RGB"
    elif image.mode in ("1", "L", "LA", "I", "F") or image.mode.startswith("I;"):
        raise DataError.at(path, f"grayscale image (mode {image.mode}); need an RGB colour image")
    elif image.mode != "RGB":
        image = image.convert("RGB")  # other colour modes: CMYK, YCbCr, LAB, HSV
    return np.array(image, dtype=np.uint8), note  # a writable copy, not a view of PIL data


def read_image(path: Path | str) -> np.ndarray:
    """Read an H&E tile as HxWx3 uint8 RGB.

    An RGBA file whose alpha is fully opaque is accepted with a warning; transparency,
    grayscale, a grey palette and unreadable, corrupt or truncated files raise :class:`DataError`.
    """
    path = Path(path)
    array, note = _load_image(path)
    if note:
        warnings.warn(f"{path}: {note}", stacklevel=2)
    return array


def _describe_values(values: np.ndarray, limit: int = 6) -> str:
    shown = ", ".join(str(v) for v in values[:limit].tolist())
    more = f", … ({len(values)} unique values)" if len(values) > limit else ""
    return f"{{{shown}{more}}}"


def read_mask(path: Path | str) -> np.ndarray:
    """Read a mask as HxW uint8 in {0, 1}.

    Accepts one channel, or several identical channels (real COSAS masks are sometimes RGB), with
    values {0, v} for any v > 0 (0/255 and 0/1 both occur). Anything else raises
    :class:`DataError` naming the file and the values found.
    """
    path = Path(path)
    image = _open(path, "mask")
    array = np.asarray(image)  # palette masks: the palette indices are the labels
    if array.ndim == 3:
        if image.mode in ("RGBA", "LA", "PA"):
            if array[..., -1].min() < 255:
                raise DataError.at(path, "mask with transparency (alpha is not all opaque)")
            array = array[..., :-1]
        channels = np.moveaxis(array, -1, 0)
        if any(not np.array_equal(channels[0], c) for c in channels[1:]):
            raise DataError.at(
                path, f"mask has {len(channels)} channels that differ; need one channel"
            )
        array = channels[0]
    values = np.unique(array)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        raise DataError.at(
            path, f"mask is not binary: values found {_describe_values(values)}; need {{0, v}}"
        )
    return (array > 0).astype(np.uint8)


def _resolve_roots(root: Path, splits: tuple[str, ...]) -> dict[str, Path]:
    """Map each wanted split to the folder that holds its task folders."""
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    if root.name in (TRAIN_DIR, TEST_DIR):
        split = "train" if root.name == TRAIN_DIR else "test"
        return {split: root} if split in splits else {}
    return {split: root / split_dir(split) for split in splits}


def _task_dirs(root: Path, tasks, splits) -> list[tuple[str, str, Path]]:
    """(split, task, folder) for every task folder present; DataError if there is none."""
    root = Path(root)
    tasks = TASKS if tasks is None else tuple(tasks)
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    if not root.is_dir():
        raise DataError.at(root, f"not a folder\n{EXPECTED_LAYOUT}")
    found = [
        (split, task, base / task)
        for split, base in _resolve_roots(root, tuple(splits)).items()
        for task in tasks
        if (base / task).is_dir()
    ]
    if not found:
        nested = sorted(root.glob(f"*/{TRAIN_DIR}")) + sorted(root.glob(f"*/*/{TRAIN_DIR}"))
        hint = f"\n(found {nested[0]}: pass {nested[0].parent})" if nested else ""
        raise DataError.at(
            root, f"no task folder ({', '.join(tasks)}) found\n{EXPECTED_LAYOUT}{hint}"
        )
    return found


def _domain_dirs(task_dir: Path) -> list[Path]:
    return sorted(p for p in task_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class Problem:
    """One finding of :func:`check`: the file or folder, and what is wrong with it."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _files_by_stem(folder: Path) -> dict[str, list[Path]]:
    """Image files of a folder grouped by stem (hidden files and other suffixes are skipped)."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                by_stem[path.stem].append(path)
    return by_stem


def _scan_domain(
    split: str, task: str, domain_dir: Path
) -> tuple[list[Sample], list[Problem], list[Problem]]:
    """Pair the files of one domain folder by stem.

    Returns the pairs, the problems (orphans, missing folders, empty domain) and, apart, the ids
    that several files share (which :func:`discover` cannot resolve).
    """
    problems: list[Problem] = []
    duplicates: list[Problem] = []
    image_dir, mask_dir = domain_dir / IMAGE_DIR, domain_dir / MASK_DIR
    missing = [d for d in (image_dir, mask_dir) if not d.is_dir()]
    for folder in missing:
        problems.append(
            Problem(folder, f"missing folder; each domain needs {IMAGE_DIR}/ and {MASK_DIR}/")
        )
    if missing:
        return [], problems, duplicates
    images, masks = _files_by_stem(image_dir), _files_by_stem(mask_dir)
    for folder, by_stem in ((image_dir, images), (mask_dir, masks)):
        for stem, paths in by_stem.items():
            if len(paths) > 1:
                names = ", ".join(p.name for p in paths)
                duplicates.append(Problem(folder / stem, f"several files share this id: {names}"))
    for stem in sorted(images.keys() - masks.keys()):
        problems.append(
            Problem(images[stem][0], f"missing mask: no {MASK_DIR}/{stem}.* for this image")
        )
    for stem in sorted(masks.keys() - images.keys()):
        problems.append(
            Problem(masks[stem][0], f"missing image: no {IMAGE_DIR}/{stem}.* for this mask")
        )
    samples = [
        Sample(
            image=images[stem][0],
            mask=masks[stem][0],
            task=task,
            domain=domain_dir.name,
            split=split,
        )
        for stem in sorted(images.keys() & masks.keys())
        if len(images[stem]) == len(masks[stem]) == 1
    ]
    if not images and not masks:
        problems.append(Problem(domain_dir, "empty domain: no image/mask pairs"))
    return samples, problems, duplicates


def discover(
    root: Path | str, tasks=None, splits: tuple[str, ...] = ("train", "test")
) -> list[Sample]:
    """All image/mask pairs of a COSAS-layout tree, paired by file stem, in a fixed order.

    ``root`` is the folder holding ``COSAS24-TrainingSet`` (and optionally ``COSAS24-TestSet``),
    or ``COSAS24-TrainingSet`` itself. Files without a partner are skipped (:func:`check` reports
    them); a file id that occurs twice in one folder raises :class:`DataError`.
    """
    samples: list[Sample] = []
    for split, task, task_dir in _task_dirs(Path(root), tasks, splits):
        for domain_dir in _domain_dirs(task_dir):
            found, _, duplicates = _scan_domain(split, task, domain_dir)
            if duplicates:
                raise DataError.at(duplicates[0].path, duplicates[0].message)
            samples.extend(found)
    return samples


@dataclass(frozen=True)
class Fingerprint:
    """The content of a tree as a run records it (see :func:`fingerprint`)."""

    pairs: int
    bytes: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.pairs} pairs, {self.bytes:,} bytes, sha256 {self.sha256[:12]}…"


def fingerprint(root: Path | str) -> Fingerprint:
    """What makes a tree the same data wherever it lies: its pairs, not its path.

    Each pair of :func:`discover` is listed as its key (split/task/domain/id), its image and mask
    paths relative to the domain folder and their sizes in bytes; the digest is sha256 over the
    sorted list. File contents are not read: a stat per file is cheap enough for every resume
    and read-back, where hashing every pixel would read the whole tree (gigabytes for real
    COSAS), and a synthetic tree regenerated with the same parameters has the same bytes, hence
    the same names and sizes. A file rewritten in place with the same size goes unnoticed.
    """
    lines, total = [], 0
    for sample in discover(root):
        fields = [sample.key]
        for path in (sample.image, sample.mask):
            size = path.stat().st_size
            fields += [path.relative_to(path.parents[1]).as_posix(), str(size)]
            total += size
        lines.append("\t".join(fields))
    digest = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    return Fingerprint(pairs=len(lines), bytes=total, sha256=digest)


def domains(samples, task: str, split: str) -> list[str]:
    """Sorted names of the domains present in ``samples`` for one task and split."""
    return sorted({s.domain for s in samples if s.task == task and s.split == split})


@dataclass
class CheckReport:
    """What :func:`check` found: the pairs, the problems (errors) and notes (conversions)."""

    root: Path
    samples: list[Sample]
    problems: list[Problem]
    notes: list[Problem]
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # sample key -> (W, H)

    @property
    def ok(self) -> bool:
        return not self.problems

    def _rows(self) -> list[tuple[str, ...]]:
        groups: dict[tuple[str, str, str], list[Sample]] = defaultdict(list)
        for sample in self.samples:
            groups[(sample.split, sample.task, sample.domain)].append(sample)
        rows = []
        for (split, task, domain), members in sorted(groups.items()):
            sizes = sorted(
                {self.sizes[s.key] for s in members if s.key in self.sizes},
                key=lambda wh: (wh[0] * wh[1], wh),
            )
            shown = [f"{w}×{h}" for w, h in (sizes[:1] + sizes[-1:] if sizes else [])]
            size_text = "–".join(dict.fromkeys(shown)) or "unreadable"
            rows.append((split, task, domain, str(len(members)), size_text))
        return rows

    def format(self) -> str:
        """A summary table per split/task/domain, then every problem and every note."""
        header = ("split", "task", "domain", "pairs", "image sizes (W×H)")
        rows = [header, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"COSAS data check: {self.root}"]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        if self.problems:
            lines += ["", f"problems ({len(self.problems)}):", *(f"  {p}" for p in self.problems)]
        if self.notes:
            lines += ["", f"notes ({len(self.notes)}):", *(f"  {n}" for n in self.notes)]
        verdict = "OK" if self.ok else f"NOT OK: {len(self.problems)} problem(s)"
        lines += ["", f"{verdict}; {len(self.samples)} pairs"]
        return "\n".join(lines)


def _check_pair(sample: Sample, report: CheckReport) -> None:
    """Decode one pair (one at a time, so that memory stays flat) and record what is wrong."""
    image_shape = None
    try:
        image, note = _load_image(sample.image)
        image_shape = image.shape[:2]
        report.sizes[sample.key] = (image_shape[1], image_shape[0])
        if note:
            report.notes.append(Problem(sample.image, note))
        del image
    except DataError as exc:
        report.problems.append(Problem(exc.path, exc.problem))
    try:
        mask_shape = read_mask(sample.mask).shape
    except DataError as exc:
        report.problems.append(Problem(exc.path, exc.problem))
        return
    if image_shape is not None and mask_shape != image_shape:
        (ih, iw), (mh, mw) = image_shape, mask_shape
        report.problems.append(
            Problem(
                sample.mask, f"size mismatch: mask {mw}×{mh}, image {iw}×{ih} ({sample.image.name})"
            )
        )


def check(root: Path | str) -> CheckReport:
    """Validate every pair of a COSAS-layout tree; ``report.ok`` is False if anything is wrong.

    Finds missing images or masks, empty domains and missing ``image/``/``mask/`` folders,
    unreadable or truncated files, image/mask size mismatches, non-binary masks (with the values
    found), masks with differing channels and grayscale or transparent images. Non-square and
    odd-sized tiles are fine. Pairs are decoded one at a time.
    """
    root = Path(root)
    report = CheckReport(root=root, samples=[], problems=[], notes=[])
    try:
        task_dirs = _task_dirs(root, None, SPLITS)
    except DataError as exc:
        report.problems.append(Problem(exc.path, exc.problem))
        return report
    for split, task, task_dir in task_dirs:
        domain_dirs = _domain_dirs(task_dir)
        if not domain_dirs:
            report.problems.append(Problem(task_dir, "empty task folder: no domain folders"))
        for domain_dir in domain_dirs:
            samples, problems, duplicates = _scan_domain(split, task, domain_dir)
            report.samples.extend(samples)
            report.problems.extend(duplicates + problems)
            for sample in samples:
                _check_pair(sample, report)
    return report
