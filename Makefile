# One venv, built once: torch is installed a single time and reused by every target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: setup run test clean-venv

setup: $(STAMP)

# Re-installs only when pyproject.toml changes; the stamp makes `make setup` idempotent.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The default pipeline: prepare -> train/sample/evaluate over the 8-cell grid -> report,
# inside one MLflow parent run. Resumable: rerunning redoes only what is missing.
run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ddpm-repro repro

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
