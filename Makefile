# Two commands for a newcomer: `make demo` and `make test`. Set-up is idempotent: the venv is
# kept between calls and reinstalled only when pyproject.toml changes (a stamp file).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.workbench-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup browser-deps demo test test-fast bench clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium for tests/test_browser.py (Python playwright comes with the dev extra; a
# browser is never downloaded). Idempotent, and tolerant: without root or apt-get it prints a
# note and the browser test skips with its reason.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "note: could not install Debian's chromium (needs root and apt-get); the browser test will skip."

demo: setup
	$(BIN)/python -m workbench.cli pipeline

test: setup browser-deps
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not slow and not browser"

bench: setup
	$(BIN)/python -m workbench.bench all

clean-runs:
	find papermill_runs -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
