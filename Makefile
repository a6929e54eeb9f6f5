# The whole set-up on a fresh machine is `make demo` or `make test`; both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# the suite's worker processes (pytest-xdist); its tests mostly wait on brokers and daemons
TEST_WORKERS ?= 3

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install
	$(BIN)/pytest -n $(TEST_WORKERS)

demo: install
	$(BIN)/gepa-stream demo

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/optimize.py

clean:
	rm -rf $(VENV) .gepa-stream .pytest_cache
