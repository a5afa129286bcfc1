# One-command set-up and work. `make demo` and `make test` create the virtual environment
# on first use; `make book` builds the Jupyter Book.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export MPLBACKEND := Agg

DEMO_DATA := data/synthetic
DEMO_OUT := runs/demo

.PHONY: install demo test clean-demo lint links bench book release lab

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[book,dev]"
	touch $@

demo: install
	$(BIN)/cosas data synthetic $(DEMO_DATA) --tiles 24 --size 256 --shift 0.5 --seed 0
	rm -rf $(DEMO_OUT)  # the demo's own output folder, rebuilt on every run
	time $(BIN)/cosas experiment --data $(DEMO_DATA) --profile cpu --protocol lodo --out $(DEMO_OUT)

# The checks of .pre-commit-config.yaml, without fixing anything (the hooks fix).
NOTEBOOKS := $(wildcard book/*.ipynb)
lint: install links
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(if $(NOTEBOOKS),$(BIN)/nbstripout --keep-id --verify $(NOTEBOOKS))
	$(BIN)/python tools/check_large_files.py
	$(BIN)/actionlint

# Colab badges, install cells and the book's repository address agree with pyproject.toml.
links: install
	$(BIN)/python tools/notebook_links.py --check

test: install lint
	$(BIN)/python -m pytest -q

# Training throughput and prediction time on the current device (CUDA if present, else the CPU
# at small sizes); e.g. `make bench BENCH_ARGS="--compile --json runs/bench.json"`.
BENCH_ARGS ?=
bench: install
	$(BIN)/python benchmarks/train_throughput.py $(BENCH_ARGS)

# The book: every chapter of book/_toc.yml executed with papermill (PROFILE=cpu unless given,
# e.g. `make book PROFILE=ci`) in a copy of book/ under book/_build/source (the committed
# notebooks keep no outputs), the runs in book/_build/runs, then jupyter-book into
# book/_build/html. BOOK_ARGS=--keep-runs reuses the runs of the last build.
PROFILE ?= cpu
BOOK_ARGS ?=
book: install
	$(BIN)/python tools/execute_book.py --profile $(PROFILE) $(BOOK_ARGS)

# JupyterLab on the book's folder, with this environment's kernel (the chapters' relative paths
# resolve from there).
lab: install
	$(BIN)/jupyter lab --notebook-dir=book

# A release from a clean working tree (run `make test` first): `make release VERSION=X.Y.Z`
# commits "Release X.Y.Z" with the notebooks at the tag vX.Y.Z, tags it, points the notebooks
# back at main in a second commit, and prints the push command (tools/release.py).
VERSION ?=
release: install
	$(BIN)/python tools/release.py "$(VERSION)"
