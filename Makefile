# openmaas — the two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test check install lint typecheck bench-gateway clean-devstack

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> installing openmaas into $(VENV) (first time takes a few minutes)"
	$(PIP) install --quiet --upgrade pip
	# The CPU build of torch first, so the dependency below installs nothing bigger.
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m portal.devstack run

# The suite runs after lint and type checks: CI runs exactly this.
test: check
	$(PY) -m pytest $(PYTEST_ARGS)

check: lint typecheck

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy portal compute

bench-gateway: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m tests.bench.gateway --output docs/benchmarks.md $(BENCH_ARGS)

clean-devstack:
	rm -rf .devstack
