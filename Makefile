# One command per task. `make demo` and `make test` are the README's two commands; each sets everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint types unit kafka-up kafka-down bench fmt contracts clean

$(STAMP): pyproject.toml constraints.txt setup.py src/banditroute/_native.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)
	@echo "installed in $(VENV): 'source $(BIN)/activate' puts the banditroute command on PATH (or run $(BIN)/banditroute)"

setup: $(STAMP)

demo: setup
	$(BIN)/banditroute demo

test: lint types
	@(command -v chromium && command -v jq) >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium jq >/dev/null)
	$(BIN)/banditroute contracts --check
	$(BIN)/python -m pytest -q -n 2

lint: setup
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports

types: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q -m "not kafka and not slow and not reliability and not browser"

fmt: setup
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

kafka-up: setup
	$(BIN)/banditroute kafka up

kafka-down: setup
	$(BIN)/banditroute kafka down

bench: setup
	$(BIN)/banditroute bench all

contracts: setup
	$(BIN)/banditroute contracts --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
