# One-command set-up and work. `make demo` and `make test` create the virtual environment
# on first use; `make book` builds the Jupyter Book.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export MPLBACKEND := Agg

DEMO_DATA := data/synthetic
DEMO_OUT := runs/demo

.PHONY: install demo test clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[book,dev]"
	touch $@

demo: install
	$(BIN)/cosas data synthetic $(DEMO_DATA) --tiles 24 --size 256 --shift 0.5 --seed 0
	rm -rf $(DEMO_OUT)  # the demo's own output folder, rebuilt on every run
	time $(BIN)/cosas experiment --data $(DEMO_DATA) --profile cpu --out $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest -q
