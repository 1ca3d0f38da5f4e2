# openmaas — the two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test check install lint typecheck browser bench-gateway clean-devstack

# Browser tests drive Debian's chromium; Playwright never downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
BROWSER_PACKAGES := chromium fonts-wqy-microhei

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
test: check browser
	$(PY) -m pytest $(PYTEST_ARGS)

check: lint typecheck

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy portal compute

# Debian's chromium (and a CJK font for readable screenshots), installed once through apt.
browser:
	@dpkg -s $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
		(echo "==> installing $(BROWSER_PACKAGES) for the browser tests" && \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(BROWSER_PACKAGES) >/dev/null)

bench-gateway: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m tests.bench.gateway --output docs/benchmarks.md

clean-devstack:
	rm -rf .devstack
