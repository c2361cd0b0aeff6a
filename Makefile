# The README's set-up: `make serve` and `make test` on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# Override for another build, e.g. `make serve TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
# pytest-xdist workers; the suite is built to run in parallel.
TEST_WORKERS ?= 2

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The OpenID Connect provider (npm's oidc-provider) that the login tests start.
OIDC_PROVIDER := tests/oidc/node_modules/.installed

.PHONY: serve test lint typecheck unit install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(OIDC_PROVIDER): tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/fireside serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(OIDC_PROVIDER)
	$(BIN)/pytest -n $(TEST_WORKERS) tests

test: lint typecheck unit

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
