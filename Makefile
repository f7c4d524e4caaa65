# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The demo needs only what a user installs; the tests add their tools on top.
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev

.PHONY: demo test lint types unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEV): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV)

demo: $(STAMP)
	$(BIN)/crm-gateway demo

test: lint types unit

lint: $(DEV)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench

types: $(DEV)
	$(BIN)/mypy

unit: $(DEV)
	$(BIN)/pytest -q

bench: $(DEV)
	$(BIN)/python bench/proxy_bench.py
	$(BIN)/python bench/policy_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
