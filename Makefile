# The two commands: `make up` (run everything locally) and `make test` (lint, types, tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install up test lint typecheck unit integration e2e cluster deploy-check bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

up: install
	$(VENV)/bin/usagehub up

lint: install
	$(VENV)/bin/ruff check shared services tests bench
	$(VENV)/bin/ruff format --check shared services tests bench

typecheck: install
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest -q

unit: install
	$(PY) -m pytest -q tests/unit

integration: install
	$(PY) -m pytest -q tests/integration

e2e: install
	$(PY) -m pytest -q tests/e2e

cluster: install
	$(PY) -m pytest -q tests/cluster

deploy-check: install
	$(PY) -m pytest -q tests/deploy

bench: install
	$(PY) -m bench.run --out bench/results.json $(if $(ONLY),--only $(ONLY))

docs: install
	$(VENV)/bin/usagehub schema --markdown > docs/events.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
