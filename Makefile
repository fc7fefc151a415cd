# The two set-up commands of README.md: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.yaml

.PHONY: run test lint bench install install-test test-deps clean deb

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

## Install ccwatch in .venv and run the daemon on the shipped config.yaml.
run: install
	$(BIN)/ccwatch -c $(CONFIG) run

## Install ccwatch with its test tools and run the whole suite (+ ruff, mypy, import-linter).
test: install-test test-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest || [ $$? -eq 5 ]  # 5 = no tests collected, not a failure

## System tools the tests talk to (promtool, Alertmanager, Chromium, systemd-analyze,
## the Debian packaging tools, Request Tracker 5).
## Best effort: tests that need a missing tool are skipped with the reason.
test-deps:
	@scripts/install-test-deps.sh

## The Debian package (dh-virtualenv), built in a temporary copy of the tree, into dist/;
## then lintian. Needs debhelper, dh-virtualenv, python3-venv, lintian (see README).
deb:
	packaging/build-deb dist

bench: install-test
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) var build dist .pytest_cache .mypy_cache .ruff_cache
