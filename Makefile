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

.PHONY: serve test lint typecheck unit install clean web web-check web-unit e2e chromium sandbox model kernels

# The web UI (web/): npm ci from the committed lock file, built into the package (web_dist/).
NPM ?= npm
CHROMIUM ?= /usr/bin/chromium
WEB_DEPS := web/node_modules/.package-lock.json
WEB_BUILD := fireside/web_dist/index.html
WEB_SOURCES := $(shell find web/src web/index.html web/vite.config.ts web/svelte.config.js web/tsconfig.json web/package.json web/scripts -type f 2>/dev/null)

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

# The ggml kernels behind quantized weights (fireside/kernels/): downloaded, built with cmake
# and a C++ compiler into fireside/kernels/_build/ (~3 min on 2 cores; a no-op when up to date).
KERNELS := fireside/kernels/_build/libfireside_ggml.so
$(KERNELS): scripts/build-kernels.sh fireside/kernels/csrc/fireside_ggml.c fireside/kernels/csrc/CMakeLists.txt
	PYTHON=$$([ -x $(BIN)/python ] && echo $(BIN)/python || echo $(PYTHON)) scripts/build-kernels.sh

kernels: $(KERNELS)

install: $(STAMP) $(KERNELS)

$(WEB_DEPS): web/package-lock.json
	@command -v $(NPM) >/dev/null || { echo "npm not found: the web UI needs Node.js 20+ (apt-get install nodejs npm)"; exit 1; }
	# `npm ci`: exactly the committed lock, which lists every platform's optional packages (Vite's
	# Windows-only one included), so an install leaves the checkout as it was.
	cd web && $(NPM) ci --no-audit --no-fund
	touch $(WEB_DEPS)

# Rebuilt when any source under web/ is newer than the build; prints the first-load JS size.
$(WEB_BUILD): $(WEB_DEPS) $(WEB_SOURCES)
	cd web && $(NPM) run build

web: $(WEB_BUILD)

# Debian's chromium for the Playwright tests (Playwright's own browser download is not used).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi

chromium: $(CHROMIUM)

# bubblewrap: the sandbox of the `python` tool and HumanEval (fireside/sandbox/). Without it the
# python tool is off, and says why.
BWRAP ?= /usr/bin/bwrap
$(BWRAP):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq bubblewrap; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq bubblewrap; fi

sandbox: $(BWRAP)

serve: $(STAMP) $(KERNELS) $(WEB_BUILD) $(BWRAP)
	$(BIN)/fireside serve --host $(HOST) --port $(PORT)

# The bundled model, from this machine's own text and code (hours on a 2-core CPU; resumable:
# run it again after an interruption). RECIPE=gpu-small trains the bundled model's own config on
# a GPU (minutes); RECIPE=gpu the ~100M config.
RECIPE ?= small
model: $(STAMP)
	nice $(BIN)/fireside train recipe $(RECIPE) --work runs/recipe-$(RECIPE) --output fireside/assets/fireside-tiny

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(KERNELS) $(OIDC_PROVIDER) $(BWRAP)
	$(BIN)/pytest -n $(TEST_WORKERS) tests

web-check: $(WEB_DEPS)
	cd web && $(NPM) run check

web-unit: $(WEB_DEPS)
	cd web && $(NPM) test

# End-to-end in headless Chromium against a real `fireside serve` with a tiny random model.
e2e: $(STAMP) $(WEB_BUILD) $(CHROMIUM)
	cd web && $(NPM) run e2e

test: lint typecheck unit web-check web-unit e2e

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache fireside/kernels/_build
	rm -rf web/node_modules fireside/web_dist web/test-results
