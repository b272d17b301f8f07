# Every target creates the virtual environment itself (Python 3.11, pip install -e .[dev]).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ownmark demo --out report

# PYTHONDONTWRITEBYTECODE= : cache compiled modules even where the environment turns that off (the test
# run starts many Python processes: xdist workers, bench executors, CLI subprocesses; each would compile
# every ownmark module again)
test: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -m 'not gpu' -n 2 --dist loadfile --no-loadscope-reorder --durations=25

test-fast: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -m 'not gpu and not slow' -n 2 --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	$(BIN)/ownmark bench perf --out BENCHMARKS.md

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) report .pytest_cache
