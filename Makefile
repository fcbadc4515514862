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

# What exists today (the DVC pipeline comes later): check the bound, then train the digits
# model of params.yaml (~2.5 min on 2 cores, resumable) and write its sample grid.
run: setup
	$(BIN)/ddpm-repro check-bound
	$(BIN)/ddpm-repro prepare --dataset digits --out data/digits
	$(BIN)/ddpm-repro train --params params.yaml --data data/digits/train.npz --checkpoint-dir checkpoints/demo
	$(BIN)/ddpm-repro sample --params params.yaml --checkpoint checkpoints/demo \
		--out samples/demo.npz --grid reports/figures/demo_samples.png

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
