"""The repository as readers and contributors meet it: one address, a pinned release, clean
workflows, licences and citation metadata."""

import importlib.util
import json
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
large = _load_tool("check_large_files")


def _pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return links.tomllib.load(f)


# --- one address, one release -------------------------------------------------------------


def test_one_canonical_address():
    assert _pyproject()["project"]["urls"]["Repository"] == URL
    assert links.repository_url() == URL
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert config["repository"]["url"] == URL
    assert config["repository"]["branch"] == "main"
    assert links.config_problems() == []


def test_version_is_exposed_and_released():
    import cosas_tutorial

    version = cosas_tutorial.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert links.package_version() == version
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[?{re.escape(version)}\]? - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert str(citation["version"]) == version


def test_install_cell_text_is_the_documented_one():
    assert links.install_source(URL, "0.1.0") == (
        "# Colab only: install this tutorial's package (a pinned release); "
        "elsewhere this cell does nothing.\n"
        "import sys\n\n"
        'if "google.colab" in sys.modules:\n'
        '    %pip install -q "cosas-tutorial @ git+https://github.com/cosas-tutorial/'
        'cosas-tutorial@v0.1.0"'
    )
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


def _repo(tmp_path, url=URL, version="0.1.0"):
    (tmp_path / "book").mkdir()
    (tmp_path / "cosas_tutorial").mkdir()
    (tmp_path / "pyproject.toml").write_text(f'[project.urls]\nRepository = "{url}"\n')
    (tmp_path / "cosas_tutorial" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    config = "title: t\n# keep me\nrepository:\n  url: {}\n  path_to_book: book\n  branch: main\n"
    (tmp_path / "book" / "_config.yml").write_text(config.format(url))
    (tmp_path / "CITATION.cff").write_text(f'cff-version: 1.2.0\nrepository-code: "{url}"\n')
    return tmp_path


PARAMS = ("code", 'PROFILE = "ci"', {"tags": ["parameters"]})


def _write_nb(path, first, install):
    cells = [("markdown", first, {}), ("code", install, {}), PARAMS]
    path.write_text(json.dumps(_notebook(cells), indent=1))


def test_checker_accepts_the_canonical_notebook(tmp_path):
    root = _repo(tmp_path)
    nb = root / "book" / "01_a.ipynb"
    title = f"# A\n\n{links.badge(URL, 'book/01_a.ipynb')}\n\nGoals."
    _write_nb(nb, title, links.install_source(URL, "0.1.0"))
    assert links.check(root) == []
    before = nb.read_text()
    assert links.write(root) == []
    assert nb.read_text() == before


def test_checker_catches_wrong_badge_and_branch_pin(tmp_path):
    root = _repo(tmp_path)
    nb = root / "book" / "01_a.ipynb"
    wrong_badge = f"# A\n\n{links.badge(URL, 'book/02_b.ipynb')}\n\nGoals."
    branch_pin = links.install_source(URL, "0.1.0").replace("@v0.1.0", "@main")
    _write_nb(nb, wrong_badge, branch_pin)

    problems = "\n".join(links.check(root))
    assert "book/01_a.ipynb" in problems
    assert "02_b.ipynb" in problems  # the badge points at another notebook
    assert "'main'" in problems and "release tag v0.1.0" in problems
    assert links.main(["--check", "--root", str(root)]) == 1

    assert links.write(root) == ["book/01_a.ipynb"]
    assert links.check(root) == []
    cells = json.loads(nb.read_text())["cells"]
    assert links.badge(URL, "book/01_a.ipynb") in "".join(cells[0]["source"])
    assert "".join(cells[1]["source"]) == links.install_source(URL, "0.1.0")
    assert cells[2]["source"] == PARAMS[1] and cells[2]["metadata"] == PARAMS[2]  # untouched


COLAB = "https://colab.research.google.com/github"


@pytest.mark.parametrize(
    "badge_url, install_ref, expected",
    [
        (f"{COLAB}/other/cosas-tutorial/blob/main/book/01_a.ipynb", "v0.1.0", "other/cosas"),
        (f"{COLAB}/cosas-tutorial/cosas-tutorial/blob/dev/book/01_a.ipynb", "v0.1.0", "/dev/"),
        (None, "v0.0.9", "pins v0.0.9, expected v0.1.0"),
        (None, "3f9c2ab", "pins '3f9c2ab', a branch or commit"),
    ],
)
def test_checker_catches_other_repo_branch_or_tag(tmp_path, badge_url, install_ref, expected):
    root = _repo(tmp_path)
    badge = links.badge(URL, "book/01_a.ipynb")
    if badge_url:
        badge = badge.replace(links.colab_url(URL, "book/01_a.ipynb"), badge_url)
    install = links.install_source(URL, "0.1.0").replace("@v0.1.0", f"@{install_ref}")
    _write_nb(root / "book" / "01_a.ipynb", f"# A\n\n{badge}", install)
    assert expected in "\n".join(links.check(root))


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
    nb = root / "book" / "01_a.ipynb"
    badge = links.badge(URL, "book/01_a.ipynb")
    _write_nb(nb, f"# A\n\n{badge}", links.install_source(URL, "0.1.0"))
    new = "https://github.com/elsewhere/cosas"
    (root / "pyproject.toml").write_text(f'[project.urls]\nRepository = "{new}"\n')
    (root / "cosas_tutorial" / "__init__.py").write_text('__version__ = "0.2.0"\n')
    problems = links.check(root)
    assert any("_config.yml" in p for p in problems) and any("CITATION" in p for p in problems)
    assert any("v0.2.0" in p for p in problems)
    assert sorted(links.write(root)) == ["CITATION.cff", "book/01_a.ipynb", "book/_config.yml"]
    assert links.check(root) == []
    config = (root / "book" / "_config.yml").read_text()
    assert f"url: {new}" in config and "# keep me" in config
    assert "elsewhere/cosas@v0.2.0" in nb.read_text()


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
