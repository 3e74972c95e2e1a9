# Two commands for a newcomer: `make demo` and `make test`. Set-up is idempotent: the venv is
# kept between calls and reinstalled only when pyproject.toml changes (a stamp file).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.workbench-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast bench clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m workbench.runs pipeline

test: setup
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not slow and not browser"

bench: setup
	$(BIN)/python -m workbench.bench all

clean-runs:
	find papermill_runs -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
