# One venv, built once: torch is installed a single time and reused by every target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
# mlflow honours DO_NOT_TRACK only when it is "true"
export DO_NOT_TRACK := true

.PHONY: setup run test regression repin clean-venv

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

# The CI regression alone (`make test` includes it): one smoke pipeline run in a scratch
# copy, its pinned metrics compared with pipelines/smoke/pins.json; a table of what moved.
regression: setup
	$(BIN)/python -m pytest -q tests/integration/test_regression.py -k matches_the_pins

# After an intended change of results: the smoke run's values become the new pins.
repin: setup
	DDPM_REPRO_REPIN=1 $(BIN)/python -m pytest -q tests/integration/test_regression.py -k matches_the_pins

clean-venv:
	rm -rf $(VENV)
