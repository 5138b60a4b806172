# batchgen: `make run` starts the service, `make test` runs the tests. See README.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What is installed: the service alone (make run), then the test and lint tools (make test).
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp
FLASK := $(BIN)/flask --app app

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# --demo: on a new database, a demo user with credits; a one-time sign-in link at every start.
run: $(RUN_STAMP)
	$(FLASK) init-db
	$(FLASK) serve --demo

# The suite is mostly waiting (consumers, sleeps, subprocesses): three workers overlap it.
TEST_WORKERS ?= 3

# Starts Redis and PostgreSQL if they are installed but stopped, and names what is missing.
test: $(DEV_STAMP)
	bash devtools/test-services.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(DEV_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# The whole suite rewrites BENCHMARKS.md; `make bench BENCH="status queue"` runs some and prints.
# The status benchmark loads the server with wrk, from Debian's packages.
bench: $(BENCH_STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
