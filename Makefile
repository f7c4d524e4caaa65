# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The demo needs only what a user installs; the tests add their tools on top.
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev
# Minutes of load per configuration of `make soak` (two configurations, one after the other).
SOAK_MINUTES ?= 3

.PHONY: demo test lint types unit bench soak image-test clean

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

# What users run (`pip install .`, no extras), against nginx and a naive aiohttp proxy in the
# same run; a few minutes. Flags: make bench BENCH_ARGS="--rounds 5 --doc docs/performance.md"
bench: $(STAMP)
	$(BIN)/python bench/proxy_bench.py $(BENCH_ARGS)
	$(BIN)/python bench/policy_bench.py

# Not part of `make test`: a bounded soak on loopback (about 2 x SOAK_MINUTES + 1 minute) of
# one worker on SQLite and two over the Redis on 127.0.0.1:6379; see docs/soak.md.
soak: $(DEV)
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

# Not part of `make test` (.ci/run calls it after): builds the Dockerfile with buildah on a
# local Debian base and runs the image in front of a stand-in CRM; see docs/deployment.md.
# Needs root; installs debootstrap and buildah with apt; no virtualenv.
image-test:
	$(PYTHON) -m tests.image.check_image

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
