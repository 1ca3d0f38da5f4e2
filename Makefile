# openmaas — the two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test check install lock lint imports typecheck browser bench-gateway bench-datasets bench-training bench-eval clean-devstack

# Browser tests drive Debian's chromium; Playwright never downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
BROWSER_PACKAGES := chromium fonts-wqy-microhei

UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
LOCK := requirements.lock
# uv does not read pip's configuration: hand it the same package sources pip has here
# (pip.conf and PIP_* variables: find-links, extra indexes such as the local CPU torch wheel).
PIP_SOURCES = $(shell $(PYTHON) -m pip config list 2>/dev/null \
	| sed -nE "s/^[^.]*\.(find-links|extra-index-url|index-url)='(.*)'$$/\1 \2/p" \
	| awk '{for (i = 2; i <= NF; i++) printf "--%s %s ", $$1, $$i}')
UV_SOURCES = $(PIP_SOURCES) --index-strategy unsafe-best-match

$(UV):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "uv==$(UV_VERSION)"

# Exactly the lock file (hash-checked), then the project itself without dependencies.
$(STAMP): $(LOCK) pyproject.toml | $(UV)
	@echo "==> installing openmaas into $(VENV) from $(LOCK)"
	$(UV) pip install --quiet --python $(PY) --require-hashes $(UV_SOURCES) -r $(LOCK)
	$(UV) pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Regenerate the lock from pyproject.toml (dependencies + the dev extra; not the gpu extra).
# Pins already in the lock are kept; `make lock UPGRADE=1` moves everything to the newest.
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		$(UV_SOURCES) $(if $(UPGRADE),--upgrade) --quiet \
		--custom-compile-command "make lock" -o $(LOCK)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m portal.devstack run

# The suite runs after lint and type checks: CI runs exactly this.
test: check browser
	$(PY) -m pytest $(PYTEST_ARGS)

check: lint imports typecheck

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The layers (docs/architecture.md) as import contracts, in pyproject.toml.
imports: $(STAMP)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy portal compute datasets training evaluation governance

# Debian's chromium (and a CJK font for readable screenshots), installed once through apt.
browser:
	@dpkg -s $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
		(echo "==> installing $(BROWSER_PACKAGES) for the browser tests" && \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(BROWSER_PACKAGES) >/dev/null)

bench-gateway: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m tests.bench.gateway --output docs/benchmarks.md $(BENCH_ARGS)

# FILE=path validates (and views) that file instead of the generated 1 GiB chat JSONL.
bench-datasets: $(STAMP)
	$(PY) -m tests.bench.datasets --output docs/benchmarks.md $(if $(FILE),--file $(FILE)) $(BENCH_ARGS)

# The runner's training tokens/s against a bare transformers + peft loop (same model, data,
# settings); BENCH_ARGS="--device cuda --dtype bfloat16" on a GPU machine.
bench-training: $(STAMP)
	$(PY) -m tests.bench.training --output docs/benchmarks.md $(BENCH_ARGS)

# Our evaluator against lm-evaluation-harness (its own venv: it needs Hugging Face
# `datasets`) on the same weights and multiple-choice data: acc/acc_norm parity and
# samples/s. DATA=path takes any multiple-choice file in a supported layout.
bench-eval: $(STAMP)
	$(PY) -m tests.bench.eval --output docs/benchmarks.md $(if $(DATA),--data $(DATA)) $(BENCH_ARGS)

clean-devstack:
	rm -rf .devstack
