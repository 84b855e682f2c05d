# The two commands: `make up` (run everything locally) and `make test` (lint, types, tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# `make up` installs only what running needs; `make test` adds the test, lint, type and deploy tools.
CKSUM := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(CKSUM)
STAMP := $(VENV)/.installed-dev-$(CKSUM)

.PHONY: install install-run up test lint typecheck unit integration e2e cluster deploy-check bench docs clean

install: $(STAMP)

install-run: $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	rm -f $(VENV)/.installed-run-*
	touch $@

$(STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-dev-*
	touch $@

up: install-run
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

# The fuzzer alone (it also runs in `make test`): schemathesis against a live gateway, ingest and projector.
.PHONY: fuzz
fuzz: install
	$(PY) -m pytest -q tests/e2e/test_contract_fuzz.py

cluster: install
	$(PY) -m pytest -q tests/cluster

deploy-check: install
	$(PY) -m pytest -q tests/deploy

# The dashboard in Debian's chromium (Playwright drives it); screenshots land in .ci/artifacts/.
.PHONY: browser-test
browser-test: install
	USAGEHUB_BROWSER_TESTS=1 $(PY) -m pytest -q tests/browser

bench: install
	$(PY) -m bench.run --out bench/results.json $(if $(ONLY),--only $(ONLY))

docs: install
	$(VENV)/bin/usagehub schema --markdown > docs/events.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
