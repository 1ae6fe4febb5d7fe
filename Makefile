# The two commands of the README, and a few conveniences. `run` needs only Python 3.11+ (and make); `test`
# installs or finds the rest itself (tests/environment.py).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The suite runs in this many processes (each with its own PostgreSQL database and Redis prefix).
PYTEST_WORKERS ?= 2

.PHONY: run test lint hygiene migrate openapi services bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.test: tests/requirements.txt requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r tests/requirements.txt
	touch $@ $(VENV)/.runtime

## Start the API on the embedded defaults (SQLite under ./data, in-process rate limits).
run: $(VENV)/.runtime
	$(BIN)/python -m backend serve

migrate: $(VENV)/.runtime
	$(BIN)/python -m backend migrate

## Regenerate specs/openapi.json from the app (tests/test_openapi.py fails when the two differ).
openapi: $(VENV)/.runtime
	$(BIN)/python -m backend openapi --output specs/openapi.json

## Install test dependencies and what the suite runs (tests/environment.py: Chromium, pgbouncer, npm packages…;
## one line and exit 2 when something cannot be had), lint, type-check, then run the whole suite with coverage
## >= 90% on throwaway PostgreSQL and Redis servers (or on TEST_POSTGRES_URL / TEST_REDIS_URL when given).
test: $(VENV)/.test
	$(BIN)/python -m tests.environment check
	$(BIN)/ruff check backend tests
	$(BIN)/ruff format --check backend tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m tests.environment run -- \
	  $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --cov=backend --cov-report=term --cov-fail-under=90 $(PYTEST_ARGS)

## Benchmark on the machine's PostgreSQL and Redis (needs wrk; see the README's benchmark section).
bench: $(VENV)/.test
	$(BIN)/python -m tests.perf.run

## Repository hygiene: no new secrets (.secrets.baseline), bandit on backend/, pip-audit (skipped offline).
hygiene: $(VENV)/.test
	BIN=$(BIN) .ci/hygiene

lint: $(VENV)/.test
	$(BIN)/ruff check --fix backend tests
	$(BIN)/ruff format backend tests

clean:
	rm -rf $(VENV) .coverage .mypy_cache .ruff_cache
