# Connector sidecar workspace. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
# Use the machine's Python (>= 3.11); uv must never download one.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell $(PYTHON) -c "import sys; print(sys.executable)")
# uv: the one on PATH, else a private copy in .tools/uv-venv that `make install` makes with this
# Python's venv and pip from the package index, so an externally-managed Python (PEP 668:
# Debian, Ubuntu, Homebrew) never needs a `pip install` into itself.
UV_VENV := .tools/uv-venv
UV_ON_PATH := $(shell command -v uv 2>/dev/null)
UV := $(or $(UV_ON_PATH),$(CURDIR)/$(UV_VENV)/bin/uv)
RUN := $(UV) run --all-packages --locked --no-sync
PYTEST_ARGS ?=
STRESS_RUNS ?= 5
DIST_DIR ?= dist

.PHONY: help install browser run run-sidecar test test-stress dist lint format typecheck ci image-test bench clean

help: ## Show this list of targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: $(if $(UV_ON_PATH),,$(UV_VENV)/bin/uv) ## Install uv if missing (into .tools/uv-venv), then the locked workspace into .venv
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	$(UV) sync --all-packages --locked

# A venv of uv's own. Without ensurepip (Debian's python3 lacks python3-venv) the venv is made
# bare and this Python's pip installs into it; without pip either, say what to install.
$(UV_VENV)/bin/uv:
	@echo "uv is not on PATH: installing it into $(UV_VENV) with $(PYTHON)"
	@rm -rf $(UV_VENV)
	@if $(PYTHON) -m venv $(UV_VENV) >/dev/null 2>&1; then \
		$(UV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'uv>=0.5'; \
	elif $(PYTHON) -m pip --version >/dev/null 2>&1 && $(PYTHON) -m venv --without-pip $(UV_VENV); then \
		$(PYTHON) -m pip --python $(UV_VENV)/bin/python install --quiet --disable-pip-version-check 'uv>=0.5'; \
	else \
		rm -rf $(UV_VENV); \
		echo "make install: $(PYTHON) can make neither a venv nor run pip; install python3-venv (Debian, Ubuntu) or uv" >&2; \
		exit 1; \
	fi
	@test -x $@

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

test-stress: install browser ## Run the whole suite STRESS_RUNS times (default 5) with the other core kept busy
	$(RUN) python -m tests.stress --runs $(STRESS_RUNS) -- $(PYTEST_ARGS)

dist: install ## Build the wheels and sdists of contracts, sdk and sidecar into dist/ (DIST_DIR)
	rm -rf $(DIST_DIR)
	$(UV) build --all-packages --out-dir $(DIST_DIR)

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
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache var
