"""The open-tissue tier: small public H&E samples with masks, arranged in the COSAS layout.

131 image/mask pairs from four public datasets (EBHI-Seg gives two of the five domains; three
organs: colorectum, oral cavity, lymph node) are downloaded by checksum from public URLs and
arranged as task-1 domains::

    <out>/COSAS24-TrainingSet/task1/<domain>/{image,mask}/<id>.png

The domains differ in organ, lab and scanner (real cross-organ shift) and also in what the mask
means: glas-colon and ebhi-polyp masks outline glands, ocdc-oral and camelyon-node masks outline
tumour regions, ebhi-classes masks mark adenocarcinoma glands. Say so wherever results across
domains are compared. ``<out>/open_tissue.json`` records what came from where under which licence.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import __version__
from .cosas import read_image
from .layout import IMAGE_DIR, MASK_DIR, TRAIN_DIR

DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
ENV_VAR = "COSAS_OPEN_TISSUE_URL"
DOMAINS = ("glas-colon", "ebhi-polyp", "ebhi-classes", "ocdc-oral", "camelyon-node")
TASK = "task1"  # three organs and four datasets: cross-organ and cross-lab shift

REGISTRY_FILE = Path(__file__).with_name("open_tissue_registry.tsv")
DOWNLOAD_DIR = ".downloads"
MARKER_FILE = ".cosas-open-tissue"  # written first: this folder is ours to (re)write
RECORD_FILE = "open_tissue.json"  # written last: the tree is complete

# What each source shows and what its mask marks.
DOMAIN_INFO = {
    "glas-colon": {"organ": "colon (benign and adenocarcinoma)", "mask": "glands"},
    "ebhi-polyp": {"organ": "colorectal biopsy, polyp class", "mask": "glands"},
    "ebhi-classes": {
        "organ": "colorectal biopsy, six classes (3 tiles each)",
        "mask": "adenocarcinoma (the other five classes are background)",
    },
    "ocdc-oral": {"organ": "oral cavity, squamous cell carcinoma", "mask": "tumour region"},
    "camelyon-node": {
        "organ": "lymph node, breast cancer metastasis",
        "mask": "tumour region (coarse)",
    },
}
LABEL_NOTE = (
    "Mask meaning differs between domains (glands vs tumour region): a Dice difference across "
    "domains mixes domain shift with label shift."
)

# EBHI-Seg class-coloured masks: black background, one colour per class; adenocarcinoma is
# (110, 80, 50). The other class colours lie more than 90 away; JPEG-like edge pixels of the
# adenocarcinoma colour lie within 40.
EBHI_ADENOCARCINOMA_RGB = (110, 80, 50)
EBHI_COLOUR_TOLERANCE = 40.0
GREY_THRESHOLD = 127  # grey or RGB JPEG masks: foreground is > 127 after reducing to one channel

CHUNK_BYTES = 1 << 16
TIMEOUT_S = 60


class DownloadError(OSError):
    """A file could not be fetched."""


class ChecksumError(DownloadError):
    """Fetched bytes do not match the registry's sha256."""

    def __init__(self, url: str, expected: str, actual: str):
        self.url, self.expected, self.actual = url, expected, actual
        super().__init__(f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}")


@dataclass(frozen=True)
class Entry:
    """One file of the registry (the columns of ``open_tissue_registry.tsv``)."""

    domain: str
    role: str  # "image" | "mask"
    name: str
    sha256: str
    bytes: int
    raw_path: str  # path under the base URL: <owner>/<repo>/<commit>/<path>
    dataset: str
    licence: str

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def url(self, base_url: str | None = None) -> str:
        return f"{resolve_base_url(base_url)}/{self.raw_path}"


def resolve_base_url(base_url: str | None = None) -> str:
    """The base URL to fetch from: the argument, else $COSAS_OPEN_TISSUE_URL, else GitHub."""
    return (base_url or os.environ.get(ENV_VAR) or DEFAULT_BASE_URL).rstrip("/")


def registry() -> list[Entry]:
    """Every file of the open-tissue tier, with its checksum, source and licence."""
    with REGISTRY_FILE.open(newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [Entry(**{**row, "bytes": int(row["bytes"])}) for row in rows]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def cached(entry: Entry, cache_dir: Path | str) -> Path | None:
    """The cached copy of ``entry`` in ``cache_dir`` if it is there with the right sha256."""
    target = Path(cache_dir) / entry.domain / entry.role / entry.name
    return target if target.is_file() and _sha256(target) == entry.sha256 else None


# Written by hand rather than with pooch (not a dependency): all we need is fetch, hash, and an
# atomic rename, and urllib reads https:// and file:// (the local mirror in tests) alike.
def download(entry: Entry, cache_dir: Path | str, base_url: str | None = None) -> Path:
    """Fetch one registry file into ``cache_dir`` and return its path.

    A cached file with the right sha256 is not fetched again. The bytes go to a temporary file
    in the same folder and are renamed into place only once their sha256 matches; on a mismatch
    :class:`ChecksumError` is raised and neither the temporary nor the final file remains.
    """
    url = entry.url(base_url)
    target = cached(entry, cache_dir)
    if target is not None:
        return target
    target = Path(cache_dir) / entry.domain / entry.role / entry.name
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{entry.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as sink, urllib.request.urlopen(url, timeout=TIMEOUT_S) as src:
            while chunk := src.read(CHUNK_BYTES):
                digest.update(chunk)
                sink.write(chunk)
        if digest.hexdigest() != entry.sha256:
            target.unlink(missing_ok=True)
            raise ChecksumError(url, entry.sha256, digest.hexdigest())
        os.replace(partial, target)
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot fetch {url}: {exc.reason}") from exc
    finally:
        Path(partial).unlink(missing_ok=True)  # gone already after a successful rename
    return target


def _binary_mask(path: Path, domain: str) -> np.ndarray:
    """A downloaded mask as HxW uint8 in {0, 255}."""
    image = Image.open(path)
    if domain == "ebhi-classes":
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
        distance = np.linalg.norm(rgb - np.float32(EBHI_ADENOCARCINOMA_RGB), axis=-1)
        foreground = distance < EBHI_COLOUR_TOLERANCE
    else:
        foreground = np.asarray(image.convert("L")) > GREY_THRESHOLD
    return np.where(foreground, 255, 0).astype(np.uint8)


def _claim(out: Path) -> None:
    """Refuse a folder that holds anything but an earlier open-tissue tree; mark it as ours."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER_FILE).is_file():
        raise FileExistsError(
            f"{out}: folder is not empty and is not an open-tissue tree made by prepare(); "
            "choose a new or empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).write_text("open-tissue tree written by cosas_tutorial; safe to delete\n")


def _select(domains) -> list[str]:
    wanted = list(DOMAINS if domains is None else domains)
    unknown = sorted(set(wanted) - set(DOMAINS))
    if unknown:
        raise ValueError(f"unknown open-tissue domain(s) {unknown}; choose from {DOMAINS}")
    return [d for d in DOMAINS if d in wanted]


def _record(base_url: str, entries: list[Entry], from_cache: set[Entry]) -> dict:
    domains = {}
    for entry in entries:
        info = domains.setdefault(
            entry.domain,
            {**DOMAIN_INFO[entry.domain], "dataset": entry.dataset, "licence": entry.licence},
        )
        info["pairs"] = info.get("pairs", 0) + (entry.role == "image")
    return {
        "tier": "open-tissue",
        "made_by": f"cosas_tutorial {__version__} (cosas_tutorial.data.open_tissue.prepare)",
        "layout": f"{TRAIN_DIR}/{TASK}/<domain>/{{{IMAGE_DIR},{MASK_DIR}}}/<id>.png",
        "base_url": base_url,
        "label_note": LABEL_NOTE,
        "domains": domains,
        "files": [
            {**asdict(e), "url": e.url(base_url), "fetched": e not in from_cache} for e in entries
        ],
    }


def prepare(
    out: Path | str,
    base_url: str | None = None,
    domains=None,
    progress: bool = False,
) -> Path:
    """Download the open-tissue files (checksummed) and arrange them as a COSAS task-1 tree.

    Images become RGB PNG, masks one-channel PNG in {0, 255}. Downloads are cached under
    ``out/.downloads``. ``out`` must be new, empty, or an earlier open-tissue tree; the domain
    folders in it are rebuilt so that the tree holds exactly ``domains``. Remember that the mask
    meaning differs between domains (glands vs tumour region). Returns ``out``.
    """
    out = Path(out)
    wanted = _select(domains)
    _claim(out)
    (out / RECORD_FILE).unlink(missing_ok=True)  # incomplete until written again at the end
    base = resolve_base_url(base_url)
    entries = [e for e in registry() if e.domain in wanted]
    files, from_cache = {}, set()
    for number, entry in enumerate(entries, 1):
        files[entry] = cached(entry, out / DOWNLOAD_DIR)
        if files[entry] is None:
            files[entry] = download(entry, out / DOWNLOAD_DIR, base)
        else:
            from_cache.add(entry)
        if progress:
            print(f"[{number}/{len(entries)}] {entry.domain}/{entry.name}", file=sys.stderr)
    task_dir = out / TRAIN_DIR / TASK
    for domain in DOMAINS:
        shutil.rmtree(task_dir / domain, ignore_errors=True)
    for entry, source in files.items():
        folder = task_dir / entry.domain / (IMAGE_DIR if entry.role == "image" else MASK_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        if entry.role == "image":
            pixels = read_image(source)
        else:
            pixels = _binary_mask(source, entry.domain)
        # Level 1 compresses nearly as well as the default level 6 on these tiles, twice as fast.
        Image.fromarray(pixels).save(folder / f"{entry.stem}.png", compress_level=1)
    record = _record(base, entries, from_cache)
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out
