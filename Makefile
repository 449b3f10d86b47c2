# The two quick-start commands: `make run` serves on the embedded defaults, `make test` runs
# the whole test suite. Both create the virtualenv on first use (Python 3.11+ and make only).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint install bench soak clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "publisher needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/publisher serve --host $(HOST) --port $(PORT)

# lint-imports checks the layers of docs/architecture.md ([tool.importlinter] in pyproject.toml)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest

# bench drives the load with wrk (Debian's package, installed by .ci/wrk when missing), on
# bytecode compiled beforehand, as `pip install .` leaves a deployed copy (deploy/Containerfile)
bench: install
	bash .ci/wrk
	$(BIN)/python -m compileall -q publisher plugins bench wsgi.py
	$(BIN)/python bench/run.py

soak: install
	$(BIN)/python bench/soak.py --seconds 60

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
