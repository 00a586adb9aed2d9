# The two commands a new machine needs:
#   make quickstart   set everything up, then run the shipped pipeline end to end
#   make test         set everything up, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup quickstart test bench clean

$(BIN)/weightsmith: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: a looser requirement could pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

setup: $(BIN)/weightsmith

quickstart: setup
	$(BIN)/weightsmith quickstart

test: setup
	$(BIN)/python -m pytest -q

bench: setup  # speed ratios, not tests (bench/README.md)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache quickstart-workspace
