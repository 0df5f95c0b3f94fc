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

.PHONY: help install browser run run-sidecar test lint format typecheck ci image-test bench clean

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

browser: ## Install Debian's chromium for the console's browser test, when missing (needs root)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is not installed: the console's browser test will be skipped (fails when CI=true)"

test: install browser ## Run the whole test suite
	$(RUN) pytest $(PYTEST_ARGS)

lint: install ## Check formatting and lint rules (ruff)
	$(RUN) ruff format --check .
	$(RUN) ruff check .

format: install ## Reformat and autofix what ruff can
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: install ## Type-check every package strictly (mypy)
	$(RUN) mypy contracts/src sidecar/src sdk/src tests bench examples

ci: lint typecheck test ## What CI runs: lint, types, tests

image-test: install ## Build both container images (buildah) and run them under podman
	@$(RUN) python -m tests.images.host_tools; status=$$?; \
	if [ $$status -eq 3 ]; then exit 0; elif [ $$status -ne 0 ]; then exit $$status; fi; \
	CONNECTOR_IMAGE_TEST=1 $(RUN) pytest tests/images -m image --durations=5 $(PYTEST_ARGS)

BENCH_ARGS ?=
bench: install ## Benchmarks: in-process delivery, then the real processes (ratios, medians of 3)
	$(RUN) python -m bench $(BENCH_ARGS)

clean: ## Remove the virtualenv, caches and local data
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache var
