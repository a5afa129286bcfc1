"""The repository as readers and contributors meet it: one address, notebooks that install
the code they were written for, clean workflows, licences and citation metadata."""

import datetime
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
URL = "https://github.com/cosas-tutorial/cosas-tutorial"


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


links = _load_tool("notebook_links")
release = _load_tool("release")  # imports notebook_links: the module loaded above
large = _load_tool("check_large_files")


def _pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return links.tomllib.load(f)


def _chapter_refs(path):
    """The refs a notebook's Colab badge opens and its install cell installs, read with
    patterns of their own (not the checker's)."""
    cells = json.loads(path.read_text())["cells"]
    first, install = ("".join(cell["source"]) for cell in cells[:2])
    opened = re.findall(
        r"colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/(\S+?)/book/", first
    )
    installed = re.findall(r"cosas-tutorial @ git\+https://\S+?@([^\s\"']+)\"", install)
    return opened, installed


# --- one address, one ref per chapter ------------------------------------------------------


def test_one_canonical_address():
    assert _pyproject()["project"]["urls"]["Repository"] == URL
    assert links.repository_url() == URL
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert config["repository"]["url"] == URL
    assert links.config_problems(ref=links.book_ref()) == []


def test_version_is_exposed_and_released():
    import cosas_tutorial

    version = cosas_tutorial.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert links.package_version() == version
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[?{re.escape(version)}\]? - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert str(citation["version"]) == version


def test_every_chapter_opens_and_installs_one_ref():
    """A chapter run from Colab installs the package at the ref its badge opened, the book's
    ref (`main` on the branch, the tag in a release); a release tag is the package's version."""
    import cosas_tutorial

    ref = links.book_ref()
    if re.fullmatch(r"v\d+\.\d+\.\d+", ref):
        assert ref == f"v{cosas_tutorial.__version__}"
    chapters = links.notebooks()
    assert len(chapters) >= 9
    for path in chapters:
        opened, installed = _chapter_refs(path)
        assert len(opened) == 1 and opened == installed, (
            f"{path.name}: the badge opens {opened}, the install cell installs {installed}"
        )
        assert opened[0] == ref, f"{path.name}: {opened[0]}, but book/_config.yml says {ref}"


def test_install_cell_text_is_the_documented_one():
    assert links.install_source(URL) == (
        "# Colab only: install the package at this notebook's own ref; "
        "elsewhere this cell does nothing.\n"
        "import sys\n\n"
        'if "google.colab" in sys.modules:\n'
        '    %pip install -q "cosas-tutorial @ git+https://github.com/cosas-tutorial/'
        'cosas-tutorial@main"'
    )
    assert links.install_source(URL, "v0.3.0").endswith('cosas-tutorial@v0.3.0"')
    assert links.badge(URL, "book/01_domain_shift.ipynb") == (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        "(https://colab.research.google.com/github/cosas-tutorial/cosas-tutorial/blob/main/"
        "book/01_domain_shift.ipynb)"
    )


# --- the checker itself, on a throwaway repository -----------------------------------------


def _notebook(cells):
    return {
        "cells": [
            {"cell_type": kind, "id": f"c{i}", "metadata": meta, "source": src}
            | ({"execution_count": None, "outputs": []} if kind == "code" else {})
            for i, (kind, src, meta) in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _repo(tmp_path, url=URL, version="0.1.0", ref="main"):
    (tmp_path / "book").mkdir(parents=True)
    (tmp_path / "cosas_tutorial").mkdir()
    (tmp_path / "pyproject.toml").write_text(f'[project.urls]\nRepository = "{url}"\n')
    (tmp_path / "cosas_tutorial" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    config = "title: t\n# keep me\nrepository:\n  url: {}\n  path_to_book: book\n  branch: {}\n"
    (tmp_path / "book" / "_config.yml").write_text(config.format(url, ref))
    (tmp_path / "CITATION.cff").write_text(
        f'cff-version: 1.2.0\nversion: "{version}"\ndate-released: "2026-01-01"\n'
        f'repository-code: "{url}"\n'
    )
    return tmp_path


PARAMS = ("code", 'PROFILE = "ci"', {"tags": ["parameters"]})


def _write_nb(path, first, install):
    cells = [("markdown", first, {}), ("code", install, {}), PARAMS]
    path.write_text(json.dumps(_notebook(cells), indent=1))


def _canonical_nb(root, name, ref="main"):
    rel = f"book/{name}.ipynb"
    _write_nb(
        root / rel, f"# A\n\n{links.badge(URL, rel, ref)}\n\nGoals.", links.install_source(URL, ref)
    )
    return root / rel


def test_checker_accepts_the_canonical_notebook(tmp_path):
    root = _repo(tmp_path)
    nb = _canonical_nb(root, "01_a")
    assert links.check(root) == []
    before = nb.read_text()
    assert links.write(root) == []
    assert nb.read_text() == before


def test_checker_catches_wrong_badge_and_a_release_pin_under_main(tmp_path):
    """Today's mistake: a notebook opened from main that installs an old release."""
    root = _repo(tmp_path)
    nb = root / "book" / "01_a.ipynb"
    wrong_badge = f"# A\n\n{links.badge(URL, 'book/02_b.ipynb')}\n\nGoals."
    _write_nb(nb, wrong_badge, links.install_source(URL, "v0.1.0"))
    other = _canonical_nb(root, "02_b")
    other.write_text(other.read_text().replace("@main", "@v0.1.0"))  # installs an old release

    problems = "\n".join(links.check(root))
    assert "book/01_a.ipynb" in problems and "02_b.ipynb" in problems  # the other notebook
    assert "book/02_b.ipynb: the Colab badge opens main but the install cell installs v0.1.0" in (
        problems
    )
    assert links.main(["--check", "--root", str(root)]) == 1

    assert links.write(root) == ["book/01_a.ipynb", "book/02_b.ipynb"]
    assert links.check(root) == []
    cells = json.loads(nb.read_text())["cells"]
    assert links.badge(URL, "book/01_a.ipynb") in "".join(cells[0]["source"])
    assert "".join(cells[1]["source"]) == links.install_source(URL, "main")
    assert cells[2]["source"] == PARAMS[1] and cells[2]["metadata"] == PARAMS[2]  # untouched


COLAB = "https://colab.research.google.com/github"


@pytest.mark.parametrize(
    "badge_ref, install_ref, book_ref, expected",
    [
        ("main", "v0.1.0", "main", "badge opens main but the install cell installs v0.1.0"),
        ("v0.1.0", "main", "main", "badge opens v0.1.0 but the install cell installs main"),
        ("dev", "dev", "main", "badge and install cell point at dev, expected main"),
        ("main", "main", "dev", "badge and install cell point at main, expected dev"),
        ("v0.0.9", "v0.0.9", "v0.0.9", "ref v0.0.9 is a release tag, but __version__"),
    ],
)
def test_checker_wants_one_ref_per_chapter_and_book(
    tmp_path, badge_ref, install_ref, book_ref, expected
):
    root = _repo(tmp_path, ref=book_ref)
    nb = _canonical_nb(root, "01_a", badge_ref)
    nb.write_text(nb.read_text().replace(f"@{badge_ref}", f"@{install_ref}"))
    assert _chapter_refs(nb) == ([badge_ref], [install_ref])
    assert expected in "\n".join(links.check(root))


def test_checker_catches_a_badge_of_another_repository(tmp_path):
    root = _repo(tmp_path)
    nb = _canonical_nb(root, "01_a")
    nb.write_text(nb.read_text().replace(f"{COLAB}/cosas-tutorial/", f"{COLAB}/other/"))
    assert f"points at {COLAB}/other/cosas-tutorial/blob/main/book/01_a.ipynb" in "\n".join(
        links.check(root)
    )


def test_write_points_the_book_at_a_ref_and_a_tag_must_be_the_version(tmp_path, capsys):
    root = _repo(tmp_path)
    nb = _canonical_nb(root, "01_a")
    assert links.main(["--write", "--ref", "v0.1.0", "--root", str(root)]) == 0
    assert _chapter_refs(nb) == (["v0.1.0"], ["v0.1.0"]) and links.book_ref(root) == "v0.1.0"
    assert "# keep me" in (root / "book" / "_config.yml").read_text()

    (root / "cosas_tutorial" / "__init__.py").write_text('__version__ = "0.2.0"\n')
    assert links.main(["--check", "--root", str(root)]) == 1
    assert "the book's ref v0.1.0 is a release tag, but __version__" in capsys.readouterr().err

    assert links.main(["--write", "--root", str(root)]) == 0  # back to main, the default
    assert _chapter_refs(nb) == (["main"], ["main"]) and links.check(root) == []
    with pytest.raises(SystemExit):
        links.main(["--write", "--ref", "not a ref", "--root", str(root)])


def test_missing_badge_and_install_cell_are_reported_and_added(tmp_path):
    root = _repo(tmp_path)
    nb = root / "book" / "01_a.ipynb"
    nb.write_text(json.dumps(_notebook([("markdown", "# A\n\nGoals.", {}), PARAMS])))
    problems = "\n".join(links.check(root))
    assert "no Colab badge" in problems and "no install cell" in problems
    links.write(root)
    assert links.check(root) == []
    cells = json.loads(nb.read_text())["cells"]
    assert "".join(cells[0]["source"]).startswith("# A\n\n[![Open In Colab]")
    assert [c["source"] for c in cells[2:]] == [PARAMS[1]]


def test_moving_the_repository_is_one_command(tmp_path):
    root = _repo(tmp_path)
    nb = _canonical_nb(root, "01_a")
    new = "https://github.com/elsewhere/cosas"
    (root / "pyproject.toml").write_text(f'[project.urls]\nRepository = "{new}"\n')
    problems = links.check(root)
    assert any("_config.yml" in p for p in problems) and any("CITATION" in p for p in problems)
    assert any("install cell installs from" in p for p in problems)
    assert sorted(links.write(root)) == ["CITATION.cff", "book/01_a.ipynb", "book/_config.yml"]
    assert links.check(root) == []
    config = (root / "book" / "_config.yml").read_text()
    assert f"url: {new}" in config and "# keep me" in config
    assert "elsewhere/cosas@main" in nb.read_text()


# --- releases, in a throwaway git repository -----------------------------------------------


def _git(root, *args):
    run = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.fixture
def release_repo(tmp_path, monkeypatch):
    """A committed repository with two chapters at main, version 0.1.0 and an Unreleased entry;
    git configured here only (no user or system settings, hooks or signing)."""
    people = {"NAME": "Release Test", "EMAIL": "release@example.org"}
    for role in ("AUTHOR", "COMMITTER"):
        for key, value in people.items():
            monkeypatch.setenv(f"GIT_{role}_{key}", value)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    root = _repo(tmp_path / "repo")
    for name in ("01_a", "02_b"):
        _canonical_nb(root, name)
    (root / "CHANGELOG.md").write_text(
        "# Changelog\n\n## [Unreleased]\n\n- A change.\n\n## [0.1.0] - 2026-01-01\n\n- First.\n"
    )
    _git(root, "init", "--quiet", "--initial-branch", "main")
    _git(root, "add", ".")
    _git(root, "commit", "--quiet", "-m", "Start")
    return root


def test_release_tags_notebooks_that_install_the_tag_and_main_goes_on_with_main(
    release_repo, tmp_path, capsys
):
    root = release_repo
    assert release.main(["0.2.0", "--root", str(root)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("git push origin main v0.2.0")
    assert _git(root, "status", "--porcelain") == ""
    assert _git(root, "cat-file", "-t", "v0.2.0") == "tag"  # annotated
    subjects = _git(root, "log", "--format=%s").splitlines()
    assert subjects == ["Notebooks open and install main again", "Release 0.2.0", "Start"]
    assert _git(root, "rev-parse", "v0.2.0^{commit}") == _git(root, "rev-parse", "HEAD~1")
    # back on main, each notebook differs from the tag's in two lines: its badge's, its install
    # cell's (the cells stay stored as they were, here as one string each)
    changed = _git(root, "diff", "--numstat", "v0.2.0", "HEAD", "--", "book/*.ipynb")
    assert changed.splitlines() == [f"2\t2\tbook/{name}.ipynb" for name in ("01_a", "02_b")]

    tagged = tmp_path / "tagged"
    _git(root, "worktree", "add", "--quiet", "--detach", str(tagged), "v0.2.0")
    for tree, ref in ((tagged, "v0.2.0"), (root, "main")):
        assert links.check(tree) == [] and links.book_ref(tree) == ref
        assert links.package_version(tree) == "0.2.0"
        for name in ("01_a", "02_b"):
            assert _chapter_refs(tree / "book" / f"{name}.ipynb") == ([ref], [ref])

    today = datetime.date.today().isoformat()
    assert (tagged / "CHANGELOG.md").read_text() == (
        "# Changelog\n\n## [Unreleased]\n\n"
        f"## [0.2.0] - {today}\n\n- A change.\n\n## [0.1.0] - 2026-01-01\n\n- First.\n"
    )
    citation = yaml.safe_load((tagged / "CITATION.cff").read_text())
    assert citation["version"] == "0.2.0" and citation["date-released"] == today


def _unchanged(root, head):
    assert _git(root, "rev-parse", "HEAD") == head
    assert _git(root, "tag") == ""


def test_release_refuses_a_dirty_tree_and_keeps_the_work(release_repo, capsys):
    root, head = release_repo, _git(release_repo, "rev-parse", "HEAD")
    config = root / "book" / "_config.yml"
    work = config.read_text() + "# work in progress\n"
    config.write_text(work)
    assert release.main(["0.2.0", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "uncommitted changes" in err and "book/_config.yml" in err
    _unchanged(root, head)
    assert config.read_text() == work
    assert _git(root, "status", "--porcelain") == "M book/_config.yml"


@pytest.mark.parametrize(
    "version, message",
    [
        ("0.2", "bad version '0.2'"),
        ("v0.2.0", "bad version 'v0.2.0'"),
        ("", "bad version ''"),
        ("0.1.0", "not above the current version 0.1.0"),
        ("0.0.9", "not above"),
    ],
)
def test_release_refuses_a_bad_version(release_repo, capsys, version, message):
    head = _git(release_repo, "rev-parse", "HEAD")
    assert release.main([version, "--root", str(release_repo)]) == 1
    assert message in capsys.readouterr().err
    _unchanged(release_repo, head)
    assert _git(release_repo, "status", "--porcelain") == ""


def test_release_refuses_an_empty_changelog_section(release_repo, capsys):
    changelog = release_repo / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace("- A change.\n\n", ""))
    _git(release_repo, "commit", "--quiet", "--all", "-m", "Nothing to release")
    head = _git(release_repo, "rev-parse", "HEAD")
    assert release.main(["0.2.0", "--root", str(release_repo)]) == 1
    assert "the Unreleased section is empty" in capsys.readouterr().err
    _unchanged(release_repo, head)
    assert _git(release_repo, "status", "--porcelain") == ""


# --- the real book ---------------------------------------------------------------------------


def _toc_files(node):
    if isinstance(node, dict):
        yield from ([node["file"]] if "file" in node else [])
        yield from ([node["root"]] if "root" in node else [])
        for value in node.values():
            yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def test_every_toc_entry_exists_and_chapters_are_notebooks():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    missing = []
    for name in _toc_files(toc):
        found = [p for p in (ROOT / "book").glob(f"{name}.*") if p.suffix in {".ipynb", ".md"}]
        if not found:
            missing.append(name)
        elif re.match(r"\d\d_", Path(name).name):
            assert found[0].suffix == ".ipynb", f"{name}: numbered chapters are notebooks"
    assert not missing, f"book/_toc.yml names files that do not exist: {missing}"


def test_real_book_badges_install_cells_and_outputs():
    assert links.check() == []
    for path in links.notebooks():
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, (
                    f"{path.name}: committed with outputs; run nbstripout --keep-id on it"
                )


# --- workflows -------------------------------------------------------------------------------


def _actionlint():
    exe = Path(sys.executable).parent / "actionlint"
    exe = str(exe) if exe.exists() else shutil.which("actionlint")
    assert exe, "actionlint is missing: `make install` installs the dev extra"
    return exe


def test_workflows_lint_clean():
    files = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {p.name for p in files} >= {"tests.yml", "book.yml"}
    run = subprocess.run([_actionlint(), *map(str, files)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_workflows_do_what_the_readme_says():
    tests = yaml.safe_load((ROOT / ".github" / "workflows" / "tests.yml").read_text())
    book = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    on_tests, on_book = tests[True], book[True]  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(on_tests)
    assert on_book["push"]["branches"] == ["main"] and "workflow_dispatch" in on_book
    steps = [s.get("run", "") for s in tests["jobs"]["test"]["steps"]]
    assert "make test" in steps
    uses = [s.get("uses", "") for job in book["jobs"].values() for s in job["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    assert "make book" in [s.get("run", "") for s in book["jobs"]["build"]["steps"]]
    assert book["permissions"]["pages"] == "write" and book["permissions"]["id-token"] == "write"
    for u in uses + [s.get("uses", "") for s in tests["jobs"]["test"]["steps"]]:
        assert not u or re.fullmatch(r"[\w-]+/[\w-]+@v\d+", u), f"pin {u} to a major version"


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\n"
        "jobs:\n"
        "  test:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v6\n"
        "        with:\n"
        "          no-such-input: 1\n"
        "      - run: echo ${{ github.no_such_context }}\n"
    )
    run = subprocess.run([_actionlint(), str(bad)], capture_output=True, text=True)
    assert run.returncode == 1
    assert "no-such-input" in run.stdout and "no_such_context" in run.stdout


# --- licences, citation, contributing, lint configuration -----------------------------------


def test_code_licence_is_mit():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert _pyproject()["project"]["license"] in ({"text": "MIT"}, "MIT")


def test_data_readme_states_each_licence():
    text = (ROOT / "data" / "README.md").read_text()
    flat = re.sub(r"[-_\s]+", " ", text.lower())
    for dataset in ("cosas", "glas", "ebhi seg", "ocdc", "camelyon16"):
        assert dataset in flat, f"data/README.md does not name {dataset}"
    for licence in ("cc by nc nd", "research", "cc by 4.0", "cc0"):
        assert licence in flat, f"data/README.md does not state the licence {licence!r}"


def test_citation_names_the_tutorial_paper_and_datasets():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["repository-code"] == URL
    refs = cff["references"]
    seed = [r for r in refs if "Cross-Task Pretraining" in r["title"]]
    assert seed and seed[0]["authors"][0]["family-names"] == "Galdran"
    assert seed[0]["year"] == 2024 and "2410.07124" in seed[0]["doi"]
    text = json.dumps(refs)
    for name in ("GlaS", "EBHI-Seg", "OCDC", "CAMELYON16", "COSAS 2024"):
        assert name in text, f"CITATION.cff references lack {name}"
    first_authors = {r["authors"][0].get("family-names") for r in refs}
    assert {"Sirinukunwattana", "Shi", "dos Santos", "Ehteshami Bejnordi"} <= first_authors


def test_contributing_covers_the_workflow():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    needles = "make install|make test|make lint|_toc.yml|parameters|notebook_links.py --write"
    for needle in needles.split("|") + ["nbstripout", "pre-commit install", "CHANGELOG"]:
        assert needle in text, f"CONTRIBUTING.md does not mention {needle}"


def test_pre_commit_hooks_are_local_and_complete():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    assert all(repo["repo"] == "local" for repo in config["repos"]), "hooks must run offline"
    ids = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "ruff-format", "nbstripout", "large-files", "notebook-links"} <= ids


def test_large_file_guard(tmp_path):
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"x" * 1000)
    big.write_bytes(b"x" * 600 * 1024)
    assert large.large_files([small, big]) == [(big, 600)]
    assert large.main([str(small)]) == 0 and large.main([str(big)]) == 1
