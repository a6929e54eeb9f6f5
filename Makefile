# The whole set-up on a fresh machine is `make demo` or `make test`; both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# the suite's worker processes (pytest-xdist); its tests mostly wait on brokers and daemons
TEST_WORKERS ?= 3

.PHONY: install browser lint test demo bench clean deploy-test

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian's chromium for the ops page's browser test (root, as in CI; a no-op once installed).
# Playwright drives this binary: `playwright install` (a browser download) is never needed.
browser:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: /usr/bin/chromium"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && echo "chromium installed"; \
	else echo "chromium missing: run 'sudo apt-get install chromium' (the browser test is skipped without it)"; fi

# the style gates: formatting, lint, static types (configured in pyproject.toml)
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

demo: install
	$(BIN)/gepa-stream demo

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/optimize.py
	$(BIN)/python bench/guard.py
	$(BIN)/python bench/otel.py

clean:
	rm -rf $(VENV) .gepa-stream .pytest_cache

# The Dockerfile and docker-compose.yml run for real in podman (root; installs what it needs from
# Debian; about 6 minutes from nothing): see README "Running the stack with podman (no Docker engine)".
deploy-test: install
	deploy/podman/test.sh
