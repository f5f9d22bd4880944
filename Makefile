# Picsearch — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install Picsearch with its dev tools

run: install ## Run the whole service (Redis, Milvus Lite, worker, API + web page) on 127.0.0.1
	$(VENV)/bin/picsearch up

system-deps: ## Install Chromium and docker-compose for the browser and deploy tests (root, Debian)
	@if [ ! -x /usr/bin/chromium ] || ! command -v docker-compose >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium docker-compose >/dev/null; \
		else \
			echo "note: install the Debian packages chromium and docker-compose to run every test"; \
		fi; \
	fi

lint: install ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check app workers tests
	$(VENV)/bin/ruff format --check app workers tests
	$(VENV)/bin/mypy app workers tests

test: install system-deps lint ## Install everything and run the whole test suite
	$(PY) -m pytest

bench: install ## Ingest and search benchmark (see docs/benchmarks.md); pass ARGS="--images DIR"
	$(VENV)/bin/picsearch bench $(ARGS)

clean: ## Remove caches (keeps .venv and data/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache test-artifacts

.PHONY: help install run system-deps lint test bench clean
