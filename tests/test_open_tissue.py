"""The open-tissue tier: registry, checksummed download, and the COSAS-layout tree.

Files come from the local mirror (a file:// base URL); nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosas_tutorial.data.cosas import check, discover
from cosas_tutorial.data.open_tissue import (
    DEFAULT_BASE_URL,
    DOMAINS,
    ENV_VAR,
    ChecksumError,
    DownloadError,
    download,
    prepare,
    registry,
    resolve_base_url,
)

PAIRS = {
    "glas-colon": 22,
    "ebhi-polyp": 49,
    "ebhi-classes": 18,
    "ocdc-oral": 10,
    "camelyon-node": 32,
}


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def entry_named(name: str, role: str = "image"):
    (entry,) = [e for e in registry() if e.name == name and e.role == role]
    return entry


def mirror_copy(tmp_path: Path, mirror_url: str, entries) -> Path:
    """A private mirror with just ``entries``, to corrupt or delete."""
    source = Path(urllib.request.url2pathname(mirror_url.removeprefix("file://")))
    target = tmp_path / "mirror"
    for entry in entries:
        (target / entry.raw_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / entry.raw_path, target / entry.raw_path)
    return target


# --- registry ------------------------------------------------------------------------------


def test_registry_matches_the_files_fetched(open_tissue_files):
    """Every registry entry was fetched (from $COSAS_OPEN_TISSUE_URL or the public URLs) with
    the size and sha256 the registry gives, and each image decodes."""
    assert len(open_tissue_files) == len(registry()) == 2 * sum(PAIRS.values())
    for entry, path in open_tissue_files.items():
        assert path.stat().st_size == entry.bytes, entry.name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256, entry.name
        with Image.open(path) as image:
            assert min(image.size) >= 256, entry.name


def test_registry_covers_every_domain_with_pairs():
    entries = registry()
    assert tuple(dict.fromkeys(e.domain for e in entries)) == DOMAINS
    for domain, pairs in PAIRS.items():
        images = {e.stem for e in entries if e.domain == domain and e.role == "image"}
        masks = {e.stem for e in entries if e.domain == domain and e.role == "mask"}
        assert len(images) == pairs and images == masks
    assert all(len(e.sha256) == 64 and e.bytes > 0 and e.licence for e in entries)


def test_base_url_precedence(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_base_url() == DEFAULT_BASE_URL
    monkeypatch.setenv(ENV_VAR, "file:///from/env/")
    assert resolve_base_url() == "file:///from/env"
    assert resolve_base_url("https://example.org/raw") == "https://example.org/raw"
    entry = registry()[0]
    assert entry.url() == f"file:///from/env/{entry.raw_path}"
    monkeypatch.delenv(ENV_VAR)
    assert entry.url().startswith("https://raw.githubusercontent.com/sarah-antillia/")


# --- download ------------------------------------------------------------------------------


def test_download_checks_and_caches(tmp_path, open_tissue_mirror_url, monkeypatch):
    entry = entry_named("10072.jpg")
    path = download(entry, tmp_path / "cache", open_tissue_mirror_url)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert files_under(tmp_path / "cache") == [path]

    def no_network(*args, **kwargs):
        raise AssertionError("a cached file was fetched again")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert download(entry, tmp_path / "cache", open_tissue_mirror_url) == path


def test_download_uses_the_environment_variable(tmp_path, open_tissue_mirror_url, monkeypatch):
    monkeypatch.setenv(ENV_VAR, open_tissue_mirror_url)
    entry = entry_named("10072.jpg", "mask")
    assert download(entry, tmp_path).stat().st_size == entry.bytes
    with pytest.raises(DownloadError, match="nowhere"):  # the argument wins over the variable
        download(entry_named("10073.jpg"), tmp_path, base_url=(tmp_path / "nowhere").as_uri())


def test_cached_file_with_wrong_hash_is_fetched_again(tmp_path, open_tissue_mirror_url):
    entry = entry_named("10072.jpg")
    stale = tmp_path / entry.domain / entry.role / entry.name
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale bytes")
    path = download(entry, tmp_path, open_tissue_mirror_url)
    assert path == stale
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256


def test_checksum_failure_raises_and_leaves_no_file(tmp_path, open_tissue_mirror_url):
    entry = entry_named("10072.jpg")
    mirror = mirror_copy(tmp_path, open_tissue_mirror_url, [entry])
    corrupted = mirror / entry.raw_path
    corrupted.write_bytes(corrupted.read_bytes()[:-10] + b"0123456789")
    cache = tmp_path / "cache"
    stale = cache / entry.domain / entry.role / entry.name
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an older, wrong copy")
    with pytest.raises(ChecksumError) as info:
        download(entry, cache, mirror.as_uri())
    message = str(info.value)
    actual = hashlib.sha256(corrupted.read_bytes()).hexdigest()
    assert f"{mirror.as_uri()}/{entry.raw_path}" in message
    assert entry.sha256 in message and actual in message
    assert info.value.actual == actual
    assert files_under(cache) == []


def test_failure_mid_download_leaves_no_file(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection lost")
            return super().read(100)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Broken(b"x" * 1000))
    with pytest.raises(ConnectionResetError):
        download(entry_named("10072.jpg"), tmp_path, "https://example.org")
    assert files_under(tmp_path) == []


def test_missing_remote_file_names_the_url(tmp_path):
    entry = entry_named("10072.jpg")
    base = (tmp_path / "empty-mirror").as_uri()
    with pytest.raises(DownloadError, match=f"{base}/{entry.raw_path}"):
        download(entry, tmp_path / "cache", base)
    assert files_under(tmp_path) == []


# --- prepare -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_tissue_tree(tmp_path_factory, open_tissue_mirror_url) -> Path:
    return prepare(tmp_path_factory.mktemp("open-tissue"), base_url=open_tissue_mirror_url)


def test_prepare_builds_a_valid_cosas_tree(open_tissue_tree):
    samples = discover(open_tissue_tree)
    assert len(samples) == 131
    counts = {d: sum(s.domain == d for s in samples) for d in DOMAINS}
    assert counts == PAIRS
    assert {(s.split, s.task) for s in samples} == {("train", "task1")}
    report = check(open_tissue_tree)
    assert report.ok, report.format()
    assert report.notes == []


def test_prepare_writes_rgb_images_and_binary_masks(open_tissue_tree):
    for sample in discover(open_tissue_tree):
        assert sample.image.suffix == sample.mask.suffix == ".png"
        with Image.open(sample.image) as image:
            assert image.mode == "RGB"
        with Image.open(sample.mask) as mask:
            assert mask.mode == "L"
            assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_ebhi_classes_keeps_only_adenocarcinoma(open_tissue_tree):
    foreground = {
        s.id: int((np.asarray(Image.open(s.mask)) > 0).mean() * 100)
        for s in discover(open_tissue_tree)
        if s.domain == "ebhi-classes"
    }
    tumour = {k for k, v in foreground.items() if v > 0}
    # The three tiles whose masks carry the adenocarcinoma colour (110, 80, 50).
    assert tumour == {"A-GT2001837-1-400-003", "B-GT2001837-1-400-004", "C-GT2001838-1-400-005"}
    assert all(v > 40 for k, v in foreground.items() if k in tumour)


def test_grey_masks_are_thresholded_not_rounded(open_tissue_tree):
    entry = entry_named("GT2012237-1-400-001.jpg", "mask")
    source = np.asarray(
        Image.open(open_tissue_tree / ".downloads" / "ebhi-polyp/mask" / entry.name)
    )
    written = np.asarray(
        Image.open(
            open_tissue_tree / "COSAS24-TrainingSet/task1/ebhi-polyp/mask" / f"{entry.stem}.png"
        )
    )
    assert np.array_equal(written == 255, source > 127)


def test_prepare_records_sources_and_licences(open_tissue_tree, open_tissue_mirror_url):
    record = json.loads((open_tissue_tree / "open_tissue.json").read_text())
    assert record["base_url"] == open_tissue_mirror_url
    assert "glands vs tumour region" in record["label_note"]
    assert {d: record["domains"][d]["pairs"] for d in DOMAINS} == PAIRS
    assert "no commercial use" in record["domains"]["glas-colon"]["licence"]
    assert "CC BY 4.0" in record["domains"]["ocdc-oral"]["licence"]
    assert "CC0" in record["domains"]["camelyon-node"]["licence"]
    assert len(record["files"]) == 262
    assert all(f["url"].startswith(open_tissue_mirror_url) for f in record["files"])
    assert all(f["fetched"] for f in record["files"])  # a fresh folder: every file fetched


def test_prepare_reuses_the_cache_and_rebuilds_domains(tmp_path, open_tissue_mirror_url):
    wanted = ("ocdc-oral", "ebhi-classes")
    mirror = mirror_copy(
        tmp_path, open_tissue_mirror_url, [e for e in registry() if e.domain in wanted]
    )
    out = prepare(tmp_path / "out", base_url=mirror.as_uri(), domains=wanted)
    assert {s.domain for s in discover(out)} == set(wanted)
    oral = out / "COSAS24-TrainingSet" / "task1" / "ocdc-oral"
    first = {p: p.read_bytes() for p in files_under(oral)}
    shutil.rmtree(mirror)  # from now on, only the cache can serve the files
    prepare(out, base_url=mirror.as_uri(), domains=["ocdc-oral"])
    assert {p: p.read_bytes() for p in files_under(oral)} == first
    record = json.loads((out / "open_tissue.json").read_text())
    assert record["files"] and not any(f["fetched"] for f in record["files"])
    assert {s.domain for s in discover(out)} == {"ocdc-oral"}
    assert check(out).ok


def test_prepare_refuses_a_foreign_folder(tmp_path, open_tissue_mirror_url):
    mine = tmp_path / "thesis.txt"
    mine.write_text("my thesis")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare(tmp_path, base_url=open_tissue_mirror_url, domains=["ocdc-oral"])
    assert files_under(tmp_path) == [mine] and mine.read_text() == "my thesis"
    with pytest.raises(FileExistsError, match="not a folder"):
        prepare(mine, base_url=open_tissue_mirror_url)


def test_prepare_rejects_unknown_domains(tmp_path):
    with pytest.raises(ValueError, match="kidney"):
        prepare(tmp_path / "out", domains=["kidney"])
    assert not (tmp_path / "out").exists()


def test_interrupted_prepare_has_no_record(tmp_path, open_tissue_mirror_url):
    entries = [e for e in registry() if e.domain == "ocdc-oral"]
    mirror = mirror_copy(tmp_path, open_tissue_mirror_url, entries)
    (mirror / entries[-1].raw_path).write_bytes(b"broken")
    with pytest.raises(ChecksumError):
        prepare(tmp_path / "out", base_url=mirror.as_uri(), domains=["ocdc-oral"])
    assert not (tmp_path / "out" / "open_tissue.json").exists()
    # The folder is ours: a second attempt from the real mirror completes it.
    prepare(tmp_path / "out", base_url=open_tissue_mirror_url, domains=["ocdc-oral"])
    assert (tmp_path / "out" / "open_tissue.json").is_file()
    assert len(discover(tmp_path / "out")) == 10
