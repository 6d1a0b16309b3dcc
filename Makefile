# The README's two commands: `make run` (main job) and `make test` (test suite).
# Both create .venv and install the package with pinned versions on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,ray,mjx,metaworld]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/meta-rl train experiments/configs/maml_navigation2d_quick.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
