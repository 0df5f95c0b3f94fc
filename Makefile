# Connector sidecar workspace. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
# Use the machine's Python (>= 3.11); uv must never download one.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell $(PYTHON) -c "import sys; print(sys.executable)")
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --all-packages --locked --no-sync
PYTEST_ARGS ?=
STRESS_RUNS ?= 5

.PHONY: help install run run-sidecar test test-stress lint format typecheck ci bench clean

help: ## Show this list of targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: ## Install uv if missing, then the locked workspace into .venv
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	$(UV) sync --all-packages --locked

run: install ## Start the sidecar and the example echo host on 127.0.0.1 (Ctrl-C stops both)
	$(RUN) python -m examples.run_local

run-sidecar: install ## Start only the sidecar on 127.0.0.1:8787 with the sim connector
	$(RUN) python -m examples.run_local --sidecar-only

test: install ## Run the whole test suite
	$(RUN) pytest $(PYTEST_ARGS)

test-stress: install ## Run the whole suite STRESS_RUNS times (default 5) with the other core kept busy
	$(RUN) python -m tests.stress --runs $(STRESS_RUNS) -- $(PYTEST_ARGS)

lint: install ## Check formatting and lint rules (ruff)
	$(RUN) ruff format --check .
	$(RUN) ruff check .

format: install ## Reformat and autofix what ruff can
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: install ## Type-check every package strictly (mypy)
	$(RUN) mypy contracts/src sidecar/src sdk/src tests bench examples

ci: lint typecheck test ## What CI runs: lint, types, tests

bench: install ## Run the benchmarks under bench/ (prints ratios against a baseline)
	$(RUN) python -m bench

clean: ## Remove the virtualenv, caches and local data
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache var
