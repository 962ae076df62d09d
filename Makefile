# Thin targets; each bootstraps what it needs. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is installed first and pinned to the CPU wheel, so nothing later pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo lab test test-fast lint release grade bench clean

setup: $(STAMP)

CONSTRAINTS := src/labutils/constraints.txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[grader,dev]" -c $(CONSTRAINTS)
	@# bubblewrap sandboxes the kernels that run learners' code while grading; without it grading still
	@# works, with a warning, and less isolation (see grader/README.md).
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq bubblewrap)) \
	  || echo "warning: bubblewrap not installed; grading will run kernels with less isolation"; }
	touch $(STAMP)

demo: setup
	$(BIN)/labutils demo

lab: setup
	$(BIN)/jupyter lab notebooks/

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Everything, the sandboxed grading of both catalogues included. `make test-fast` skips the slow tests.
test: setup lint
	$(BIN)/python -m pytest

test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow"

release: setup
	$(BIN)/labutils release

grade: setup
	$(BIN)/labutils grade $(SUBMISSIONS)

bench: setup
	$(BIN)/python bench/grading_overhead.py

clean:
	rm -rf out .pytest_cache .ruff_cache
