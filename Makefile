# keybroker: `make run` starts the daemon on the local backend; `make test` runs every test.
# Both install what they need into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 60
FUZZ_TEST_SECONDS ?= 5
SOAK_OPS ?=

.PHONY: run test test-python test-fuzz test-clients fuzz soak check lint format typecheck buflint generate generate-check install test-deps clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,all]' -e clients/python
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/keybroker serve --dev

test-deps: $(STAMP)
	@if [ -x scripts/install-softhsm.sh ]; then scripts/install-softhsm.sh; fi
	@if [ -x scripts/install-postgres.sh ]; then scripts/install-postgres.sh; fi

test: test-python test-fuzz test-clients

test-python: test-deps generate-check
	$(BIN)/pytest $(PYTEST_ARGS)

# every fuzz harness for FUZZ_TEST_SECONDS, one PASS/FAIL line each (docs/reliability.md)
test-fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_TEST_SECONDS)

# the same harnesses for FUZZ_SECONDS each; failing inputs are kept in fuzz/crashes/
fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

# 1,000,000 mixed operations (SOAK_OPS=N for fewer): errors and daemon RSS growth
soak: $(STAMP)
	$(BIN)/python bench/soak.py $(if $(SOAK_OPS),--ops $(SOAK_OPS))

# the Go, Node and Java clients, each against a real dev daemon
test-clients: $(STAMP)
	scripts/test-go.sh
	scripts/test-node.sh
	scripts/test-java.sh

# lint-imports checks the import rules in pyproject.toml (docs/architecture.md); it is fast
# enough to run without leaving a cache directory in the tree
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@test -z "$$(gofmt -l clients/go)" || { gofmt -l clients/go; echo "run gofmt -w clients/go"; exit 1; }
	$(BIN)/lint-imports --no-cache --no-logo

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy broker clients/python/src

buflint: $(STAMP)
	cd proto && ../$(BIN)/buf lint && ../$(BIN)/buf format --diff --exit-code

generate: $(STAMP)
	$(BIN)/python scripts/generate.py

generate-check: $(STAMP)
	$(BIN)/python scripts/generate.py --check

check: lint typecheck buflint test

clean:
	rm -rf $(VENV) .keybroker .pytest_cache .mypy_cache .ruff_cache .hypothesis
